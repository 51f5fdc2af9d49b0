"""What a backend implements: a pool of workers behind one declared interface, found by name.

A :class:`Pool` starts its workers once and keeps them across epochs. The Loader sends each
:class:`Task` to one worker (``send``), collects :class:`Reply` records (``poll``), says
when an epoch's remaining tasks are no longer wanted (``cancel``), and stops it
(``close``). A worker that died, hung or ran past the timeout is reported by ``poll``
raising :class:`~datapipes.WorkerError`. ``thread`` and ``process`` are the built-in
backends; another (workers on a cluster, say) is one module with a class that has these
methods, registered under a name with :func:`register_backend`.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs

if TYPE_CHECKING:
    from ..plan import Plan


@attrs.frozen(slots=True)
class Task:
    """One task: turn the head's units ``payload`` into outputs, for epoch ``epoch`` with
    ``seed``. ``kind`` is ``"batch"`` (payload: ``(batch number, units)``) or ``"units"``;
    ``seq`` numbers the tasks of one pass (``epoch_id``) in epoch order."""

    epoch_id: int
    seq: int
    seed: int
    epoch: int
    skip: bool
    kind: str
    payload: Any


@attrs.frozen(slots=True)
class Reply:
    """A worker's answer to a task. ``kind``: ``"ok"`` (payload: ``(outputs per unit,
    skipped elements, error or None)``), ``"error"`` (a failure outside the user's code:
    the exception or its description) or ``"dropped"`` (a task of a cancelled pass)."""

    worker: int
    kind: str
    epoch_id: int
    seq: int
    payload: Any


@attrs.frozen
class PoolSpec:
    """What a pool is started with."""

    plan: Plan
    workers: int
    start_method: str | None = None
    timeout: float | None = None
    prefetch: int = 2


class Pool(Protocol):
    """The interface every backend implements (see the module docstring)."""

    #: seconds each worker spent on tasks; bytes received through shared memory
    busy: list[float]
    shared_bytes: int

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (none for threads)."""
        ...

    def send(self, worker: int, task: Task) -> None: ...

    def poll(self, epoch_id: int, timeout: float, outstanding: list[int]) -> list[Reply]:
        """Replies that arrived within ``timeout`` seconds (``outstanding``: tasks sent to
        each worker and not answered yet); raises ``WorkerError`` for a dead or hung one."""
        ...

    def cancel(self, epoch_id: int) -> None: ...

    def close(self, *, broken: bool = False) -> None:
        """Stop every worker: given time to finish their task, or at once when ``broken``."""
        ...


@attrs.frozen
class Backend:
    """A backend by name: its pool class (``"module:Class"``, imported when first used),
    and the executor a ``parallel_map`` in this process runs its calls on."""

    name: str
    pool: str
    call_pool: Callable[[int], concurrent.futures.Executor]
    #: functions cross to its workers pickled (lambdas and closures with cloudpickle)
    ships_functions: bool = False

    def start(self, spec: PoolSpec) -> Pool:
        module, _, name = self.pool.partition(":")
        pool_class = getattr(importlib.import_module(module), name)
        return pool_class(spec)  # type: ignore[no-any-return]


def _threads(workers: int) -> concurrent.futures.Executor:
    return concurrent.futures.ThreadPoolExecutor(workers, "datapipes-map")


def _processes(workers: int) -> concurrent.futures.Executor:
    return concurrent.futures.ProcessPoolExecutor(workers)


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` available as ``compile(backend=backend.name)``."""
    _BACKENDS[backend.name] = backend


def backend(name: str) -> Backend:
    """The backend registered as ``name``.

    >>> backend("thread").pool
    'datapipes.executors.pools:ThreadPool'
    """
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"no backend {name!r}; there are {', '.join(repr(n) for n in backend_names())}"
        ) from None


def backend_names() -> list[str]:
    return list(_BACKENDS)


register_backend(Backend("process", "datapipes.executors.pools:ProcessPool", _processes,
                         ships_functions=True))
register_backend(Backend("thread", "datapipes.executors.pools:ThreadPool", _threads))
