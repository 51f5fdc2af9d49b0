"""Worker pools: processes or threads, behind one small interface the Loader drives.

A pool starts its workers once and keeps them across epochs. The Loader sends each
task to one worker (``send``), collects replies (``poll``) and says when an epoch's
remaining tasks are no longer wanted (``cancel``). Replies are
``(worker, kind, epoch id, seq, payload)`` with kind ``"ok"`` (payload: the items),
``"error"`` (payload: the exception, or its description from a process) or ``"dropped"``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
from typing import Any

import cloudpickle

from .._graph import EpochContext, Pipe
from ..errors import WorkerError
from ..plan import Plan
from . import transport
from .worker import process_main, run_task

Reply = tuple[int, str, int, int, Any]
_JOIN_SECONDS = 5.0


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


class ProcessPool:
    """Worker processes, each with a task socket and a result socket."""

    def __init__(self, pipe: Pipe[Any], workers: int, start_method: str | None) -> None:
        ctx: Any = mp.get_context(start_method)
        self.start_method = ctx.get_start_method()
        payload: Any = pipe if self.start_method == "fork" else cloudpickle.dumps(pipe)
        self.procs: list[Any] = []
        self.tasks: list[transport.Channel] = []
        self.results: list[transport.Channel] = []
        self._closed = False
        try:
            for _ in range(workers):
                task_main, task_worker = transport.channel_pair()
                result_worker, result_main = transport.channel_pair()
                proc = ctx.Process(
                    target=process_main,
                    args=(payload, task_worker, result_worker, os.getpid()),
                    daemon=True,
                    name="datapipes-worker",
                )
                proc.start()
                task_worker.close()
                result_worker.close()
                self.procs.append(proc)
                self.tasks.append(task_main)
                self.results.append(result_main)
        except BaseException:
            self.close()
            raise
        self._by_fd = {ch.fileno(): w for w, ch in enumerate(self.results)}
        self._sentinels = {p.sentinel: w for w, p in enumerate(self.procs)}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def send(self, worker: int, message: tuple[Any, ...]) -> None:
        try:
            self.tasks[worker].send(pickle.dumps(message, protocol=5))
        except OSError:
            self._raise_dead(worker)

    def cancel(self, epoch_id: int) -> None:
        for ch in self.tasks:
            with contextlib.suppress(OSError):
                ch.send(pickle.dumps(("cancel", epoch_id)))

    def poll(self, epoch_id: int, timeout: float) -> list[Reply]:
        """Replies that arrived within ``timeout`` seconds; results of other epochs are not
        mapped, only released."""
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
            if kind == "ok":
                sizes, body = payload
                if eid == epoch_id:
                    payload = transport.loads(body, fds, sizes)
                else:
                    transport.close_fds(fds)
                    payload = None
            replies.append((w, kind, eid, seq, payload))
        if dead and not replies:
            self._raise_dead(dead[0])
        return replies

    def _raise_dead(self, worker: int) -> None:
        proc = self.procs[worker]
        proc.join(0.5)
        raise WorkerError(
            f"worker {worker} (pid {proc.pid}) {_exit_reason(proc.exitcode)}; the epoch "
            "cannot be completed"
        )

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ch in self.tasks:
            with contextlib.suppress(OSError):
                ch.send(pickle.dumps(("stop",)))
            ch.close()
        for proc in self.procs:
            proc.join(_JOIN_SECONDS / max(1, len(self.procs)))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_SECONDS)
        for ch in self.results:
            ch.close()
        for proc in self.procs:
            proc.close()


class ThreadPool:
    """Worker threads in this process: no transport, for work that releases the GIL."""

    def __init__(self, the_plan: Plan, workers: int) -> None:
        self.plan = the_plan
        self.inboxes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(workers)]
        self.replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self.cancelled = -1
        self.threads = [
            threading.Thread(target=self._work, args=(w,), daemon=True, name="datapipes-worker")
            for w in range(workers)
        ]
        for t in self.threads:
            t.start()

    def _work(self, w: int) -> None:
        inbox = self.inboxes[w]
        while (message := inbox.get()) is not None:
            _, eid, seq, seed, epoch, kind, payload = message
            if eid <= self.cancelled:
                self.replies.put((w, "dropped", eid, seq, None))
                continue
            try:
                items = run_task(self.plan, EpochContext(seed, epoch), kind, payload)
            except Exception as exc:
                self.replies.put((w, "error", eid, seq, exc))
            else:
                self.replies.put((w, "ok", eid, seq, items))
            del message, payload

    def send(self, worker: int, message: tuple[Any, ...]) -> None:
        self.inboxes[worker].put(message)

    def cancel(self, epoch_id: int) -> None:
        self.cancelled = max(self.cancelled, epoch_id)

    def poll(self, epoch_id: int, timeout: float) -> list[Reply]:
        try:
            replies = [self.replies.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                replies.append(self.replies.get_nowait())
            except queue.Empty:
                return replies

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for t in self.threads:
            t.join(_JOIN_SECONDS)
