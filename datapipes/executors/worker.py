"""What runs inside a worker: take tasks, run the plan's segment, send results back.

The same function serves both backends: a thread worker calls :func:`run_task` directly;
a process worker runs :func:`process_main`, which adds the socket protocol, shared memory,
the watch on its parent and the task timeout.

Protocol. A task is ``(_, epoch id, seq, seed, epoch, skip, kind, payload)`` with kind
``"batch"`` (payload ``(b, units)``) or ``"units"`` (payload: units). Control messages are
``("cancel", epoch id)``, ``("free", chunk ids)`` (shared memory the main process let go of)
and ``("stop",)``. A reply is ``(kind, epoch id, seq, payload)``:
``"ok"`` (payload: shared-memory sizes, pickled ``(items, skipped)``), ``"error"`` (a
described exception), ``"dropped"`` (a cancelled task) or ``"timeout"`` (where it hung).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import queue
import random
import signal
import socket
import sys
import threading
import time
import traceback
from types import FrameType, FunctionType
from typing import Any

import cloudpickle
import numpy as np

from .._graph import EpochContext, Skipped
from ..plan import Plan
from ..stages._kernel import apply_ops
from . import transport

#: main-side fds of every live process pool: a forked worker closes its copies at once, so
#: that a worker never keeps another worker's (or loader's) socket open
MAIN_SIDE_FDS: set[int] = set()


def run_task(
    the_plan: Plan, ctx: EpochContext, kind: str, payload: Any
) -> tuple[list[list[Any]], list[Skipped], Exception | None]:
    """A task's outputs ``(key, value)``, one list per unit, the elements it skipped, and
    the error that stopped it (the outputs before an error still count)."""
    per_unit, error = the_plan.task_outputs(kind, payload, ctx)
    return per_unit, ctx.skipped, error


def describe_error(exc: BaseException) -> tuple[bytes | None, str, str, str, list[str]]:
    """An exception as it can cross a process boundary: pickled if it can be, always its
    type name, message, the worker's formatted traceback and its notes."""
    notes = getattr(exc, "__notes__", None)
    if notes is not None:  # they travel with the exception itself: not twice
        del exc.__notes__
    try:
        text = "".join(traceback.format_exception(exc))
    finally:
        if notes is not None:
            exc.__notes__ = notes
    pickled: bytes | None = None
    # by reference where it can be, so that an importable class (also one of the main
    # module) arrives as itself; by value (cloudpickle) for classes defined in functions
    for dumps in (pickle.dumps, cloudpickle.dumps):
        try:
            pickled = dumps(exc)
            pickle.loads(pickled)
        except Exception:
            pickled = None
        else:
            break
    return pickled, type(exc).__qualname__, str(exc), text, list(notes or ())


def _portable(record: Skipped) -> Skipped:
    """A skip record that pickles: with its exception where that pickles too."""
    try:
        pickle.loads(pickle.dumps(record.exception))
    except Exception:
        return record.plain()
    return record


def seed_globals(seed: int, epoch: int, worker: int, *, only_torch: bool = False) -> None:
    """Seed ``random``, ``numpy.random`` and torch (when imported) from ``(seed, epoch,
    worker)``, so code that uses the global generators does not draw the same numbers in
    every worker (PyTorch issue 5059). ``only_torch``: torch was imported since the others
    were seeded. Reproducible draws come from ``map(fn, rng=True)``, not from these."""
    words = np.random.SeedSequence(seed, spawn_key=(epoch, worker, 2)).generate_state(2)
    value = int(words[0]) << 32 | int(words[1])
    if not only_torch:
        random.seed(value)
        np.random.seed(int(words[0]))
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(value)


def keep_freed_memory() -> None:
    """Have glibc keep freed blocks of up to 32 MiB for reuse instead of handing them back
    to the kernel after each batch: a worker that builds big arrays then stops faulting the
    same pages in again and again (measured: about 2× the throughput for image batches).
    Elsewhere than glibc, nothing changes."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 128 << 20)


def locate(frame: FrameType | None, the_plan: Plan) -> tuple[str, Any]:
    """Which stage and element a worker is busy with, read off its stack: ``(stage, key)``."""
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    for depth, f in enumerate(frames):  # innermost first
        code, local = f.f_code, f.f_locals
        inner = frames[depth - 1].f_code if depth else None
        if code is apply_ops.__code__:
            return repr(local.get("stage")), local.get("key")
        if code is Plan._fused_partial.__code__:
            units, out = local.get("units"), local.get("out")
            key = units[len(out)] if units is not None and out is not None else None
            return the_plan.stage_running(inner), key
        if code is Plan.numbered_outputs.__code__:
            if "rest" in local and "done" in local:
                return the_plan.stage_running(inner), local["rest"][local["done"]]
            if "stage" in local and "index" in local:
                return repr(local["stage"]), local["index"]
    return "unknown", None


class _Watchdog:
    """Reports a task that runs past ``timeout`` seconds, then ends the worker."""

    def __init__(self, timeout: float, report: Any, the_plan: Plan) -> None:
        self.timeout = timeout
        self.report = report
        self.plan = the_plan
        self.current: tuple[float, int, int] | None = None  # (start, epoch id, seq)
        self.thread_id = threading.get_ident()
        threading.Thread(target=self._watch, daemon=True, name="datapipes-watchdog").start()

    def _watch(self) -> None:
        period = min(0.25, self.timeout / 4)
        while True:
            time.sleep(period)
            current = self.current
            if current is None or time.monotonic() - current[0] < self.timeout:
                continue
            frame = sys._current_frames().get(self.thread_id)
            stage, key = locate(frame, self.plan)
            self.report(("timeout", current[1], current[2], (stage, key, self.timeout)))
            os._exit(3)


def adopt_main_names() -> None:
    """Make the main module's functions and classes that came with the plan findable as
    ``__main__.x`` in this worker, which did not fork from the main process.

    They came by value (cloudpickle), each function with the globals it uses. A result
    holding an instance of the main module's class ``Rec`` is pickled by reference,
    ``__main__.Rec``, which must name the class the worker made it with (not a class of
    the same name from running the main module again, as forkserver workers do); the main
    process then reads it back as its own ``Rec``.
    """
    main = sys.modules["__main__"].__dict__
    for obj in gc.get_objects():
        if isinstance(obj, FunctionType):
            if obj.__module__ == "__main__" and obj.__globals__ is not main:
                main.update((k, v) for k, v in obj.__globals__.items() if k[:2] != "__")
        elif isinstance(obj, type) and obj.__module__ == "__main__" and "." not in obj.__qualname__:
            main[obj.__qualname__] = obj


def spawned_main(task_fd: int, result_fd: int) -> None:
    """The body of a worker started as a fresh interpreter (see ``pools.SpawnedProcess``):
    its first message says what to run."""
    tasks = transport.Channel(socket.socket(fileno=task_fd))
    results = transport.Channel(socket.socket(fileno=result_fd))
    data, _ = tasks.recv()
    plan_bytes, parent, worker, timeout, keep_chunks = pickle.loads(data)
    process_main(plan_bytes, tasks, results, parent, worker, timeout, [], keep_chunks)


def process_main(
    plan_or_bytes: Any,
    tasks: transport.Channel,
    results: transport.Channel,
    parent: int,
    worker: int,
    timeout: float | None,
    inherited: list[int],
    keep_chunks: int,
) -> None:
    """The body of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held since the fork
    keep_freed_memory()
    for fd in inherited:  # forked copies of other channels' main-side ends
        with contextlib.suppress(OSError):
            os.close(fd)
    MAIN_SIDE_FDS.clear()
    the_plan: Plan = (
        cloudpickle.loads(plan_or_bytes) if isinstance(plan_or_bytes, bytes) else plan_or_bytes
    )
    if isinstance(plan_or_bytes, bytes) and b"__main__" in plan_or_bytes:
        adopt_main_names()
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cancelled = [-1]  # tasks of epoch ids up to this are dropped unrun
    send_lock = threading.Lock()

    def send(message: Any, data: bytes | None = None, fds: list[int] = ()) -> None:  # type: ignore[assignment]
        with send_lock:
            results.send(pickle.dumps(message) if data is None else data, fds)

    def receive() -> None:
        # Always drain the task socket, so the main process never blocks sending to us.
        try:
            while True:
                data, _ = tasks.recv()
                message = pickle.loads(data)
                if message[0] == "cancel":
                    cancelled[0] = max(cancelled[0], message[1])
                elif message[0] == "free":
                    chunks.returned(message[1])  # chunk ids
                elif message[0] == "stop":
                    break
                else:
                    inbox.put(message)
        except Exception:  # EOF, a closed socket, or a message that does not read
            if os.getppid() != parent:
                os._exit(0)  # the main process is gone and cannot take results any more
        inbox.put(None)

    meters = [meter for _, meter in the_plan.meters()]
    for meter in meters:
        meter.take()  # a forked copy holds the main process's counts: start from zero
    chunks = transport.ChunkPool(keep=keep_chunks)
    threading.Thread(target=receive, daemon=True, name="datapipes-receive").start()
    watchdog = _Watchdog(timeout, send, the_plan) if timeout is not None else None
    seeded: tuple[int, int, bool] | None = None
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                break  # the main process is gone
            continue
        if message is None:
            break
        _, epoch_id, seq, seed, epoch, skip, kind, payload = message
        if epoch_id <= cancelled[0]:
            send(("dropped", epoch_id, seq, None))
            continue
        # torch may arrive with a user's function (a worker does not import it otherwise)
        now = (seed, epoch, "torch" in sys.modules)
        if seeded != now:
            seed_globals(seed, epoch, worker, only_torch=seeded is not None and
                         seeded[:2] == now[:2])
            seeded = now
        arena = transport.Arena(chunks)
        if watchdog is not None:
            watchdog.current = (time.monotonic(), epoch_id, seq)
        started = time.perf_counter()
        try:
            with transport.collating_into(arena, tensors_as_arrays=the_plan.collates_last):
                result = run_task(the_plan, EpochContext(seed, epoch, skip=skip), kind, payload)
            items, skipped, error = result
            described = None if error is None else describe_error(error)
            body = transport.dumps((items, [_portable(s) for s in skipped], described), arena)
            del items, result, skipped, error
            # with the task's seconds and, with compile(stats=True), its stages' counts
            counts = [meter.take() for meter in meters]
            data = pickle.dumps(
                ("ok", epoch_id, seq,
                 (arena.sizes(), body, time.perf_counter() - started, counts)),
                protocol=5,
            )
            del body
        except Exception as exc:
            arena.release()
            data = pickle.dumps(("error", epoch_id, seq, describe_error(exc)))
        finally:
            if watchdog is not None:
                watchdog.current = None
        try:
            send(None, data, arena.fds)
        except OSError:
            break  # the main process closed our channel
        finally:
            del data
        arena.sent()
