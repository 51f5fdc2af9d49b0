"""The Loader under faults: user exceptions, dead and hung workers, interrupted epochs, Ctrl-C,
a killed main process, skipped elements, leaks over many epochs and loaders, the workers'
global RNGs, and shared memory that cannot be allocated.

What each test checks is what docs/reliability.md promises. Every test has a timeout and
cleans up in ``finally``; none sleeps for a fixed long time: waits poll against generous
deadlines, and the durations measured (how long until a dead worker is reported) are
printed, and asserted only against bounds several times larger than what they should be.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import faulthandler
import gc
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch

import datapipes as dp
from datapipes.executors import transport

BACKENDS = ["process", "thread"]
SCRIPTS = Path(__file__).parent / "fault_scripts"
MAIN_PID = os.getpid()
#: how long a stopped worker, thread or interrupted program may take to be gone
GONE_SECONDS = 5.0
#: the promise is "within 1 s of the death" (about 0.05 s in practice); the bound leaves room
#: for a loaded machine and still fails a loader that waits for its other workers' tasks
DEATH_SECONDS = 3.0


# -- functions the pipes below run (module level: they pickle by reference) ------------------
def add_one(x: int) -> int:
    return x + 1


def fail_on_24(x: int) -> int:
    if x == 24:
        raise ValueError(f"bad element {x}")
    return x


def fail_on_multiple_of_7(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"multiple of 7: {x}")
    return x


def fail_on_multiple_of_5(x: int) -> int:
    if x % 5 == 0:
        raise KeyError(f"multiple of 5: {x}")
    return x


def fail_at_random(x: int, rng: np.random.Generator) -> int:
    """Raises on about a quarter of the elements; which ones follows from (seed, epoch, key)."""
    if rng.random() < 0.25:
        raise ValueError(f"unlucky {x}")
    return x


class UnpicklableError(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class UnrebuildableError(Exception):
    """An exception that pickles but cannot be unpickled: its ``args`` do not fit ``__init__``."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(f"{what} failed: {why}")


def fail_unpicklable(x: int) -> int:
    if x == 24:
        raise UnpicklableError(f"cannot ship {x}")
    return x


def fail_unrebuildable(x: int) -> int:
    if x == 24:
        raise UnrebuildableError(f"element {x}", "no reason")
    return x


def numbers(n: int) -> Callable[[], Iterator[int]]:
    return lambda: iter(range(n))


class DieAt:
    """A map that makes the worker running it die on element ``x == at``, once: it first
    records its pid and the time (``time.monotonic``, the same clock in every process) in
    ``record``, so the test can tell how long the consumer took to notice."""

    def __init__(self, at: int, how: str, record: Path) -> None:
        self.at, self.how, self.record = at, how, record

    def __repr__(self) -> str:
        return f"DieAt({self.at}, {self.how!r})"

    def __call__(self, x: int) -> int:
        if x == self.at and os.getpid() != MAIN_PID and not self.record.exists():
            tmp = self.record.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "time": time.monotonic()}))
            tmp.rename(self.record)
            if self.how == "SIGKILL":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.how == "SIGSEGV":
                faulthandler.disable()  # no "Fatal Python error" dump in the test's output
                ctypes.string_at(0)
            else:
                os._exit(0)
        time.sleep(0.002)
        return x


def slow(x: int) -> int:
    time.sleep(0.01)
    return x


#: what ``hang_at_5`` waits on; set when a test ends, so an abandoned thread can finish
RELEASE = threading.Event()


def hang_at_5(x: int) -> int:
    if x == 5:
        RELEASE.wait(60)
    return x


def image(i: int) -> np.ndarray:
    """64 KiB: travels through shared memory."""
    return np.full((128, 128), i, dtype=np.float32)


def global_draws(x: int) -> tuple[int, float, float, float]:
    """Draws from the global generators that user code often uses without asking."""
    time.sleep(0.003)  # long enough that both workers get work
    return os.getpid(), random.random(), float(np.random.random()), float(torch.rand(()))


class ConsumerError(Exception):
    pass


# -- helpers ----------------------------------------------------------------------------------
def run_until_error(values: Iterable[Any]) -> tuple[list[Any], BaseException | None]:
    """Everything ``values`` yields, and the exception that stopped it (None at the end)."""
    out: list[Any] = []
    try:
        for x in values:
            out.append(x)
    except Exception as exc:
        return out, exc
    return out, None


def alive(proc: psutil.Process) -> bool:
    """Still running: a zombie has exited (only its parent has not reaped it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Iterable[int | psutil.Process], seconds: float = GONE_SECONDS) -> float:
    """Poll until none of the processes runs; the seconds it took. Fails after ``seconds``."""
    procs = []
    for p in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(p if isinstance(p, psutil.Process) else psutil.Process(p))
    start = time.monotonic()
    while True:
        left = [p.pid for p in procs if alive(p)]
        took = time.monotonic() - start
        if not left:
            return took
        if took > seconds:
            raise AssertionError(f"processes {left} still run {seconds} s later")
        time.sleep(0.02)


def kill_leftovers(pids: Iterable[int]) -> None:
    """SIGKILL processes a failed test left running (only the ones it started)."""
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if alive(proc):
                proc.kill()


def children() -> set[int]:
    """This process's descendants, without the helpers multiprocessing keeps for the session."""
    helpers = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
    found = set()
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if not any(h in " ".join(proc.cmdline()) for h in helpers):
                found.add(proc.pid)
    return found


def shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


def shm_held_elsewhere() -> set[str]:
    """The /dev/shm entries that processes other than this one and its descendants have open
    or mapped: other programs on the machine (another test run, a benchmark), not leaks of
    ours, which are held by nobody or by our own processes."""
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    held: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours:
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/maps") as f:
                held.update(line.rsplit("/dev/shm/", 1)[1].split()[0]
                            for line in f if "/dev/shm/" in line)
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if target.startswith("/dev/shm/"):
                        held.add(target[len("/dev/shm/"):])
    return held


def new_shm(before: set[str]) -> set[str]:
    """Entries in /dev/shm that are new since ``before`` and not another program's."""
    new = shm() - before
    return new - shm_held_elsewhere() if new else new


def assert_no_new_shm(before: set[str], seconds: float = GONE_SECONDS) -> None:
    """Poll until no entry of ours is new in /dev/shm since ``before``; fail after
    ``seconds``. (Programs in other containers that share /dev/shm, whose processes this one
    cannot see, make entries that come and go, multiprocessing's ``sem.mp-*``: a leak stays.)"""
    end = time.monotonic() + seconds
    while new := new_shm(before):
        if time.monotonic() > end:
            raise AssertionError(f"new in /dev/shm after {seconds} s: {sorted(new)}")
        time.sleep(0.02)


def resources() -> dict[str, Any]:
    """What a loader may hold in this process: fds, OS threads, children, /dev/shm entries."""
    gc.collect()
    me = psutil.Process()
    return {
        "fds": me.num_fds(),
        "threads": me.num_threads(),
        "datapipes threads": sorted(
            t.name for t in threading.enumerate() if t.name.startswith("datapipes")
        ),
        "children": children(),
        "/dev/shm": shm(),
    }


def assert_back_to(before: dict[str, Any], seconds: float = GONE_SECONDS) -> None:
    """Poll until every count in ``resources()`` equals ``before``; fail after ``seconds``."""
    end = time.monotonic() + seconds
    while True:
        now = {k: v for k, v in resources().items() if k in before}
        if "/dev/shm" in before:
            # other programs may add and remove entries meanwhile: only new ones of ours count
            now["/dev/shm"] = before["/dev/shm"] | new_shm(before["/dev/shm"])
        if now == before:
            return
        if time.monotonic() > end:
            diff = {
                k: f"new {sorted(now[k] - before[k])}, gone {sorted(before[k] - now[k])}"
                if isinstance(now[k], set) else f"{before[k]} -> {now[k]}"
                for k in before if before[k] != now[k]
            }
            raise AssertionError(f"not back to the start after {seconds} s: {diff}")
        time.sleep(0.02)


def reference(pipe: dp.Pipe[Any], epoch: int = 0) -> tuple[list[Any], BaseException | None]:
    return run_until_error(pipe.iter(epoch=epoch))


def outcome(values: Iterable[Any]) -> tuple[list[Any], str | None]:
    """What ``values`` yields and how it ends (the repr of its exception), to compare runs."""
    out, error = run_until_error(values)
    return out, None if error is None else repr(error)


def start_script(
    mode: str, backend: str, start_method: str | None = None
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``fault_scripts/hold_loader.py`` in a session of its own; its JSON report."""
    return start_fault_script("hold_loader.py", mode, backend,
                              *([start_method] if start_method else []))


def start_fault_script(script: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``fault_scripts/<script>`` with ``args`` in a session of its own (so that a
    signal to its group reaches its workers too); the JSON report it prints first."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"the script failed to start: {err}")
    return proc, json.loads(line)


def stop_script(proc: subprocess.Popen[str], info: dict[str, Any] | None) -> None:
    """Kill the script and its workers if they still run (workers first: they hold the
    script's output pipes, which ``communicate`` reads to the end)."""
    if proc.poll() is None:
        proc.kill()
    kill_leftovers((info or {}).get("workers", []))
    proc.communicate(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def _warm_up() -> None:
    """Run one loader of each backend first, so that what a first use creates once for the
    whole session (torch's thread pools, imported modules' files) is not counted as a leak."""
    pipe = dp.from_sequence(range(16)) | dp.map(image) | dp.batch(4) | dp.collate()
    for backend in BACKENDS:
        with pipe.compile(workers=2, backend=backend) as loader:
            list(loader)


# -- 1. an exception in user code -------------------------------------------------------------
ERROR_PIPES = {
    "shuffle-map-batch": dp.from_sequence(range(40)) | dp.shuffle() | dp.map(add_one)
    | dp.map(fail_on_24) | dp.batch(4),
    "map": dp.from_sequence(range(40)) | dp.map(fail_on_24),
    "stream-map": dp.from_iterable(numbers(40)) | dp.map(add_one) | dp.map(fail_on_24),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(ERROR_PIPES))
def test_a_user_exception_keeps_its_type_traceback_stage_and_key(case: str, backend: str) -> None:
    pipe = ERROR_PIPES[case]
    want, ref_error = reference(pipe)
    assert isinstance(ref_error, ValueError)
    ref_notes = [n for n in ref_error.__notes__ if n.startswith("datapipes: raised in stage")]
    assert ref_notes and "map(fail_on_24)" in ref_notes[0] and "key" in ref_notes[0]
    loader = pipe.compile(workers=2, backend=backend)
    try:
        got, error = run_until_error(loader)
        assert type(error) is ValueError and str(error) == "bad element 24"
        assert got == want  # every output before the failing element, in order, and no more
        assert set(ref_notes) <= set(error.__notes__)
        if backend == "process":
            (note,) = [n for n in error.__notes__ if n.startswith("worker traceback:")]
            assert "in fail_on_24" in note and "ValueError: bad element 24" in note
        else:  # the very exception, raised in a thread: its own traceback reaches the user
            assert "in fail_on_24" in "".join(traceback.format_exception(error))
        # a user's exception does not break the pool: the next epoch runs on the same workers
        pids = loader.worker_pids
        assert outcome(loader) == outcome(pipe.iter(epoch=1))
        assert loader.worker_pids == pids
    finally:
        loader.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("fn", "error_type"), [(fail_unpicklable, UnpicklableError),
                           (fail_unrebuildable, UnrebuildableError)]
)
def test_an_exception_that_cannot_cross_processes_still_arrives(
    fn: Callable[[int], int], error_type: type[Exception], backend: str
) -> None:
    pipe = dp.from_sequence(range(40)) | dp.map(fn)
    want, ref_error = reference(pipe)
    assert type(ref_error) is error_type
    loader = pipe.compile(workers=2, backend=backend)
    try:
        got, error = run_until_error(loader)
        assert got == want
        assert error is not None
        if type(error) is not error_type:  # a process could not send it: described instead
            assert backend == "process"
            assert isinstance(error, dp.StageError)
            assert error_type.__qualname__ in str(error) and str(ref_error) in str(error)
        text = "\n".join(error.__notes__) + "".join(traceback.format_exception(error))
        assert f"map({fn.__name__})" in text and "key 24" in text
        assert f"in {fn.__name__}" in text  # the worker's traceback
        again, error = run_until_error(loader)  # the next epoch runs, and fails alike
        assert again == want and isinstance(error, (error_type, dp.StageError))
    finally:
        loader.close()


def exit_on_24(x: int) -> int:
    if x == 24:
        sys.exit(3)
    return x


def interrupt_on_24(x: int) -> int:
    if x == 24:
        raise KeyboardInterrupt
    return x


def run_until_base_error(values: Iterable[Any]) -> tuple[list[Any], BaseException | None]:
    """``run_until_error``, also for ``SystemExit`` and ``KeyboardInterrupt``."""
    out: list[Any] = []
    try:
        for x in values:
            out.append(x)
    except BaseException as exc:
        return out, exc
    return out, None


#: how a map's user code reaches the consumer: threads, forked and spawned worker processes
USER_CODE_RUNS = [("thread", None), ("process", "fork"), ("process", "spawn")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("backend", "start_method"), USER_CODE_RUNS)
@pytest.mark.parametrize(("fn", "error_type"), [(exit_on_24, SystemExit),
                                                (interrupt_on_24, KeyboardInterrupt)])
@pytest.mark.parametrize("case", ["map", "map-batch", "stream-map"])
def test_sys_exit_and_keyboard_interrupt_in_a_map_reach_the_consumer(
    case: str, fn: Callable[[int], int], error_type: type[BaseException], backend: str,
    start_method: str | None,
) -> None:
    # Once: a worker thread died without a reply and the loader hung (even with timeout=3);
    # a worker process raising KeyboardInterrupt was reported "killed by signal 2".
    pipe = {
        "map": dp.from_sequence(range(40)) | dp.map(fn),
        "map-batch": dp.from_sequence(range(40)) | dp.map(add_one) | dp.map(fn) | dp.batch(4),
        "stream-map": dp.from_iterable(numbers(40)) | dp.map(fn),
    }[case]
    key = 23 if case == "map-batch" else 24  # add_one comes first there
    # every output before it, in order (the in-process reference of a stream source drops
    # the last of them: plan._positioned passes on what it holds for an Exception only)
    want: list[Any] = (
        [[x + 1 for x in range(b, b + 4)] for b in range(0, 20, 4)] if case == "map-batch"
        else list(range(24))
    )
    ref_error = run_until_base_error(pipe.iter())[1]
    assert type(ref_error) is error_type
    before = resources()
    loader = pipe.compile(workers=2, backend=backend, start_method=start_method, timeout=3)
    try:
        for _ in range(2):  # the pool is not broken: the next epoch runs, and ends alike
            got, error = run_until_base_error(loader)
            assert type(error) is error_type, repr(error)
            if error_type is SystemExit:
                assert error.code == 3  # type: ignore[union-attr]
            assert got == want
            note = f"datapipes: raised in stage map({fn.__name__}) on the element with key {key}"
            assert note in error.__notes__, error.__notes__
            pids = loader.worker_pids
        assert loader.worker_pids == pids
    finally:
        loader.close()
    assert_back_to(before)


def generator_at_24(x: int) -> Any:
    return (i for i in range(3)) if x == 24 else x


def lock_at_24(x: int) -> Any:
    return threading.Lock() if x == 24 else x


def open_file_at_24(x: int) -> Any:
    return open(os.devnull) if x == 24 else x


UNPICKLABLE_RESULTS = {
    "map": lambda fn: dp.from_sequence(range(40)) | dp.map(fn),
    "map-batch": lambda fn: dp.from_sequence(range(40)) | dp.map(fn) | dp.batch(4),
    "stream-map": lambda fn: dp.from_iterable(numbers(40)) | dp.map(fn),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("case", "fn", "start_method"),
    [*((case, generator_at_24, method) for case in UNPICKLABLE_RESULTS
       for method in ("fork", "spawn")),
     ("map", lock_at_24, "fork"), ("map-batch", open_file_at_24, "fork")],
)
def test_a_result_that_cannot_be_pickled_names_its_stage_and_key(
    case: str, fn: Callable[[int], Any], start_method: str
) -> None:
    # The reference yields the generator (nothing is pickled in-process); worker processes
    # cannot send it: the outputs before it arrive, then an error naming the stage, the key
    # and the way out. Once: a bare "TypeError: cannot pickle 'generator' object".
    pipe = UNPICKLABLE_RESULTS[case](fn)
    size = 4 if case == "map-batch" else 1
    want = list(pipe.iter())[: 24 // size]
    loader = pipe.compile(workers=2, start_method=start_method)
    try:
        for _ in range(2):  # a result is not a death: the next epoch runs on the same workers
            got, error = run_until_error(loader)
            assert got == want
            assert isinstance(error, dp.StageError), repr(error)
            message = str(error)
            assert f"map({fn.__name__})" in message and "key 24" in message, message
            assert "cannot pickle" in message and "backend='thread'" in message, message
            note = f"datapipes: raised in stage map({fn.__name__}) on the element with key 24"
            assert note in error.__notes__
            pids = loader.worker_pids
        assert loader.worker_pids == pids
    finally:
        loader.close()
    # under on_error="skip" it is skipped, and recorded, like an element whose map raised
    with pipe.compile(workers=2, start_method=start_method, on_error="skip") as loader:
        kept = [x for x in range(40) if x != 24]
        batches = [kept[i:i + 4] for i in range(0, len(kept), 4)]
        assert list(loader) == (batches if size == 4 else kept)
        (record,) = loader.skipped
        assert (record.stage, record.key) == (f"map({fn.__name__})", 24)
        assert "cannot pickle" in record.message


# -- 2. a worker process that dies ------------------------------------------------------------
DEATHS = {"SIGKILL": "signal 9 (SIGKILL)", "SIGSEGV": "signal 11 (SIGSEGV)",
          "exit0": "exited with code 0"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", list(DEATHS))
def test_a_worker_that_dies_raises_worker_error_then_fresh_workers_run(
    how: str, tmp_path: Path
) -> None:
    record = tmp_path / "death.json"
    pipe = dp.from_sequence(range(400)) | dp.map(DieAt(137, how, record)) | dp.batch(5)
    want, _ = reference(pipe)
    before = resources()
    loader = pipe.compile(workers=2, prefetch=2)
    old: list[int] = []
    try:
        it = iter(loader)
        first = next(it)
        old = loader.worker_pids
        rest, error = run_until_error(it)
        noticed = time.monotonic()
        got = [first, *rest]
        death = json.loads(record.read_text())
        delay = noticed - death["time"]
        print(f"{how}: WorkerError {delay:.3f} s after the worker died")
        assert isinstance(error, dp.WorkerError), f"no WorkerError but {error!r}"
        assert f"pid {death['pid']}" in str(error) and DEATHS[how] in str(error)
        assert delay < DEATH_SECONDS
        assert got == want[: len(got)] and len(got) < len(want)  # a prefix: never a short epoch
        wait_gone([death["pid"]])
        # the broken pool is gone; the next epoch starts fresh workers and is whole
        assert outcome(loader) == outcome(pipe.iter(epoch=1))
        new = loader.worker_pids
        assert len(new) == 2 and death["pid"] not in new
        old = [*old, *new]
    finally:
        loader.close()
        kill_leftovers(old)
    assert_back_to(before)


def slow_after_the_first_batch(x: int) -> int:
    if x >= 4:
        time.sleep(1.0)
    return x


@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_a_worker_killed_from_outside_is_reported_at_once_while_another_is_busy(
    start_method: str | None,
) -> None:
    # An out-of-memory kill is a SIGKILL from the kernel: this is how it looks to the loader.
    # The first batch is ready at once; every later one takes 4 s, so when worker 1 is
    # killed, worker 0 is in the middle of a long task: the error must not wait for it.
    pipe = dp.from_sequence(range(400)) | dp.map(slow_after_the_first_batch) | dp.batch(4)
    before = resources()
    loader = pipe.compile(workers=2, prefetch=2, start_method=start_method)
    pids: list[int] = []
    try:
        it = iter(loader)
        got = [next(it)]
        pids = loader.worker_pids
        victim = pids[1]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        rest, error = run_until_error(it)
        delay = time.monotonic() - killed
        print(f"external SIGKILL: WorkerError after {delay:.3f} s")
        assert isinstance(error, dp.WorkerError), f"no WorkerError but {error!r}"
        assert f"pid {victim}" in str(error) and "SIGKILL" in str(error)
        assert delay < DEATH_SECONDS
        batches = got + rest  # a prefix of the epoch (its reference would take 400 s)
        assert batches == [list(range(4 * b, 4 * b + 4)) for b in range(len(batches))]
        assert loader.worker_pids == []  # the broken pool was shut down
        wait_gone(pids)
    finally:
        loader.close()
        kill_leftovers(pids)
    assert_back_to(before)


# -- 3. a task that takes longer than compile(timeout=...) ------------------------------------
TIMEOUT_PIPES = {
    "map": dp.from_sequence(range(20)) | dp.map(hang_at_5),
    "map-batch": dp.from_sequence(range(20)) | dp.map(add_one) | dp.map(hang_at_5)
    | dp.batch(4),
    "stream-map": dp.from_iterable(numbers(20)) | dp.map(hang_at_5),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(TIMEOUT_PIPES))
def test_a_task_past_the_timeout_names_its_stage_and_key(case: str, backend: str) -> None:
    global RELEASE
    RELEASE = threading.Event()
    pipe = TIMEOUT_PIPES[case]
    key = 5 if case != "map-batch" else 4  # add_one comes first: element 4 is the one
    before = resources()
    loader = pipe.compile(workers=2, backend=backend, timeout=0.5)
    pids: list[int] = []
    try:
        start = time.monotonic()
        got, error = run_until_error(loader)
        print(f"{backend} {case}: WorkerError {time.monotonic() - start:.2f} s after the start")
        assert isinstance(error, dp.WorkerError), f"no WorkerError but {error!r}"
        message = str(error)
        assert "timeout=0.5" in message
        assert "map(hang_at_5)" in message and f"key {key}" in message, message
        RELEASE.set()
        assert got == reference(pipe)[0][: len(got)]
        stuck = [int(p) for p in re.findall(r"\(pid (\d+)", message)]
        assert len(stuck) == (backend == "process")
        # after the timeout, a fresh epoch runs whole, on fresh workers
        it = iter(loader)
        head = next(it)
        pids = loader.worker_pids
        assert [head, *it] == reference(pipe, 1)[0]
        assert not set(stuck) & set(pids)
        wait_gone(stuck)
    finally:
        RELEASE.set()
        loader.close()
        kill_leftovers(pids)
    assert_back_to(before)


# -- 4. ending an epoch early, and stopping a loader ------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["break", "raise"])
def test_leaving_an_epoch_ends_it_at_once_and_workers_stay(how: str, backend: str) -> None:
    # 4000 elements of 10 ms on two workers: finishing the epoch would take 20 s or more.
    pipe = dp.from_sequence(range(4000)) | dp.map(slow)
    loader = pipe.compile(workers=2, backend=backend, prefetch=2)
    try:
        pids = loader.worker_pids
        start = time.monotonic()
        with contextlib.suppress(ConsumerError):
            for i, x in enumerate(loader):
                assert x == i
                if i == 3:
                    if how == "break":
                        break
                    raise ConsumerError("the training step failed")
        pids = loader.worker_pids
        it = iter(loader)
        head = [next(it) for _ in range(4)]
        took = time.monotonic() - start
        print(f"{how}: left epoch 0 and got 4 outputs of epoch 1 in {took:.2f} s")
        assert head == [0, 1, 2, 3]
        assert took < 8.0  # far less than the rest of epoch 0 would take (20 s)
        assert loader.worker_pids == pids  # the same workers serve the next epoch
        if backend == "process":
            assert len(pids) == 2 and all(alive(psutil.Process(p)) for p in pids)
    finally:
        loader.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["close", "del", "with"])
def test_stopping_a_loader_mid_epoch_stops_every_worker_and_thread(how: str, backend: str) -> None:
    pipe = dp.from_sequence(range(10_000)) | dp.map(image) | dp.batch(4) | dp.collate()
    before = resources()
    pids: list[int] = []
    try:
        if how == "with":
            with pipe.compile(workers=2, backend=backend) as loader:
                it = iter(loader)
                next(it)
                pids = loader.worker_pids
        else:
            loader = pipe.compile(workers=2, backend=backend)
            it = iter(loader)
            next(it)
            pids = loader.worker_pids
            if how == "close":
                loader.close()
            else:
                del loader, it
        assert len(pids) == (2 if backend == "process" else 0)
        start = time.monotonic()
        # every worker and thread stops while the user still holds the iterator ...
        assert_back_to({k: v for k, v in before.items() if k != "fds"})
        print(f"{how}: every worker and thread gone in {time.monotonic() - start:.2f} s")
        # ... whose last batch keeps its shared memory (and, with it, one fd) until dropped
        with contextlib.suppress(NameError):
            del it
        assert_back_to(before)
    finally:
        kill_leftovers(pids)


#: how the scripts run their loader: each backend, and process workers spawned (which start
#: as a bare interpreter of datapipes' own, not through multiprocessing)
SCRIPT_RUNS = [("process", None), ("thread", None), ("process", "spawn")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("backend", "start_method"), SCRIPT_RUNS)
def test_the_end_of_the_program_stops_every_worker(backend: str, start_method: str | None) -> None:
    proc, info = start_script("exit", backend, start_method)
    try:
        proc.wait(timeout=30)
        wait_gone(info["workers"])  # before reading the output: a live worker holds its pipe
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        if backend == "process":
            assert len(info["workers"]) == 2
        else:
            assert info["threads"].count("datapipes-worker") == 2
    finally:
        stop_script(proc, info)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("attempt", range(3))  # a Ctrl-C lands anywhere: try a few places
@pytest.mark.parametrize(("backend", "start_method"), SCRIPT_RUNS)
def test_ctrl_c_shows_one_traceback_and_leaves_no_worker(
    backend: str, start_method: str | None, attempt: int
) -> None:
    """Also: the Ctrl-C is never lost (it once could be, when it landed in the finalizer that
    gives a dropped batch's shared memory back: the script then ran on)."""
    proc, info = start_script("loop", backend, start_method)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole process group
        proc.wait(timeout=30)
        wait_gone(info["workers"])
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGINT, err  # how Python ends on Ctrl-C
        assert err.count("Traceback (most recent call last)") == 1, err
        assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
        assert err.count("KeyboardInterrupt") == 1, err
        assert "worker.py" not in err and "Process datapipes-worker" not in err, err
    finally:
        stop_script(proc, info)


# -- 5. the main process killed ---------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", [None, "spawn"])
def test_workers_of_a_killed_main_process_exit_and_leave_nothing_in_dev_shm(
    start_method: str | None,
) -> None:
    shm_before = shm()
    proc, info = start_script("hold", "process", start_method)
    try:
        workers = [psutil.Process(p) for p in info["workers"]]
        assert len(workers) == 2 and all(alive(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        took = wait_gone(workers)
        print(f"workers of the killed main process gone {took:.2f} s after the SIGKILL")
        assert_no_new_shm(shm_before)
    finally:
        stop_script(proc, info)


def start_busy_script(
    mode: str, start_method: str, start_from: str
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start ``fault_scripts/busy_workers.py`` in a session of its own; its JSON report."""
    return start_fault_script("busy_workers.py", mode, start_method, start_from)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("start_from", ["main", "thread"])
@pytest.mark.parametrize("mode", ["hold", "close"])
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_busy_workers_of_a_killed_main_process_exit_within_5_s(
    start_method: str, mode: str, start_from: str
) -> None:
    # Each worker is in the middle of a 30 s task with three more queued behind it: a worker
    # that noticed its parent only between tasks stayed 30 s or more. "close": the main
    # process is killed while close() waits for its workers (they were told to stop).
    # "thread": the workers were started by a thread that has ended since (they outlive it;
    # the kernel's parent-death signal, tied to that thread, is not used for them).
    proc, info = start_busy_script(mode, start_method, start_from)
    try:
        if mode == "close":
            assert proc.stdout is not None and proc.stdout.readline().strip() == "closing"
            time.sleep(0.5)  # close() has sent "stop" and waits (5 s) for the workers
        workers = [psutil.Process(p) for p in info["workers"]]
        assert len(workers) == 2 and all(alive(w) for w in workers)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        took = wait_gone(workers, 2 * GONE_SECONDS)
        where = "the main thread" if start_from == "main" else "another thread"
        print(f"busy {start_method} workers ({mode}, started from {where}) gone {took:.2f} s "
              "after the main process")
    finally:
        stop_script(proc, info)


# -- 7. on_error="skip" -----------------------------------------------------------------------
SKIP_PIPES = {
    "two-maps": dp.from_sequence(range(60)) | dp.shuffle() | dp.map(fail_on_multiple_of_7)
    | dp.map(fail_on_multiple_of_5),
    "rng-map-batch": dp.from_sequence(range(60)) | dp.shuffle()
    | dp.map(fail_at_random, rng=True) | dp.batch(4),
    "stream": dp.from_iterable(numbers(60)) | dp.map(fail_on_multiple_of_7)
    | dp.filter(bool) | dp.map(fail_on_multiple_of_5),
}
SKIP_CONFIGS = [(0, "process"), (2, "process"), (2, "thread")]


def skipped_keys(loader: dp.Loader) -> set[tuple[str, Any]]:
    return {(s.stage, s.key) for s in loader.skipped}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(SKIP_PIPES))
def test_skipped_elements_are_the_same_for_every_executor(case: str) -> None:
    pipe = SKIP_PIPES[case]
    seen: dict[tuple[int, str], list[Any]] = {}
    for workers, backend in SKIP_CONFIGS:
        with pipe.compile(workers=workers, backend=backend, on_error="skip") as loader:
            seen[workers, backend] = []
            for _ in range(2):
                out = list(loader)
                seen[workers, backend].append((out, skipped_keys(loader), list(loader.skipped)))
    (_, keys0, records0), (_, keys1, _) = seen[0, "process"]
    assert keys0 and keys1  # something was skipped in each epoch
    if case == "rng-map-batch":
        assert keys0 != keys1  # which elements fail follows the epoch
    for config, epochs in seen.items():
        for epoch, (out, keys, records) in enumerate(epochs):
            ref_out, ref_keys, _ = seen[0, "process"][epoch]
            assert keys == ref_keys, (config, epoch)
            assert out == ref_out, (config, epoch)
            assert len(records) == len(keys)  # each element once, this epoch only
    for record in records0:
        assert record.stage.startswith("map(fail_")
        assert record.error in ("ValueError", "KeyError")
        assert re.search(r"multiple of [57]|unlucky", record.message)
    # the records name the right elements: the ones the reference raises on
    if case == "two-maps":
        by_stage = {s: {k for st, k in keys0 if st == s} for s, _ in keys0}
        assert by_stage["map(fail_on_multiple_of_7)"] == {k for k in range(60) if k % 7 == 0}
        # 7 fails first: 5 sees only what 7 let through (35 is not in its set)
        assert by_stage["map(fail_on_multiple_of_5)"] == {
            k for k in range(60) if k % 5 == 0 and k % 7 != 0
        }


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("workers", "backend"), SKIP_CONFIGS)
def test_past_max_skipped_a_stage_error_chains_the_last_error(workers: int, backend: str) -> None:
    pipe = dp.from_sequence(range(60)) | dp.map(fail_on_multiple_of_7)  # 9 elements fail
    with pipe.compile(workers=workers, backend=backend, on_error="skip", max_skipped=3) as loader:
        got, error = run_until_error(loader)
        assert isinstance(error, dp.StageError), f"no StageError but {error!r}"
        assert "max_skipped=3" in str(error)
        assert len(loader.skipped) == 4
        last = loader.skipped[-1]
        assert isinstance(error.__cause__, ValueError)
        assert str(error.__cause__) == last.message == f"multiple of 7: {last.key}"
        assert got == [x for x in range(60) if x % 7][: len(got)]
    with pipe.compile(workers=workers, backend=backend, on_error="skip", max_skipped=9) as loader:
        assert list(loader) == [x for x in range(60) if x % 7]  # 9 skipped is not past 9
        assert len(loader.skipped) == 9
    with pipe.compile(workers=workers, backend=backend, on_error="skip") as loader:
        for _ in range(2):  # no limit; every epoch counts afresh
            assert list(loader) == [x for x in range(60) if x % 7]
            assert sorted(s.key for s in loader.skipped) == list(range(0, 60, 7))


# -- 8. nothing leaks over time ---------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_200_short_epochs_leak_nothing(backend: str) -> None:
    pipe = dp.from_sequence(range(12)) | dp.map(image) | dp.batch(3) | dp.collate()
    want = len(pipe)
    before = resources()
    loader = pipe.compile(workers=2, backend=backend, prefetch=2)
    try:
        assert len(list(loader)) == want  # the workers now exist
        started = resources()
        pids = loader.worker_pids
        for epoch in range(200):
            if epoch % 2:
                next(iter(loader))  # leave with work in flight
            else:
                assert len(list(loader)) == want
        assert len(list(loader)) == want  # a whole epoch: stale results all drained
        assert loader.worker_pids == pids
        assert_back_to(started)
    finally:
        loader.close()
    assert_back_to(before)


@pytest.mark.timeout(90)
def test_50_loaders_opened_and_closed_leak_nothing() -> None:
    pipe = dp.from_sequence(range(12)) | dp.map(image) | dp.batch(3) | dp.collate()
    before = resources()
    for i in range(50):
        backend = BACKENDS[i % 2]
        with pipe.compile(workers=2, backend=backend) as loader:
            next(iter(loader))  # closed in the middle of an epoch, with results in flight
    assert_back_to(before)


# -- 9. the workers' global RNGs --------------------------------------------------------------
def draws_by_worker(loader: dp.Loader) -> list[list[tuple[float, float, float]]]:
    """Each worker's draws from the global generators in one epoch, in the order it drew."""
    out = list(loader)
    pids = loader.worker_pids
    return [[tuple(d) for pid, *d in out if pid == w] for w in pids]


@pytest.mark.timeout(60)
def test_global_rngs_differ_by_worker_and_epoch_and_repeat_for_the_same_seed() -> None:
    pipe = dp.from_sequence(range(64)) | dp.map(global_draws)
    with pipe.compile(workers=2, seed=7) as a, pipe.compile(workers=2, seed=7) as b:
        a_epochs = [draws_by_worker(a), draws_by_worker(a)]
        b_epochs = [draws_by_worker(b), draws_by_worker(b)]
    for epochs in (a_epochs, b_epochs):
        for draws in epochs:
            assert all(draws), "both workers should get work"
            for g in range(3):  # random, numpy.random, torch: no number shared by two workers
                assert not {d[g] for d in draws[0]} & {d[g] for d in draws[1]}
        for w in range(2):  # each worker draws new numbers in the next epoch
            assert not set(epochs[0][w]) & set(epochs[1][w])
    for epoch in range(2):  # the same (seed, epoch, worker): the same stream of draws
        for w in range(2):
            x, y = a_epochs[epoch][w], b_epochs[epoch][w]
            n = min(len(x), len(y))
            assert n and x[:n] == y[:n]


# -- 10. shared memory that cannot be allocated -----------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("function", ["ftruncate", "memfd_create"])
@pytest.mark.parametrize("case", ["map", "collate"])
def test_shared_memory_exhaustion_is_a_clear_error(
    function: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    pipe = dp.from_sequence(range(16)) | dp.map(image)
    if case == "collate":
        pipe = pipe | dp.batch(4) | dp.collate()
    needed = image(0).nbytes
    loader = pipe.compile(workers=2, start_method="fork")  # the workers inherit the patch
    pids: list[int] = []
    try:
        with monkeypatch.context() as patch:
            patch.setattr(transport.os, function, no_space)
            it = iter(loader)
            got, error = run_until_error(it)  # the workers fork here, patched
            pids = loader.worker_pids
        assert got == []
        assert isinstance(error, OSError), f"no OSError but {error!r}"
        assert error.errno == errno.ENOSPC
        message = str(error)
        assert "/dev/shm" in message and "shmem" in message, message
        sizes = [int(n) for n in re.findall(r"(\d+) bytes", message)]
        assert sizes and max(sizes) >= needed, message
    finally:
        loader.close()
        kill_leftovers(pids)
    wait_gone(pids)
    with pipe.compile(workers=2) as fresh:  # unpatched workers: it works again
        assert len(list(fresh)) == len(pipe)
