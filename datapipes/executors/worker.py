"""What runs inside a worker: take tasks, run the plan's segment, send results back.

The same function serves both backends: a thread worker calls :func:`run_task` directly;
a process worker runs :func:`process_main`, which adds the socket protocol, shared memory
and the watch on its parent.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
import traceback
from typing import Any

import cloudpickle

from .._graph import EpochContext
from ..plan import Plan, plan
from . import transport

# Task: (epoch id, seq, seed, epoch, kind, payload). kind: "batch" (payload: (b, units)) or
# "units" (payload: units). Reply: (kind, epoch id, seq, payload), kind "ok" | "error".
TASK_BATCH, TASK_UNITS = "batch", "units"


def run_task(the_plan: Plan, ctx: EpochContext, kind: str, payload: Any) -> list[Any]:
    """The items ``(key, value)`` one task produces."""
    if kind == TASK_BATCH:
        b, units = payload
        return list(the_plan.run_batch(b, units, ctx))
    return the_plan.unit_items(payload, ctx)


def describe_error(exc: BaseException) -> tuple[bytes | None, str, str, str]:
    """An exception as it can cross a process boundary: pickled if it can be, always its
    type name, message and the worker's formatted traceback."""
    text = "".join(traceback.format_exception(exc))
    pickled: bytes | None
    try:
        pickled = cloudpickle.dumps(exc)
        pickle.loads(pickled)
    except Exception:
        pickled = None
    return pickled, type(exc).__qualname__, str(exc), text


class _Contexts:
    def __init__(self) -> None:
        self._last: tuple[tuple[int, int], EpochContext] | None = None

    def get(self, seed: int, epoch: int) -> EpochContext:
        if self._last is None or self._last[0] != (seed, epoch):
            self._last = ((seed, epoch), EpochContext(seed, epoch))
        return self._last[1]


def process_main(
    pipe_or_bytes: Any, tasks: transport.Channel, results: transport.Channel, parent: int
) -> None:
    """The body of a worker process."""
    pipe = cloudpickle.loads(pipe_or_bytes) if isinstance(pipe_or_bytes, bytes) else pipe_or_bytes
    the_plan = plan(pipe, inline=False)
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cancelled = [-1]  # tasks of epoch ids up to this are dropped unrun

    def receive() -> None:
        # Always drain the task socket, so the main process never blocks sending to us.
        try:
            while True:
                data, _ = tasks.recv()
                message = pickle.loads(data)
                if message[0] == "cancel":
                    cancelled[0] = max(cancelled[0], message[1])
                elif message[0] == "stop":
                    break
                else:
                    inbox.put(message)
        except (EOFError, OSError):
            pass
        inbox.put(None)

    threading.Thread(target=receive, daemon=True, name="datapipes-receive").start()
    contexts = _Contexts()
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                break  # the main process is gone
            continue
        if message is None:
            break
        _, epoch_id, seq, seed, epoch, kind, payload = message
        if epoch_id <= cancelled[0]:
            results.send(pickle.dumps(("dropped", epoch_id, seq, None)))
            continue
        arena = transport.Arena()
        try:
            with transport.collating_into(arena):
                items = run_task(the_plan, contexts.get(seed, epoch), kind, payload)
            body = transport.dumps(items, arena)
            del items
            data = pickle.dumps(("ok", epoch_id, seq, (arena.sizes(), body)), protocol=5)
            del body
        except Exception as exc:
            arena.release()
            arena = transport.Arena()
            data = pickle.dumps(("error", epoch_id, seq, describe_error(exc)))
        try:
            results.send(data, arena.fds)
        except OSError:
            break  # the main process closed our channel
        finally:
            del data
            arena.release()
