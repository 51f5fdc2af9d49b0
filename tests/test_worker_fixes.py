"""Worker processes in awkward places: torch used before the fork, a loader started inside
a daemonic process or inside a worker, a spawned worker that cannot load the pipe, huge
exception messages, and forkserver workers between epochs (issue 10).

Every test has a timeout and cleans up the processes it starts; none asserts a duration.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_faults import (
    SCRIPTS,
    assert_back_to,
    kill_leftovers,
    resources,
    run_until_error,
    wait_gone,
)

import datapipes as dp


def double(x: int) -> int:
    return 2 * x


def torch_threads(x: int) -> int:
    """The intra-op threads torch uses in the process running this map."""
    return torch.get_num_threads()


# -- torch after a fork -----------------------------------------------------------------------
@pytest.mark.timeout(150)
@pytest.mark.parametrize("threads", [0, 2, 4])  # 0: torch's default (one per core)
def test_forked_workers_use_torch_after_a_parallel_op_in_the_main_process(threads: int) -> None:
    # Once: the forked workers' first matmul waited forever for the OpenMP threads of the
    # main process, which a fork does not copy.
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "torch_after_fork.py"), str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the script and its (deadlocked) workers
        proc.communicate(timeout=30)
        raise AssertionError("the loader's forked workers deadlocked on torch") from None
    assert proc.returncode == 0, err
    report = json.loads(out.splitlines()[-1])
    assert report["values"] == [500.0 + x for x in range(8)]
    assert report["threads"] == [1]  # in the workers; the main process keeps its own
    if threads:
        assert report["main threads"] == threads


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_workers_that_use_torch_run_it_on_one_thread(start_method: str) -> None:
    main_threads = torch.get_num_threads()
    pipe = dp.from_sequence(range(8)) | dp.map(torch_threads)
    with pipe.compile(workers=2, start_method=start_method) as loader:
        assert list(loader) == [1] * 8
    assert torch.get_num_threads() == main_threads


# -- a loader inside a daemonic process, or inside a worker -------------------------------------
def run_a_loader(conn: Any, start_method: str) -> None:
    """Run a loader with 2 workers and send back ``(outcome, outputs or error, pids)``."""
    try:
        pipe = dp.from_sequence(range(8)) | dp.map(double)
        with pipe.compile(workers=2, start_method=start_method, timeout=30) as loader:
            got = list(loader)
            conn.send(("ok", got, loader.worker_pids))
    except BaseException as exc:
        conn.send(("error", repr(exc), []))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_loader_runs_inside_a_daemonic_process(start_method: str) -> None:
    # Once: "AssertionError: daemonic processes are not allowed to have children" (fork).
    ctx = mp.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=run_a_loader, args=(theirs, start_method), daemon=True)
    child.start()
    pids: list[int] = []
    try:
        assert ours.poll(45), "no answer from the daemonic process"
        outcome, got, pids = ours.recv()
        assert outcome == "ok", got
        assert got == [2 * x for x in range(8)] and len(pids) == 2
        child.join(30)
        assert child.exitcode == 0
        wait_gone(pids)
    finally:
        if child.is_alive():
            child.kill()
            child.join(30)
        kill_leftovers(pids)
        ours.close()
        theirs.close()


def nested_loader(x: int) -> list[int]:
    """A map that runs a loader of its own, with forked workers."""
    pipe = dp.from_sequence(range(x, x + 3)) | dp.map(double)
    with pipe.compile(workers=2, start_method="fork", timeout=30) as inner:
        return list(inner)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_loader_runs_inside_a_worker(start_method: str) -> None:
    before = resources()
    pipe = dp.from_sequence(range(4)) | dp.map(nested_loader)
    with pipe.compile(workers=2, start_method=start_method, timeout=30) as loader:
        assert list(loader) == [[2 * y for y in range(x, x + 3)] for x in range(4)]
    assert_back_to({k: v for k, v in before.items() if k == "children"})


# -- a spawned worker that cannot load the pipe -------------------------------------------------
def extra(x: int) -> int:  # given a module (and a name) it does not have, below
    return x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["raises", "missing", "attribute"])
def test_a_spawned_worker_that_cannot_load_the_pipe_says_why(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once: "worker 0 (pid ...) exited with code 1", the reason only on the worker's stderr.
    name = f"only_in_the_main_process_{how}"
    module = tmp_path / f"{name}.py"
    guard = (
        f"import os\nif os.getpid() != {os.getpid()}:\n"
        "    raise RuntimeError('this module imports in the main process only')\n"
    )
    module.write_text((guard if how == "raises" else "") + "def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(tmp_path)
    mod = importlib.import_module(name)
    fn = mod.triple
    if how == "missing":
        module.unlink()
    elif how == "attribute":  # found here by its module and name, not in a fresh interpreter
        monkeypatch.setattr(extra, "__module__", name)
        monkeypatch.setattr(mod, "extra", extra, raising=False)
        fn = extra
    want = {
        "raises": "RuntimeError: this module imports in the main process only",
        "missing": f"ModuleNotFoundError: No module named '{name}'",
        "attribute": f"AttributeError: Can't get attribute 'extra' on <module '{name}'",
    }[how]
    pipe = dp.from_sequence(range(6)) | dp.map(fn)
    loader = pipe.compile(workers=2, start_method="spawn")
    pids: list[int] = []
    try:
        got, error = run_until_error(loader)
        assert got == []
        assert isinstance(error, dp.WorkerError), repr(error)
        message = str(error)
        assert "could not load the pipe" in message and want in message, message
        assert "File " in message  # the last lines of the worker's traceback
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", message)]
    finally:
        loader.close()
        kill_leftovers(pids)
        sys.modules.pop(name, None)
    wait_gone(pids)


# -- huge messages ------------------------------------------------------------------------------
HUGE = 50_000_000
#: the longest note or traceback line datapipes adds may be (a few KB of text, cut marked)
NOTE_CHARS = 20_000


def huge_message_at_3(x: int) -> int:
    if x == 3:
        raise ValueError("x" * HUGE)
    return x


class LockedError(Exception):
    """Cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def huge_unpicklable_at_3(x: int) -> int:
    if x == 3:
        error = LockedError("y" * HUGE)
        error.add_note("z" * 1_000_000)
        raise error
    return x


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("backend", "fn"), [("process", huge_message_at_3),
                                             ("thread", huge_message_at_3),
                                             ("process", huge_unpicklable_at_3)])
def test_a_huge_message_is_cut_in_the_notes_not_in_the_exception(backend: str, fn: Any) -> None:
    pipe = dp.from_sequence(range(8)) | dp.map(fn)
    with pipe.compile(workers=2, backend=backend) as loader:
        got, error = run_until_error(loader)
    assert got == [0, 1, 2]
    assert error is not None
    if fn is huge_message_at_3:
        assert type(error) is ValueError and str(error) == "x" * HUGE  # its message, whole
    else:
        assert isinstance(error, dp.StageError) and "y" * 1000 in str(error)
    notes = error.__notes__
    assert any("datapipes: raised in stage map(" in n for n in notes), notes
    assert all(len(n) < NOTE_CHARS for n in notes), [len(n) for n in notes]
    if backend == "process":
        assert any(n.startswith("worker traceback:") and "characters cut" in n for n in notes)


# -- forkserver workers between epochs ---------------------------------------------------------
@pytest.mark.timeout(60)
def test_forkserver_workers_stay_between_epochs() -> None:
    # Once: a forkserver worker took the fork server for its parent's death after 1 s idle
    # (its parent is the server, not the main process) and left: the next epoch failed.
    pipe = dp.from_sequence(range(8)) | dp.map(double)
    with pipe.compile(workers=2, start_method="forkserver", timeout=30) as loader:
        assert list(loader) == [2 * x for x in range(8)]
        pids = loader.worker_pids
        time.sleep(2.5)  # idle, longer than the workers' old check of their parent (1 s)
        assert list(loader) == [2 * x for x in range(8)]
        assert loader.worker_pids == pids
    wait_gone(pids)
