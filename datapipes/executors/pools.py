"""The built-in backends: worker processes and worker threads, each a
:class:`~datapipes.executors.protocol.Pool` (registered as ``"process"`` and ``"thread"``).

A pool starts its workers once and keeps them across epochs. The Loader sends each
:class:`Task` to one worker (``send``), collects :class:`Reply` records (``poll``) and says
when an epoch's remaining tasks are no longer wanted (``cancel``). A dead, hung or
timed-out worker raises :class:`WorkerError` from ``poll``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import mmap
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from .._graph import EpochContext
from ..errors import WorkerError
from . import transport
from .protocol import PoolSpec, Reply, Task
from .worker import MAIN_SIDE_FDS, locate, process_main, run_task

_JOIN_SECONDS = 5.0
#: how long past its timeout a process worker may stay silent before the main process
#: gives up on it (its own watchdog normally reports first)
_TIMEOUT_GRACE = 2.0
#: more for a worker that has not answered yet: its start-up (a spawned worker imports the
#: pipe's modules) is not its task's time
_START_GRACE = 30.0


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back in this thread (the mask is inherited by a child started meanwhile)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by signal {-exitcode} ({name})"
    return f"exited with code {exitcode}"


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let multiprocessing start a worker from a daemonic process (a loader inside a
    ``Process(daemon=True)``, or inside another loader's worker). It refuses because a
    daemonic process is killed at its parent's exit and would leave its children behind;
    our workers do not stay behind: they end by themselves when their parent is gone."""
    config = getattr(mp.process.current_process(), "_config", {})
    daemon = config.pop("daemon", None)
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon


def _timeout_error(worker: int, who: str, report: tuple[str, Any, float]) -> WorkerError:
    stage, key, seconds = report
    return WorkerError(
        f"worker {worker} ({who}) took longer than timeout={seconds} s on one task: it was "
        f"in stage {stage} on the element with key {key!r}"
    )


class SpawnedProcess:
    """A worker process started as a fresh interpreter that runs datapipes' worker and
    nothing else, with ``multiprocessing.Process``'s interface as far as the pool uses it.

    Unlike multiprocessing's spawn it does not run the main module again: the pipe comes
    by cloudpickle, the main module's functions by value, so a worker imports only what the
    pipe needs (no torch when the pipe needs none: that import is most of a spawned
    worker's start-up) and a script needs no ``if __name__ == "__main__"`` guard for it.
    """

    def __init__(self, channel_fds: tuple[int, int], tied: bool = False) -> None:
        self.channel_fds = channel_fds
        self.tied = tied  # it dies with this thread (see worker.die_with_parent)
        self.popen: subprocess.Popen[bytes] | None = None
        self.sentinel = -1  # readable (at EOF) once the process has exited

    def start(self) -> None:
        # the worker sees this process's sys.path, so it imports what this process would
        path = [os.fspath(p) for p in sys.path if isinstance(p, (str, os.PathLike))]
        code = (
            f"import sys; sys.path[:] = {path!r}; "
            "from datapipes.executors.worker import spawned_main; "
            f"spawned_main({self.channel_fds[0]}, {self.channel_fds[1]}, {self.tied})"
        )
        sentinel, held = os.pipe()  # the worker holds `held` open until it ends
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(*self.channel_fds, held)
            )
        except BaseException:
            os.close(sentinel)
            raise
        finally:
            os.close(held)
        self.sentinel = sentinel

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen is not None:
            self.popen.kill()

    def close(self) -> None:
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


class ProcessPool:
    """Worker processes, each with a task socket and a result socket."""

    def __init__(self, spec: PoolSpec) -> None:
        the_plan, workers, timeout, prefetch = spec.plan, spec.workers, spec.timeout, spec.prefetch
        ctx: Any = mp.get_context(spec.start_method)
        self.start_method = ctx.get_start_method()
        if self.start_method == "forkserver":
            # The fork server imports datapipes (and torch, when this process uses it) once;
            # each worker forked from it then starts without importing them (no effect once
            # the server runs).
            ctx.set_forkserver_preload(["datapipes", *(["torch"] if "torch" in sys.modules
                                                       else [])])
        self.timeout = timeout
        payload: Any = the_plan if self.start_method == "fork" else transport.dumps_plan(the_plan)
        spawned: list[tuple[transport.Channel, tuple[Any, ...]]] = []
        self.procs: list[Any] = []
        self.tasks: list[transport.Channel] = []
        self.results: list[transport.Channel] = []
        self._busy_since: list[float | None] = []  # when the oldest unanswered task was sent
        self._answered = [False] * workers  # (see _START_GRACE)
        self._locks = [threading.Lock() for _ in range(workers)]
        #: seconds each worker spent on tasks; bytes received through shared memory; the
        #: main process's meters, to which the workers' counts are added (``loader.stats()``)
        self.busy = [0.0] * workers
        self.shared_bytes = 0
        self.meters = [meter for _, meter in the_plan.meters()]
        # shared memory of delivered results: (worker, chunk id) by a weak reference to its
        # map, and the references whose maps are gone
        self._lent: dict[weakref.ref[mmap.mmap], tuple[int, int]] = {}
        self._freed: collections.deque[weakref.ref[mmap.mmap]] = collections.deque()
        self._closed = False
        # Workers started from the main thread also die with it, through the kernel (it
        # lasts as long as this process); a fork server's children are not ours.
        tied = (threading.current_thread() is threading.main_thread()
                and self.start_method != "forkserver")
        try:
            for w in range(workers):
                task_main, task_worker = transport.channel_pair()
                result_worker, result_main = transport.channel_pair()
                MAIN_SIDE_FDS.update((task_main.fileno(), result_main.fileno()))
                inherited = sorted(MAIN_SIDE_FDS) if self.start_method == "fork" else []
                args = (payload, task_worker, result_worker, os.getpid(), w, timeout,
                        inherited, prefetch + 2, tied)
                proc: Any
                if self.start_method == "spawn" and sys.executable:  # (else: embedded Python)
                    proc = SpawnedProcess((task_worker.fileno(), result_worker.fileno()), tied)
                    # told what to run once all have started: they start up side by side
                    spawned.append((task_main, (payload, os.getpid(), w, timeout, prefetch + 2)))
                else:
                    proc = ctx.Process(
                        target=process_main, args=args, daemon=True, name="datapipes-worker"
                    )
                self.tasks.append(task_main)
                self.results.append(result_main)
                # the worker starts with Ctrl-C held until it ignores it
                with _sigint_held(), _children_allowed():
                    proc.start()
                task_worker.close()
                result_worker.close()
                self.procs.append(proc)
                self._busy_since.append(None)
            for w, (channel, start) in enumerate(spawned):
                try:
                    channel.send(pickle.dumps(start, protocol=5))
                except OSError:
                    self._raise_dead(w)  # it could not even start
        except BaseException:
            self.close()
            raise
        self._by_fd = {ch.fileno(): w for w, ch in enumerate(self.results)}
        self._sentinels = {p.sentinel: w for w, p in enumerate(self.procs)}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _send(self, worker: int, message: Task | tuple[Any, ...]) -> None:
        # close() and cancel() may come from another thread (a loader's finalizer)
        with self._locks[worker]:
            self.tasks[worker].send(pickle.dumps(message, protocol=5))

    def send(self, worker: int, message: Task) -> None:
        if self._closed:
            raise RuntimeError("this Loader is closed")
        self._send_freed()
        try:
            self._send(worker, message)
        except OSError:
            self._raise_dead(worker)
        if self._busy_since[worker] is None:
            self._busy_since[worker] = time.monotonic()

    def cancel(self, epoch_id: int) -> None:
        for w in range(len(self.tasks)):
            with contextlib.suppress(OSError):
                self._send(w, ("cancel", epoch_id))

    def _lend(self, worker: int, chunk_id: int, shared: mmap.mmap) -> None:
        """Watch a delivered result's shared memory: once nothing refers to it, the worker
        may write it again. The watch is a weak reference whose callback is a C function
        (``deque.append``): no Python code runs where the user drops a batch, so a Ctrl-C
        arriving then cannot be lost in a finalizer, nor can a send start in the middle of
        another. The next ``send`` or ``poll`` tells the worker."""
        self._lent[weakref.ref(shared, self._freed.append)] = (worker, chunk_id)

    def _send_freed(self) -> None:
        freed: dict[int, list[int]] = {}
        while self._freed:
            worker, chunk_id = self._lent.pop(self._freed.popleft())
            freed.setdefault(worker, []).append(chunk_id)
        for worker, chunk_ids in freed.items():
            self._give_back(worker, chunk_ids)

    def _give_back(self, worker: int, chunk_ids: list[int]) -> None:
        with contextlib.suppress(OSError):
            self._send(worker, ("free", chunk_ids))

    def poll(self, epoch_id: int, timeout: float, outstanding: list[int]) -> list[Reply]:
        """Replies that arrived within ``timeout`` seconds; results of other epochs are not
        mapped, only released."""
        self._send_freed()
        ready: list[Any] = mp.connection.wait(
            [*self.results, *self._sentinels], timeout  # type: ignore[list-item]
        )
        replies: list[Reply] = []
        dead: list[int] = []
        for obj in ready:
            if isinstance(obj, int):
                dead.append(self._sentinels[obj])
                continue
            w = self._by_fd[obj.fileno()]
            try:
                data, fds = obj.recv()
            except (EOFError, OSError):
                dead.append(w)
                continue
            kind, eid, seq, payload = pickle.loads(data)
            if kind == "timeout":
                raise _timeout_error(w, f"pid {self.procs[w].pid}", payload)
            if kind == "broken":
                raise WorkerError(f"worker {w} (pid {self.procs[w].pid}) {payload}")
            if kind == "ok":
                sizes, body, busy, counts = payload
                self.busy[w] += busy
                self.shared_bytes += sum(size for _, size in sizes)
                for meter, taken in zip(self.meters, counts, strict=True):
                    meter.add(taken)
                if eid == epoch_id:
                    payload = transport.loads(body, fds, sizes, functools.partial(self._lend, w))
                else:
                    transport.close_fds(fds)
                    self._give_back(w, [chunk_id for chunk_id, _ in sizes])  # never mapped
                    payload = None
            # the next task in this worker's queue starts now
            self._busy_since[w] = time.monotonic() if outstanding[w] > 1 else None
            self._answered[w] = True
            replies.append(Reply(w, kind, eid, seq, payload))
        if dead and not replies:
            self._raise_dead(dead[0])
        self._check_silent()
        return replies

    def _last_words(self, worker: int) -> str | None:
        """Why a worker that ended said it could not go on, if it did (it was found dead
        before its last message was read)."""
        channel = self.results[worker]
        with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):
            while mp.connection.wait([channel], 0):  # type: ignore[list-item]
                data, fds = channel.recv()
                transport.close_fds(fds)  # a result of a broken pool: never mapped
                kind, _, _, payload = pickle.loads(data)
                if kind == "broken":
                    return str(payload)
        return None

    def _check_silent(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for w, since in enumerate(self._busy_since):
            grace = _TIMEOUT_GRACE if self._answered[w] else _START_GRACE
            if since is not None and now - since > self.timeout + grace:
                raise _timeout_error(
                    w, f"pid {self.procs[w].pid}, which stopped answering", ("unknown", None,
                                                                             self.timeout)
                )

    def _raise_dead(self, worker: int) -> None:
        proc = self.procs[worker]
        said = self._last_words(worker)
        if said is not None:
            raise WorkerError(f"worker {worker} (pid {proc.pid}) {said}")
        proc.join(0.5)
        raise WorkerError(
            f"worker {worker} (pid {proc.pid}) {_exit_reason(proc.exitcode)}; the epoch "
            "cannot be completed"
        )

    def close(self, *, broken: bool = False) -> None:
        """Stop the workers: asked to, with up to 5 s to finish their task, or at once when
        the pool is ``broken`` (a worker died or hung: the rest of its work is lost anyway)."""
        if self._closed:
            return
        self._closed = True
        for w in range(len(self.tasks)):
            with contextlib.suppress(OSError):
                self._send(w, ("stop",))
        deadline = time.monotonic() + (0.0 if broken else _JOIN_SECONDS)
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_SECONDS)
        for ch in (*self.tasks, *self.results):
            MAIN_SIDE_FDS.discard(ch.fileno())
            ch.close()
        for proc in self.procs:
            proc.close()


class ThreadPool:
    """Worker threads in this process: no transport, for work that releases the GIL.

    A thread cannot be killed: on a timeout the pool reports where the thread is stuck and
    is abandoned (its daemon thread ends when its task does).
    """

    def __init__(self, spec: PoolSpec) -> None:
        the_plan, workers, timeout = spec.plan, spec.workers, spec.timeout
        self.plan = the_plan
        self.timeout = timeout
        self.inboxes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(workers)]
        self.replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self.cancelled = -1
        self.busy = [0.0] * workers  # seconds each thread spent on tasks
        self.shared_bytes = 0  # none: threads share this process's memory
        self.started: list[float | None] = [None] * workers
        self.contexts = [EpochContext(0, 0) for _ in range(workers)]
        self.hung: set[int] = set()  # timed-out threads: abandoned, never joined
        self.threads = [
            threading.Thread(target=self._work, args=(w,), daemon=True, name="datapipes-worker")
            for w in range(workers)
        ]
        for t in self.threads:
            t.start()

    @property
    def pids(self) -> list[int]:
        return []

    def _work(self, w: int) -> None:
        inbox = self.inboxes[w]
        while (task := inbox.get()) is not None:
            eid, seq = task.epoch_id, task.seq
            if eid <= self.cancelled:
                self.replies.put(Reply(w, "dropped", eid, seq, None))
                continue
            ctx = EpochContext(task.seed, task.epoch, skip=task.skip)
            self.contexts[w] = ctx  # where a timeout finds what it is doing
            self.started[w] = started = time.monotonic()
            try:
                # (the user's code may raise any BaseException: run_task returns it)
                result = run_task(self.plan, ctx, task.kind, task.payload)
            except BaseException as exc:  # not the user's code: the outputs are lost
                self.replies.put(Reply(w, "error", eid, seq, exc))
            else:
                self.busy[w] += time.monotonic() - started
                self.replies.put(Reply(w, "ok", eid, seq, result))
            finally:
                self.started[w] = None
            del task

    def send(self, worker: int, message: Task) -> None:
        self.inboxes[worker].put(message)

    def cancel(self, epoch_id: int) -> None:
        self.cancelled = max(self.cancelled, epoch_id)

    def poll(self, epoch_id: int, timeout: float, outstanding: list[int]) -> list[Reply]:
        if self.timeout is not None:
            timeout = min(timeout, self.timeout / 4)
        try:
            replies = [self.replies.get(timeout=timeout)]
        except queue.Empty:
            self._check_timeouts()
            return []
        while True:
            try:
                replies.append(self.replies.get_nowait())
            except queue.Empty:
                return replies

    def _check_timeouts(self) -> None:
        if self.timeout is None:
            return
        now = time.monotonic()
        for w, started in enumerate(self.started):
            if started is not None and now - started > self.timeout:
                thread = self.threads[w]
                frame = sys._current_frames().get(thread.ident or -1)
                stage, key = locate(frame, self.plan, self.contexts[w])
                self.hung.add(w)
                raise _timeout_error(w, f"thread {thread.name}", (stage, key, self.timeout))

    def close(self, *, broken: bool = False) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        deadline = time.monotonic() + _JOIN_SECONDS
        for w, t in enumerate(self.threads):
            if w not in self.hung:
                t.join(max(0.0, deadline - time.monotonic()))
