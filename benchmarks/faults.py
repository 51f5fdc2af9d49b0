"""Faults, side by side: what each loader does when a worker or the main process is killed.

Systems: ``datapipes`` (``pipe.compile(workers=2)``), PyTorch's ``DataLoader``
(``num_workers=2``), ``torchdata.nodes`` 0.11 (``SamplerWrapper`` + ``Batcher`` +
``ParallelMapper(num_workers=2, method="process")`` + ``Loader``) and Grain 0.2.18
(``MapDataset.range(n).map(...).batch(8).to_iter_dataset().mp_prefetch(num_workers=2)``;
Grain's workers are always spawned). Every system gets the same work: batches of 8 float32
64 × 64 arrays (16 KiB each: large enough for every system's shared-memory path), each
element taking 5 ms (a sleep), 100,000 elements: an epoch far longer than the measurement.
A peer whose import fails is reported as not installed and skipped.

Two measurements, each in a fresh process of its own (a new session), per system:

1. **SIGKILL one worker**: the process builds the loader, takes 3 batches, sends SIGKILL to
   one of its worker processes and keeps iterating. Reported: the seconds from the SIGKILL to
   the exception the consumer gets (and whether its message names the worker's pid), or
   ``hang`` when nothing at all arrived for 10 s after the kill, or ``no error`` when batches
   kept coming for 10 s (the epoch silently lost a worker's share), or ``short epoch`` when the
   epoch ended without an error.
2. **SIGKILL the main process**: the process builds the loader, takes 3 batches (work is in
   flight) and reports its workers' pids; this script kills it with SIGKILL and, 5 s later,
   counts the workers still running (zombies count as gone: they have exited) and the new
   entries in ``/dev/shm``. Also reported: when the last worker went, if within those 5 s.

Each measuring process runs in a session of its own and, where this script may (as root),
with a private ``/dev/shm`` (a fresh tmpfs in a mount namespace of its own, via ``unshare``):
the entries counted are exactly the system's, other programs using ``/dev/shm`` meanwhile
neither change the count nor lose their entries, and whatever a system leaves there vanishes
with its last process. Elsewhere the machine's ``/dev/shm`` is compared before and after, and
what a system left there is reported, not removed. Afterwards this script kills what a system
left running (by pid: only processes it started). An out-of-memory kill is a SIGKILL from
the kernel: (1) is also what an OOM-killed worker looks like.

    python benchmarks/faults.py               # every installed system, about 2 minutes
    python benchmarks/faults.py --systems datapipes DataLoader
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
WORKERS = 2
BATCH = 8
ELEMENTS = 100_000
DELAY = 0.005
#: how long after killing a worker a consumer gets to report it (else: "hang" or "no error")
CAP_SECONDS = 10.0
#: how long after killing the main process its workers are counted
AFTER_SECONDS = 5.0
SYSTEMS = ("datapipes", "DataLoader", "torchdata.nodes", "Grain")
_HELPERS = ("resource_tracker", "forkserver", "semaphore_tracker")


# -- the work (this module is imported by name in the measuring processes and their workers) --
def slow_image(i: int) -> np.ndarray:
    time.sleep(DELAY)
    return np.full((64, 64), i, dtype=np.float32)


def slow_batch(indices: list[int]) -> Any:
    from torch.utils.data import default_collate

    return default_collate([slow_image(i) for i in indices])


class SlowImages:
    """A map-style Dataset for DataLoader."""

    def __len__(self) -> int:
        return ELEMENTS

    def __getitem__(self, i: int) -> np.ndarray:
        return slow_image(i)


def batches(system: str) -> tuple[Iterator[Any], Callable[[], None]]:
    """An iterator over one epoch of ``system``, and how to stop it."""
    if system == "datapipes":
        import datapipes as dp

        pipe = dp.from_sequence(range(ELEMENTS)) | dp.map(slow_image) | dp.batch(BATCH) \
            | dp.collate()
        loader = pipe.compile(workers=WORKERS)
        return iter(loader), loader.close
    if system == "DataLoader":
        from torch.utils.data import DataLoader

        dl: Any = DataLoader(SlowImages(), batch_size=BATCH,  # type: ignore[arg-type]
                             num_workers=WORKERS)
        it = iter(dl)
        return it, lambda: it._shutdown_workers()  # type: ignore[attr-defined]
    if system == "torchdata.nodes":
        import torchdata.nodes as tn
        from torch.utils.data import SequentialSampler

        node = tn.Batcher(tn.SamplerWrapper(SequentialSampler(range(ELEMENTS))), BATCH)
        mapper = tn.ParallelMapper(node, slow_batch, num_workers=WORKERS, method="process")
        loader = tn.Loader(mapper)

        def stop() -> None:  # torchdata.nodes 0.11 has no public close
            inner = getattr(getattr(mapper, "_it", None), "_it", None)
            if inner is not None and hasattr(inner, "_shutdown"):
                inner._shutdown()

        return iter(loader), stop
    if system == "Grain":
        import grain

        ds = grain.MapDataset.range(ELEMENTS).map(slow_image).batch(BATCH)
        it = iter(ds.to_iter_dataset().mp_prefetch(
            grain.MultiprocessingOptions(num_workers=WORKERS)))
        return it, lambda: getattr(it, "close", lambda: None)()
    raise ValueError(f"unknown system {system!r}")


def worker_pids() -> list[int]:
    """This process's child processes, without multiprocessing's helpers."""
    import psutil

    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if not any(h in " ".join(proc.cmdline()) for h in _HELPERS):
                pids.append(proc.pid)
        except psutil.Error:
            pass
    return sorted(pids)


def descendants_kill() -> None:
    import psutil

    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            proc.kill()


def report(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


# -- what runs in the measuring process -------------------------------------------------------
def child_kill_worker(system: str) -> None:
    """Take 3 batches, SIGKILL one worker, iterate on: report how the consumer learns of it."""
    it, stop = batches(system)
    for _ in range(3):
        next(it)
    pids = worker_pids()
    victim = pids[-1]
    state = {"items": 0, "last": 0.0, "killed": 0.0}
    go = threading.Event()

    def give_up() -> None:
        go.wait()
        time.sleep(CAP_SECONDS)
        quiet = time.monotonic() - state["killed"] - state["last"]
        outcome = "hang" if state["items"] == 0 or quiet > 2.0 else "no error"
        report({"outcome": outcome, "items": state["items"], "workers": pids})
        descendants_kill()
        os._exit(0)

    threading.Thread(target=give_up, daemon=True).start()
    errors: list[tuple[float, BaseException]] = []
    # DataLoader raises from its SIGCHLD handler, wherever the main thread is: from here on,
    # everything is inside the try
    try:
        state["killed"] = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        go.set()
        for _ in it:
            state["items"] += 1
            state["last"] = time.monotonic() - state["killed"]
    except BaseException as exc:
        errors.append((time.monotonic() - state["killed"], exc))
    # DataLoader may raise a second error from its SIGCHLD handler at any moment: catch it too
    for _ in range(5):
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            time.sleep(0.2)
            break
        except BaseException as exc:
            errors.append((time.monotonic() - state["killed"], exc))
    if errors:
        took, first = errors[0]
        report({"outcome": "error", "seconds": took, "type": type(first).__name__,
                "names_pid": str(victim) in str(first), "items": state["items"],
                "message": str(first)[:300], "workers": pids,
                "then": [f"{type(e).__name__} naming the pid" if str(victim) in str(e)
                         else type(e).__name__ for _, e in errors[1:]]})
    else:
        report({"outcome": "short epoch", "items": state["items"], "workers": pids})
    # a clean stop where the system manages one quickly; whatever is left is killed
    threading.Thread(target=stop, daemon=True).start()
    time.sleep(1.0)
    descendants_kill()
    os._exit(0)


def child_hold(system: str) -> None:
    """Take 3 batches, report the workers' pids, and wait to be killed."""
    it, _ = batches(system)
    for _ in range(3):
        next(it)
    report({"pid": os.getpid(), "workers": worker_pids()})
    while True:
        time.sleep(60)


# -- what runs here ---------------------------------------------------------------------------
#: Each measuring process gets a /dev/shm of its own (a fresh tmpfs in a private mount
#: namespace, with ``unshare``, where this script may: as root), and a "holder" process that
#: keeps the namespace alive. So the entries counted are exactly the system's, other programs
#: using /dev/shm at the same time neither add to the count nor lose their entries, and
#: whatever a system leaves there vanishes when its last process is killed. Elsewhere the
#: machine's /dev/shm is compared before and after, and what a system left is only reported.
_PRIVATE_SHM = (
    "mount -t tmpfs -o size=2g tmpfs /dev/shm || exit 97; "
    'sleep 100000 >/dev/null 2>&1 & echo "{\\"holder\\": $!}"; "$@"'
)


class Measured:
    """A measuring process, in a session of its own; its stderr goes to a file (workers a
    system leaves behind would keep a pipe open, and reading it to the end would hang)."""

    def __init__(self, system: str, what: str, private: bool) -> None:
        code = (f"import sys; sys.path[:0] = [{str(HERE)!r}]; import faults; "
                f"faults.child_{what}({system!r})")
        argv = [sys.executable, "-c", code]
        if private:
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    _PRIVATE_SHM, "sh", *argv]
        self.err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by finish)
        self.shm_before = set() if private else set(os.listdir("/dev/shm"))
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self.err, text=True, start_new_session=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        self.holder: int | None = None
        if private:
            line = self.read(30)
            self.holder = None if line is None else line.get("holder")

    def read(self, seconds: float) -> dict[str, Any] | None:
        """The next JSON line the process prints, or None."""
        stdout = self.proc.stdout
        assert stdout is not None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([stdout], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            line = stdout.readline()
            if not line:
                return None
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]
        return None

    def shm_left(self) -> set[str]:
        where = "/dev/shm" if self.holder is None else f"/proc/{self.holder}/root/dev/shm"
        return set(os.listdir(where)) - self.shm_before

    def members(self) -> list[int]:
        """Processes still in its session (wherever they were re-parented), but the holder."""
        sid = self.proc.pid
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder:
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == sid and alive(int(entry)):
                        found.append(int(entry))
        return found

    def finish(self, pids: list[int]) -> str:
        """Kill what is left of it (by pid: only processes it started); its stderr."""
        for pid in {*pids, *self.members(), *([self.holder] if self.holder else [])}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        left = set() if self.holder is not None else self.shm_left()
        if left:
            print(f"left in /dev/shm (not removed: other programs may share it): "
                  f"{len(left)} entries, e.g. {sorted(left)[:3]}", file=sys.stderr)
        self.err.seek(0)
        text = self.err.read()
        self.err.close()
        return text  # type: ignore[no-any-return]


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def private_shm_works() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o size=1m tmpfs /dev/shm"],
            capture_output=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def measure_kill_worker(system: str, private: bool) -> dict[str, Any]:
    m = Measured(system, "kill_worker", private)
    result = None
    try:
        result = m.read(60 + CAP_SECONDS)
        m.proc.wait(timeout=30)
    finally:
        err = m.finish((result or {}).get("workers", []))
    return result or {"outcome": "failed to run", "stderr": err[-500:]}


def measure_kill_main(system: str, private: bool) -> dict[str, Any]:
    m = Measured(system, "hold", private)
    workers: list[int] = []
    err = ""
    try:
        info = m.read(60)
        if info is not None:
            workers = info["workers"]
            os.kill(info["pid"], signal.SIGKILL)
            killed = time.monotonic()
            gone_after = None
            while time.monotonic() - killed < AFTER_SECONDS:
                if gone_after is None and not any(alive(p) for p in workers):
                    gone_after = time.monotonic() - killed
                time.sleep(0.05)
            left = [p for p in workers if alive(p)]
            if not left and gone_after is None:  # went in the last moment
                gone_after = time.monotonic() - killed
            others = [p for p in m.members() if p not in workers and p != info["pid"]]
            return {"workers": len(workers), "left": len(left), "other_left": len(others),
                    "gone_after": gone_after, "shm": len(m.shm_left())}
    finally:
        err = m.finish(workers)
    return {"outcome": "failed to run", "stderr": err[-500:]}


def installed(system: str) -> bool:
    import importlib.util

    module = {"datapipes": "datapipes", "DataLoader": "torch",
              "torchdata.nodes": "torchdata", "Grain": "grain"}[system]
    return importlib.util.find_spec(module) is not None


def describe_worker_kill(r: dict[str, Any]) -> str:
    if r["outcome"] == "error":
        pid = "names the pid" if r["names_pid"] else "no pid"
        then = "".join(f", then {t}" for t in r.get("then", []))
        return f"{r['type']} in {r['seconds']:.2f} s, {pid}{then}"
    if r["outcome"] == "hang":
        return f"hang (nothing for {CAP_SECONDS:.0f} s)"
    if r["outcome"] == "no error":
        return f"no error in {CAP_SECONDS:.0f} s ({r['items']} more batches)"
    if r["outcome"] == "short epoch":
        return f"epoch ended without error after {r['items']} more batches"
    return r["outcome"]


def describe_main_kill(r: dict[str, Any]) -> tuple[str, str]:
    if "left" not in r:
        return r.get("outcome", "?"), "-"
    if r["left"]:
        workers = f"{r['left']} of {r['workers']} alive after {AFTER_SECONDS:.0f} s"
    else:
        workers = f"all {r['workers']} gone in {r['gone_after']:.2f} s"
    if r["other_left"]:
        workers += f" (+{r['other_left']} helper processes)"
    return workers, str(r["shm"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    args = parser.parse_args()
    sys.path[:0] = [str(HERE)]
    from _rounds import machine, print_table

    print(machine())
    versions = []
    for name in ("torchdata", "grain"):
        with contextlib.suppress(ImportError):
            versions.append(f"{name} {__import__(name).__version__}")
    print("peers:", ", ".join(versions) or "none installed")
    private = private_shm_works()
    print("/dev/shm:", "a private tmpfs per measurement" if private
          else "the machine's (unshare not permitted here): other programs may add to it")
    rows = []
    for system in args.systems:
        if not installed(system):
            print(f"{system}: not installed; skipped")
            continue
        worker = measure_kill_worker(system, private)
        parent = measure_kill_main(system, private)
        for r in (worker, parent):
            if "stderr" in r:
                print(f"{system}: {r['stderr']}", file=sys.stderr)
        if worker.get("outcome") == "error":
            print(f"{system}: {worker['type']}: {worker['message'][:160]}")
        rows.append((system, describe_worker_kill(worker), *describe_main_kill(parent)))
    print()
    print_table(rows, ["system", "SIGKILL one worker: the consumer gets",
                       "SIGKILL the main process: workers",
                       f"new /dev/shm entries {AFTER_SECONDS:.0f} s later"])


if __name__ == "__main__":
    main()
