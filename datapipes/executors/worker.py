"""What runs inside a worker: take tasks, run the plan's segment, send results back.

The same function serves both backends: a thread worker calls :func:`run_task` directly;
a process worker runs :func:`process_main`, which adds the socket protocol, shared memory,
the watch on its parent and the task timeout.

Protocol. A task is a :class:`~.protocol.Task` record (kind ``"batch"``, payload ``(b,
units)``, or ``"units"``, payload: units). Control messages are
``("cancel", epoch id)``, ``("free", chunk ids)`` (shared memory the main process let go of)
and ``("stop",)``. What crosses the socket back is ``(kind, epoch id, seq, payload)``, which
the pool turns into a :class:`~.protocol.Reply`:
``"ok"`` (payload: shared-memory sizes, pickled ``(items, skipped)``), ``"error"`` (a
described exception), ``"dropped"`` (a cancelled task), ``"timeout"`` (where it hung) or
``"broken"`` (why the worker cannot go on, its last words before it exits: the pipe it
was sent does not load, or a task does not read).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import queue
import random
import select
import signal
import socket
import sys
import threading
import time
import traceback
from types import FrameType, FunctionType
from typing import Any, NoReturn

import cloudpickle
import numpy as np

from .._graph import EpochContext, Skipped
from ..errors import StageError
from ..plan import Plan
from ..stages._kernel import FLAT, MAP, RNG_MAP
from ..stages.collate import tensor_type
from . import segment, transport
from .protocol import Task

#: main-side fds of every live process pool: a forked worker closes its copies at once, so
#: that a worker never keeps another worker's (or loader's) socket open
MAIN_SIDE_FDS: set[int] = set()
#: the most characters of a message that datapipes copies into a note or a traceback it
#: adds: a 50 MB message is kept whole by its exception, not repeated in every note
NOTE_CHARS = 4096
#: how often a worker process checks that the main process is still there (seconds)
PARENT_CHECK = 0.5
#: the last lines of a worker's traceback that a ``WorkerError`` quotes
TRACEBACK_LINES = 12


def shorten(text: str, limit: int = NOTE_CHARS) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} characters cut)"


def run_task(
    the_plan: Plan, ctx: EpochContext, kind: str, payload: Any
) -> tuple[list[list[Any]], list[Skipped], BaseException | None]:
    """A task's outputs ``(key, value)``, one list per unit, the elements it skipped, and
    the error that stopped it (the outputs before an error still count; any
    ``BaseException`` of the user's code, ``sys.exit()`` and ``KeyboardInterrupt`` too)."""
    per_unit, error = segment.task_outputs(the_plan, kind, payload, ctx)
    return per_unit, ctx.skipped, error


def describe_error(exc: BaseException) -> tuple[bytes | None, str, str, str, list[str]]:
    """An exception as it can cross a process boundary: pickled if it can be, always its
    type name, message, the worker's formatted traceback and its notes.

    The traceback and the notes become notes in the main process: each part is shortened
    (``NOTE_CHARS``). The message is whole when it is all there is (the exception does not
    pickle); a pickled exception carries its own."""
    notes = getattr(exc, "__notes__", None)
    if notes is not None:  # they travel with the exception itself: not twice
        del exc.__notes__
    try:
        text = "".join(shorten(part) for part in traceback.format_exception(exc))
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
    message = str(exc)
    return (pickled, type(exc).__qualname__, message if pickled is None else shorten(message),
            text, [shorten(str(note)) for note in notes or ()])


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


def locate(frame: FrameType | None, the_plan: Plan, ctx: EpochContext) -> tuple[str, Any]:
    """Which stage and element a task running with ``ctx`` is busy with: ``(stage, key)``,
    from the slot the segment keeps up to date (``EpochContext.stage``, ``.key``,
    ``.progress``); the code objects on the thread's stack tell which of several fused
    functions runs."""
    codes = []
    while frame is not None:
        codes.append(frame.f_code)
        frame = frame.f_back
    return segment.running_at(the_plan, ctx, codes)


class _Watchdog:
    """Reports a task that runs past ``timeout`` seconds, then ends the worker."""

    def __init__(self, timeout: float, report: Any, the_plan: Plan) -> None:
        self.timeout = timeout
        self.report = report
        self.plan = the_plan
        #: the task running: (its start, epoch id, seq, its context)
        self.current: tuple[float, int, int, EpochContext] | None = None
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
            stage, key = locate(frame, self.plan, current[3])
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


def spawned_main(task_fd: int, result_fd: int, tied: bool = False) -> None:
    """The body of a worker started as a fresh interpreter (see ``pools.SpawnedProcess``):
    its first message says what to run."""
    if tied:
        die_with_parent(os.getppid())
    tasks = transport.Channel(socket.socket(fileno=task_fd))
    results = transport.Channel(socket.socket(fileno=result_fd))
    data, _ = tasks.recv()
    plan_bytes, parent, worker, timeout, keep_chunks = pickle.loads(data)
    process_main(plan_bytes, tasks, results, parent, worker, timeout, [], keep_chunks)


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process with SIGKILL when the thread that started it ends
    (Linux's ``PR_SET_PDEATHSIG``): also while the user's code holds the GIL, when
    :func:`watch_parent`'s thread cannot run. Only for a worker started from the main
    thread, which lasts as long as the main process: one started from another thread would
    die with that thread."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return
    pr_set_pdeathsig = 1
    prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # it ended before we asked
        os._exit(0)


def watch_parent(parent: int) -> None:
    """End this worker within ``PARENT_CHECK`` seconds of the main process's death, busy or
    idle: nothing it computes can be delivered any more, and a task may run for minutes.

    A thread waits on the main process's pidfd (Linux 5.3+; it also serves forkserver
    workers, whose parent is the fork server) and, where the main process is the parent,
    checks the parent pid. The task socket's end of input tells the receiving thread too,
    unless another process holds a copy of the main process's end (a child it forked)."""
    child = os.getppid() == parent
    pidfd = -1
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(0)  # already gone
    except (AttributeError, OSError):
        pass
    if pidfd < 0 and not child:
        return  # nothing to watch but the task socket
    poller = select.poll()  # (not select: a forked worker's fds may be past FD_SETSIZE)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited

    def watch() -> None:
        while not (poller.poll(PARENT_CHECK * 1000) or (child and os.getppid() != parent)):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="datapipes-parent-watch").start()


def one_torch_thread() -> None:
    """Have torch run its ops on one thread in this worker, as DataLoader's workers do: the
    workers already run in parallel, and a forked worker inherits the main process's OpenMP
    pool without its threads, so its first parallel op would wait for them forever."""
    sys.modules["torch"].set_num_threads(1)


def report_broken(send: Any, what: str, exc: BaseException, hint: str = "") -> NoReturn:
    """Tell the main process why this worker cannot go on (its ``WorkerError`` quotes it),
    then end."""
    lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()[-TRACEBACK_LINES:]
    text = (
        f"{what}: {type(exc).__qualname__}: {shorten(str(exc))}{hint}\n"
        "worker traceback (last lines):\n" + "\n".join(shorten(line) for line in lines)
    )
    with contextlib.suppress(OSError):
        send(("broken", -1, -1, text))
    os._exit(1)


_LOAD_HINT = (
    "; a worker started by spawn or forkserver imports the pipe's functions and classes by "
    "module and name: each must import there, from this process's sys.path, without error "
    "(else define it in the main script, or use start_method='fork' or backend='thread')"
)


# -- results that do not pickle ---------------------------------------------------------------
class _Nowhere:
    """A file that keeps nothing: for pickling only to see whether it works."""

    def write(self, data: Any) -> int:
        return len(data)


class _Probe(pickle.Pickler):
    """Pickles into nothing, arrays and tensors taken as they are (shared memory carries
    them): whether an object can be sent, at little cost."""

    def __init__(self) -> None:
        super().__init__(_Nowhere(), protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[arg-type]
        self.tensor = tensor_type()

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if (kind is np.ndarray and not obj.dtype.hasobject) or (
            self.tensor is not None and kind is self.tensor
        ):
            return 0
        return None


def pickling_error(obj: Any) -> Exception | None:
    """Why ``obj`` cannot be sent to the main process, or None when it can."""
    try:
        _Probe().dump(obj)
    except Exception as exc:
        return exc
    return None


def _last_maker(ops: Any) -> Any:
    """The last stage in ``ops`` that makes values (a filter or enumerate passes on what an
    earlier one made), or None."""
    return next((stage for kind, _, stage, _ in reversed(ops) if kind in (MAP, RNG_MAP, FLAT)),
                None)


def _made_by(the_plan: Plan, kind: str, payload: Any, key: Any, value: Any) -> tuple[Any, Any]:
    """The stage that made an output of a task, and the key to name: for a batch that is a
    list, the member that does not pickle and its own key."""
    element_stage = _last_maker(the_plan.element_ops) or the_plan.source
    if kind != segment.TASK_BATCH:
        return element_stage, key
    batch_stage = _last_maker(the_plan.batch_ops)
    if batch_stage is None and isinstance(value, list):
        units = payload[1]
        for member, unit in zip(value, units, strict=False):
            if pickling_error(member) is not None:
                one = the_plan.random_access and not the_plan.has_positions
                return element_stage, unit if one else unit[0]
    return batch_stage or the_plan.batch, key


def unsendable_error(output: Any, problem: Exception, stage: Any, key: Any) -> Exception:
    """The error for an output that cannot be sent to the main process: the transport's own
    where it explains the case itself (a ``ValueError``: nested too deeply), else a
    ``StageError`` that says why and what to do; noted with where it was made."""
    scratch = transport.Arena()
    exc: Exception | None = None
    try:
        transport.dumps(output, scratch)
    except ValueError as own:
        exc = own
    except Exception:
        pass
    finally:
        scratch.release()
    if exc is None:
        exc = StageError(
            f"the result of stage {stage!r} on the element with key {key!r} cannot be sent "
            f"from the worker process to the main process: {type(problem).__qualname__}: "
            f"{shorten(str(problem))}. Worker processes pickle what they send (the in-process "
            "reference does not): return something that pickles (a list instead of a "
            "generator, data instead of an open file or a lock), or use backend='thread'"
        )
    exc.add_note(f"datapipes: raised in stage {stage!r} on the element with key {key!r}")
    exc.__datapipes_located__ = True  # type: ignore[attr-defined]
    return exc


def drop_unsendable(
    items: list[list[Any]], skipped: list[Skipped], error: BaseException | None,
    the_plan: Plan, kind: str, payload: Any, skip: bool,
) -> tuple[list[list[Any]], list[Skipped], BaseException | None] | None:
    """A task's outputs when some do not pickle: those before the first such output and an
    error naming it, as if its stage had raised; under ``skip``, every output but those,
    which are recorded as skipped. None when each output pickles (the failure is elsewhere)."""
    found = False
    kept_units: list[list[Any]] = []
    for outputs in items:
        kept = []
        for key, value in outputs:
            problem = pickling_error((key, value))
            if problem is None:
                kept.append((key, value))
                continue
            found = True
            stage, named = _made_by(the_plan, kind, payload, key, value)
            exc = unsendable_error((key, value), problem, stage, named)
            if not skip:
                return [*kept_units, kept], skipped, exc
            skipped.append(Skipped(repr(stage), named, type(exc).__qualname__, str(exc), exc))
        kept_units.append(kept)
    return (kept_units, skipped, error) if found else None


def result_body(
    items: list[list[Any]], skipped: list[Skipped], error: BaseException | None,
    the_plan: Plan, arena: transport.Arena, kind: str, payload: Any, skip: bool,
) -> bytes:
    """A task's outputs pickled for the main process, their arrays in ``arena``. An output
    that does not pickle ends them as an error of its stage would (under ``skip``, it is
    skipped)."""
    sendable = [_portable(s) for s in skipped]
    described = None if error is None else describe_error(error)
    try:
        return transport.dumps((items, sendable, described), arena)
    except Exception:
        fixed = drop_unsendable(items, sendable, error, the_plan, kind, payload, skip)
        if fixed is None:
            raise  # not an output's fault (shared memory, ...)
    items, sendable, unsendable = fixed
    if unsendable is not error:
        described = None if unsendable is None else describe_error(unsendable)
    return transport.dumps((items, sendable, described), arena)


def task_reply(
    the_plan: Plan, task: Task, ctx: EpochContext, arena: transport.Arena, meters: list[Any]
) -> bytes:
    """The pickled reply to a task run with ``ctx``: ``"ok"`` with its outputs (and the
    error that ended them, if one did), or ``"error"`` for a failure outside the user's
    code."""
    epoch_id, seq = task.epoch_id, task.seq
    skip, kind, payload = task.skip, task.kind, task.payload
    started = time.perf_counter()
    try:
        with transport.collating_into(arena, tensors_as_arrays=the_plan.collates_last):
            items, skipped, error = run_task(the_plan, ctx, kind, payload)
        body = result_body(items, skipped, error, the_plan, arena, kind, payload, skip)
        del items, skipped, error
        # with the task's seconds and, with compile(stats=True), its stages' counts
        counts = [meter.take() for meter in meters]
        return pickle.dumps(
            ("ok", epoch_id, seq, (arena.sizes(), body, time.perf_counter() - started, counts)),
            protocol=5,
        )
    except BaseException as exc:
        arena.release()
        return pickle.dumps(("error", epoch_id, seq, describe_error(exc)))


def prepare_globals(
    seeded: tuple[int, int, bool] | None, seed: int, epoch: int, worker: int
) -> tuple[int, int, bool]:
    """Seed the global generators for a task of ``(seed, epoch)`` unless they are; once
    torch is here, seed it too and run it on one thread. (Torch may arrive with a user's
    function: a worker does not import it otherwise.) What is now seeded."""
    now = (seed, epoch, "torch" in sys.modules)
    if seeded != now:
        if now[2] and not (seeded is not None and seeded[2]):
            one_torch_thread()
        seed_globals(seed, epoch, worker, only_torch=seeded is not None and
                     seeded[:2] == now[:2])
    return now


class Inbox:
    """The tasks the main process sends, read on a thread of their own so that the task
    socket is always drained (the main process never blocks sending to us); control
    messages take effect as they arrive."""

    def __init__(self, tasks: transport.Channel, chunks: transport.ChunkPool, send: Any) -> None:
        self.tasks, self.chunks, self.send = tasks, chunks, send
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cancelled = -1  # tasks of epoch ids up to this are dropped unrun
        self.stopped = threading.Event()  # told to stop: queued tasks are dropped, unanswered
        threading.Thread(target=self._receive, daemon=True, name="datapipes-receive").start()

    def get(self) -> Any:
        """The next task, or None once the worker is to stop."""
        message = self.queue.get()
        return None if self.stopped.is_set() else message

    def _receive(self) -> None:
        try:
            while True:
                data, _ = self.tasks.recv()
                message = pickle.loads(data)
                if isinstance(message, Task):
                    self.queue.put(message)
                elif message[0] == "cancel":
                    self.cancelled = max(self.cancelled, message[1])
                elif message[0] == "free":
                    self.chunks.returned(message[1])  # chunk ids
                elif message[0] == "stop":  # (then the socket closes: read on to see it)
                    self.stopped.set()
                    self.queue.put(None)
        except (EOFError, OSError):
            # The main process is gone, or closed our channel (after a stop, once it gave
            # up waiting for us): nothing this worker makes can be delivered any more.
            os._exit(0)
        except BaseException as exc:  # a message that does not read here
            report_broken(self.send, "could not read a task from the main process", exc)


def load_plan(plan_or_bytes: Any, send: Any) -> Plan:
    """The plan a worker runs: as it came (fork), or unpickled; if it cannot be, the
    worker says why and ends."""
    if not isinstance(plan_or_bytes, bytes):
        return plan_or_bytes  # type: ignore[no-any-return]
    try:
        the_plan: Plan = cloudpickle.loads(plan_or_bytes)
        if b"__main__" in plan_or_bytes:
            adopt_main_names()
    except BaseException as exc:  # a module that is not there, or raises on import, ...
        report_broken(send, "could not load the pipe it was sent", exc, _LOAD_HINT)
    return the_plan


def process_main(
    plan_or_bytes: Any,
    tasks: transport.Channel,
    results: transport.Channel,
    parent: int,
    worker: int,
    timeout: float | None,
    inherited: list[int],
    keep_chunks: int,
    tied: bool = False,
) -> None:
    """The body of a worker process. ``tied``: it dies with the thread that started it
    (see :func:`die_with_parent`)."""
    if tied:
        die_with_parent(parent)
    watch_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held since the fork
    keep_freed_memory()
    for fd in inherited:  # forked copies of other channels' main-side ends
        with contextlib.suppress(OSError):
            os.close(fd)
    MAIN_SIDE_FDS.clear()
    send_lock = threading.Lock()

    def send(message: Any, data: bytes | None = None, fds: list[int] = ()) -> None:  # type: ignore[assignment]
        with send_lock:
            results.send(pickle.dumps(message) if data is None else data, fds)

    the_plan = load_plan(plan_or_bytes, send)
    meters = [meter for _, meter in the_plan.meters()]
    for meter in meters:
        meter.take()  # a forked copy holds the main process's counts: start from zero
    chunks = transport.ChunkPool(keep=keep_chunks)
    inbox = Inbox(tasks, chunks, send)
    watchdog = _Watchdog(timeout, send, the_plan) if timeout is not None else None
    seeded: tuple[int, int, bool] | None = None
    while (task := inbox.get()) is not None:
        epoch_id, seq = task.epoch_id, task.seq
        if epoch_id <= inbox.cancelled:
            send(("dropped", epoch_id, seq, None))
            continue
        seeded = prepare_globals(seeded, task.seed, task.epoch, worker)
        arena = transport.Arena(chunks)
        ctx = EpochContext(task.seed, task.epoch, skip=task.skip)
        if watchdog is not None:
            watchdog.current = (time.monotonic(), epoch_id, seq, ctx)
        try:
            data = task_reply(the_plan, task, ctx, arena, meters)
        finally:
            if watchdog is not None:
                watchdog.current = None
        if inbox.stopped.is_set():
            break  # no one waits for it: close() is ending this worker
        try:
            send(None, data, arena.fds)
        except OSError:
            break  # the main process closed our channel
        finally:
            del data
        arena.sent()
