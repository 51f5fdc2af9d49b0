"""The Loader: a pipe compiled for a training loop, run by parallel workers.

Each ``for`` pass over a Loader is one epoch. It yields exactly what ``pipe.iter(epoch=e,
seed=s)`` yields, whatever the number of workers, the backend or the prefetch depth.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import multiprocessing as mp
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import cloudpickle

from . import _seeds
from ._graph import EpochContext, Pipe, Skipped
from .errors import StageError, WorkerError
from .executors.cursor import epoch_from, make_state, read_state, resumable
from .executors.parallel import ParallelEpoch
from .executors.protocol import Pool, PoolSpec
from .executors.protocol import backend as executor_backend
from .executors.segment import segment_stream
from .executors.shared_list import share_objects, snapshot
from .executors.sizing import ChunkSizer
from .options import LoaderOptions
from .plan import Plan, plan
from .stages.prefetch import background
from .stages.shard import shard_by_rank
from .stats import LoaderStats, Tally, metered

_STREAM_CHUNK = 16


class Loader:
    """An iterable over the epochs of a pipe, computed by ``workers`` in parallel.

    Built by :meth:`Pipe.compile`. Workers start on the first epoch and persist until
    :meth:`close`, the end of a ``with`` block, or garbage collection.

    >>> import datapipes as dp
    >>> pipe = dp.from_sequence(range(8)) | dp.shuffle() | dp.batch(4)
    >>> with pipe.compile(workers=2, backend="thread") as loader:
    ...     epochs = [list(loader), list(loader)]
    >>> epochs == [list(pipe.iter(epoch=0)), list(pipe.iter(epoch=1))]
    True
    """

    def __init__(self, pipe: Pipe[Any], **options: Any) -> None:
        o = LoaderOptions.check(**options)
        self.options = o
        if o.sharded:
            pipe = with_shard(pipe, o.rank, o.world_size, o.even)
        self._transfer = None
        if o.pin_memory is not False or o.device is not None:  # (imports torch)
            from .transfer import Transfer

            self._transfer = Transfer.create(pin_memory=o.pin_memory, device=o.device)
        pipe = snapshot(pipe)
        workers, backend, on_error, stats = o.workers, o.backend, o.on_error, o.stats
        self.pipe = pipe
        self.workers = workers
        self.backend = backend
        self.prefetch = o.prefetch
        self.ordered = o.ordered
        self.start_method = o.start_method
        #: the seed in use; when ``seed=None`` was given, the fresh one drawn from the OS
        self.seed = _seeds.resolve_seed(o.seed)
        self.timeout = o.timeout
        self.on_error = on_error
        self.max_skipped = o.max_skipped
        #: elements dropped under ``on_error="skip"`` in the current epoch
        self.skipped: list[Skipped] = []
        self._plan: Plan = plan(pipe, skipping=on_error == "skip", train=o.train)
        if stats:
            self._plan = self._plan.metered()
        self.progress = o.progress
        self._tally = Tally(metered=stats)
        # Who runs the segment: the workers asked for; else, in this process, the pool of a
        # parallel_map in it; else this process itself (on a thread with a prefetch in it).
        pool_backend, self._pool_size = (
            (backend, workers) if workers else (self._plan.pool or (backend, 0))
        )
        self._backend = executor_backend(pool_backend)
        # workers that receive the pipe pickled (not by fork) need functions that pickle
        ships = self._backend.ships_functions and self._pool_size > 0
        if ships and workers and (o.start_method or mp.get_start_method()) != "fork":
            _check_shippable(pipe)
        # Results may come as they finish only when nothing after the workers depends on
        # their order; else the multiset itself would change (a batch, a take, ...).
        self._order_needed_by = next(
            (s for _, s in self._plan.tail if not s.order_free), None
        )
        self._unordered = not o.ordered and self._order_needed_by is None
        # What process workers run: the same plan, over a shared copy of a large list.
        worker_pipe, self._sharing = pipe, None
        if ships:
            worker_pipe, self._sharing = share_objects(pipe)
        self._worker_plan = (
            self._plan
            if worker_pipe is pipe
            else plan(worker_pipe, skipping=on_error == "skip", train=o.train)
        )
        if stats and self._worker_plan is not self._plan:
            self._worker_plan = self._worker_plan.metered()
        self._epoch = 0
        #: ``(epoch, position after the last output delivered, outputs delivered)`` while
        #: an epoch runs
        self._running: tuple[int, Any, int] | None = None
        self._resume_at: Any = None
        self._resume_delivered = 0
        self._resume_state_epoch: int | None = None
        self._epoch_id = 0
        self._pool: Pool | None = None
        self._outstanding: list[int] = []
        self._closed = False
        # the pass under way: (its thread, the generator), so that another thread is refused
        self._pass: tuple[int, weakref.ref[Any]] | None = None
        self._pass_lock = threading.Lock()
        # closes the pool when the loader is garbage-collected or the program ends
        self._finalizer: weakref.finalize | None = None

    # -- the public surface --------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if self._closed:
            raise RuntimeError("this Loader is closed")
        with self._pass_lock:
            self._refuse_a_second_thread()
            epoch, start = self._epoch, self._resume_at
            self._epoch, self._resume_at = epoch + 1, None
            values = self._epoch_values(epoch, start)
            self._pass = (threading.get_ident(), weakref.ref(values))
        return values

    def _refuse_a_second_thread(self) -> None:
        """A Loader runs one pass at a time: a pass asked for by another thread while one
        is under way is refused (in the same thread, the newer pass replaces the older)."""
        if self._pass is None:
            return
        thread, ref = self._pass
        running = ref()
        if (
            thread != threading.get_ident()
            and running is not None
            and running.gi_frame is not None  # neither finished nor closed
        ):
            raise RuntimeError(
                "this Loader is running a pass (epoch) in another thread; a Loader runs one "
                "pass at a time: iterate it from one thread, or compile the pipe again for a "
                "second, independent loader"
            )

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (then ``epoch + 1``, ...). After
        ``load_state_dict``, naming another epoch than the state's drops its position."""
        self._epoch = _seeds.check_epoch(epoch, "set_epoch")
        if self._resume_state_epoch != self._epoch:
            self._resume_at, self._resume_delivered = None, 0

    @property
    def epoch(self) -> int:
        """The epoch the next pass will run."""
        return self._epoch

    def __len__(self) -> int:
        if self.on_error == "skip":
            raise TypeError("the length of a Loader with on_error='skip' is not known in advance")
        return len(self.pipe)

    def explain(self) -> str:
        """The plan: each stage, where it runs and why; then how the loader runs it."""
        how = (
            "in this process"
            + (f", the segment on {self._pool_size} {self._backend.name} workers (parallel_map)"
               if self._pool_size else "")
            if self.workers == 0
            else f"{self.workers} {self.backend} workers, {self.prefetch} tasks each in flight"
            f" (at most {self.workers * self.prefetch}), "
            + ("unordered" if self._unordered else "in order")
            + (
                f" (ordered=False has no effect: {self._order_needed_by!r} needs the order)"
                if not self.ordered and not self._unordered
                else ""
            )
        )
        sharing = f"\nsource: {self._sharing}" if self._sharing else ""
        keeper = next((s for _, s in self._plan.tail if not resumable(s)), None)
        if keeper is not None:
            sharing += (f"\ncheckpoints: resuming replays the epoch up to the position "
                        f"({keeper!r} keeps elements between outputs)")
        elif not self._plan.random_access:
            sharing += ("\ncheckpoints: resuming reads the stream again up to the position, "
                        "without running the workers' stages")
        return f"{self._plan.explain()}\nrun: {how}{sharing}"

    def stats(self) -> LoaderStats:
        """What this loader did since it was built, and where the bottleneck is: ``print``
        it. Per-stage figures need ``compile(stats=True)`` (see ``docs/observability.md``)."""
        pool = self._pool
        busy = self._tally.busy + (sum(pool.busy) if pool is not None else 0.0)
        shared = self._tally.shared_bytes + (pool.shared_bytes if pool is not None else 0)
        return self._tally.report(
            workers=self._pool_size, worker_busy=busy, shared_bytes=shared,
            meters=(self._worker_plan if self._backend.ships_functions and self._pool_size
                    else self._plan).meters(),
            placements=self._plan.placements, tail=[s for _, s in self._plan.tail],
        )

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the worker processes (empty before the first epoch, or for threads)."""
        return self._pool.pids if self._pool is not None else []

    def close(self) -> None:
        """Stop every worker and free every shared-memory buffer not held by the user."""
        self._closed = True
        self._shutdown_pool()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "" if self.options.train else ", train=False"
        return (
            f"Loader({self.pipe!r}, workers={self.workers}, backend={self.backend!r}, "
            f"prefetch={self.prefetch}, seed={self.seed}{mode})"
        )

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the run stands, as plain data (ints, strings, lists): after the last output
        the consumer received. Safe to save with ``json`` or ``torch.save``; it does not
        depend on the worker count, backend or prefetch.

        >>> import datapipes as dp
        >>> pipe = dp.from_sequence(range(10)) | dp.shuffle() | dp.batch(3)
        >>> with pipe.compile() as loader:
        ...     it = iter(loader)
        ...     first = next(it)
        ...     state = loader.state_dict()
        >>> with pipe.compile() as resumed:
        ...     resumed.load_state_dict(state)
        ...     rest = list(resumed)
        >>> [first, *rest] == list(pipe.iter(epoch=0))
        True
        """
        if self._unordered:
            raise ValueError("state_dict: a Loader with ordered=False has no position to save")
        epoch, position, delivered = self._epoch, None, 0
        if self._running is not None:
            epoch, position, delivered = self._running
            length = self._length()
            if length is not None and delivered >= length:  # the epoch is complete
                epoch, position, delivered = epoch + 1, None, 0
        elif self._resume_at is not None:
            position = self._resume_at
            delivered = self._resume_delivered
        return make_state(self.pipe, self.seed, epoch, position, delivered, self.on_error)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next pass yields the rest of its epoch, the passes
        after it the following epochs, exactly as the run that saved it would have. The
        seed recorded in the state wins."""
        seed, epoch, position, delivered = read_state(state, self._plan, self.on_error)
        self.seed, self._epoch = seed, epoch
        self._resume_at, self._resume_delivered = position, delivered
        self._resume_state_epoch = epoch

    def _length(self) -> int | None:
        if self.on_error == "skip":
            return None
        return self.pipe.length()

    # -- running an epoch --------------------------------------------------------------
    def _epoch_values(self, epoch: int, start: Any) -> Iterator[Any]:
        """The values of one epoch (from ``start``), recording the position of each."""
        triples = self._epoch_triples(epoch, start)
        if start is not None:
            # a state taken after the last output resumes at the start of the next epoch
            first = next(triples, None)
            if first is None:
                epoch, start = epoch + 1, None
                self._epoch = epoch + 1
                triples = self._epoch_triples(epoch, None)
            else:
                triples = itertools.chain([first], triples)
        delivered = self._resume_delivered if start is not None else 0
        self._running = (epoch, start, delivered)
        if self.max_skipped is not None:
            triples = _limit_skips(triples, self.skipped, self.max_skipped)
        if self._transfer is not None:
            triples = self._transfer.run(triples, self.prefetch)
        tally, clock = self._tally, time.perf_counter
        tally.passes += 1
        bar = _progress_bar(epoch, self._length(), delivered) if self.progress else None
        began = asked = clock()
        try:
            for _, value, token in triples:
                tally.waiting += clock() - asked
                tally.outputs += 1
                delivered += 1
                self._running = (epoch, token, delivered)
                if bar is not None:
                    bar.update()
                yield value
                asked = clock()
            tally.waiting += clock() - asked
        finally:
            tally.seconds += clock() - began
            self._running = None
            if bar is not None:
                bar.close()

    def _epoch_triples(self, epoch: int, start: Any) -> Iterator[tuple[Any, Any, Any]]:
        """``(key, value, position after it)`` for one epoch, from ``start``."""
        ctx = EpochContext(self.seed, epoch, skip=self.on_error == "skip",
                           train=self.options.train)
        self.skipped = ctx.skipped
        segment = self._parallel_segment if self._pool_size else self._inline_segment
        tally = self._tally
        if not (tally.metered and self._plan.tail):
            return epoch_from(self._plan, ctx, start, segment)
        # the tail's own time: what producing its outputs took, less what its input took

        def metered_segment(ctx: EpochContext, at: tuple[int, int]) -> Iterator[Any]:
            return metered(segment(ctx, at), tally.segment_cell)

        return metered(epoch_from(self._plan, ctx, start, metered_segment), tally.tail_cell)

    def _ensure_pool(self) -> Pool:
        with self._pass_lock:  # never two pools, whatever the threads do
            return self._pool or self._start_pool()

    def _start_pool(self) -> Pool:
        plan = self._worker_plan if self._backend.ships_functions else self._plan
        pool = self._backend.start(
            PoolSpec(plan, self._pool_size, self.start_method, self.timeout, self.prefetch)
        )
        self._pool = pool
        self._outstanding = [0] * self._pool_size
        self._finalizer = weakref.finalize(self, pool.close)
        return pool

    def _inline_segment(
        self, ctx: EpochContext, start: tuple[int, int]
    ) -> Iterator[tuple[Any, Any, tuple[int, int]]]:
        """The segment in this process; on a thread, ahead, when the pipe has a prefetch."""
        segment = segment_stream(self._plan, ctx, start)
        return segment if self._plan.ahead is None else background(segment, self._plan.ahead)

    def one_epoch(self, epoch: int, start: Any = None) -> Iterator[Any]:
        """Run only epoch ``epoch`` (from position ``start``), then close the loader: how
        ``Pipe.iter`` runs a pipe that needs a pool or a thread."""
        try:
            yield from (x for _, x, _ in self._epoch_triples(epoch, start))
        finally:
            self.close()

    def _chunk(self) -> ChunkSizer:
        """Units per task when the segment does not batch: enough to amortise a message,
        few enough to spread the epoch over the workers, and about ``TASK_BYTES`` at most
        once the size of a unit is known (``executors/sizing.py``)."""
        if not self._plan.random_access:
            return ChunkSizer(_STREAM_CHUNK)
        return ChunkSizer(min(64, math.ceil(self._plan.source.size() / (self._pool_size * 8))))

    def _parallel_segment(
        self, ctx: EpochContext, start: tuple[int, int]
    ) -> Iterator[tuple[Any, Any, tuple[int, int]]]:
        """The segment run by the workers: outputs in order, each with its position."""
        pool = self._ensure_pool()
        self._epoch_id += 1
        eid = self._epoch_id

        def still_current() -> None:
            if self._pool is not pool:
                raise RuntimeError("this Loader was closed while a pass over it was running")
            if self._epoch_id != eid:
                raise RuntimeError(
                    "a newer pass over this Loader started: a Loader runs one pass (epoch) "
                    "at a time; compile the pipe again for a second, independent loader"
                )

        run = ParallelEpoch(
            pool, self._plan, ctx, start, epoch_id=eid, prefetch=self.prefetch,
            outstanding=self._outstanding, sizer=self._chunk(), unordered=self._unordered,
            tally=self._tally, rebuild=_rebuild,
        )
        try:
            yield from run.outputs(still_current)
        except WorkerError:
            self._shutdown_pool(broken=True)  # a broken pool is never reused
            raise

    def _shutdown_pool(self, *, broken: bool = False) -> None:
        pool, self._pool = self._pool, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if pool is not None:
            pool.close(broken=broken)
            self._tally.busy += sum(pool.busy)
            self._tally.shared_bytes += pool.shared_bytes


def with_shard(
    pipe: Pipe[Any], rank: int | None, world_size: int | None, even: str | None = "drop"
) -> Pipe[Any]:
    """``pipe`` with ``shard_by_rank(even=even)`` right after its last index stage (the
    last stage that reorders or selects elements without reading them)."""
    shard = shard_by_rank(rank=rank, world_size=world_size, even=even).stages[0]
    last = plan(pipe).last_index_stage
    return Pipe(*pipe.stages[: last + 1], shard, *pipe.stages[last + 1 :])


def _progress_bar(epoch: int, total: int | None, done: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc=f"epoch {epoch}", dynamic_ncols=True)


def _limit_skips(values: Iterator[Any], skipped: list[Skipped], limit: int) -> Iterator[Any]:
    """Raise once more than ``limit`` elements were skipped in the epoch."""
    for value in values:
        if len(skipped) > limit:
            break
        yield value
    if len(skipped) > limit:
        last = skipped[-1]
        raise StageError(
            f"{len(skipped)} elements were skipped in this epoch, more than max_skipped="
            f"{limit}; the last: key {last.key!r} in stage {last.stage} raised {last.error}: "
            f"{last.message}"
        ) from last.exception


def _rebuild(payload: Any) -> BaseException:
    """The user's exception from a worker, with the worker's traceback attached."""
    if isinstance(payload, BaseException):
        return payload
    pickled, type_name, message, text, notes = payload
    exc: BaseException
    if pickled is not None:
        exc = pickle.loads(pickled)
        _adopt_local_class(exc)
    else:
        exc = StageError(f"{type_name}: {message} (the exception could not be pickled)")
        for note in notes:
            exc.add_note(note)
    exc.add_note(f"worker traceback:\n{text}")
    return exc


def _adopt_local_class(exc: BaseException) -> None:
    """Give an exception of a class defined inside a function its original class back.

    Such a class travels from a worker by value, so it arrives as a copy, which an
    ``except`` clause naming the original would miss. A forked worker's class is one that
    exists here too: find it (same module and qualified name) and use it.
    """
    cls = type(exc)
    module = sys.modules.get(cls.__module__)
    if module is None or getattr(module, cls.__qualname__, None) is cls:
        return  # an importable class: pickle kept it as it is
    same = [
        obj for obj in gc.get_objects()
        if type(obj) is type and obj is not cls and issubclass(obj, BaseException)
        and "<locals>" in obj.__qualname__ and obj.__name__ == cls.__name__
        and obj.__module__ == cls.__module__
    ]
    if len(same) == 1:
        with contextlib.suppress(TypeError):  # a layout that differs: keep the copy
            exc.__class__ = same[0]


def _check_shippable(pipe: Pipe[Any]) -> None:
    try:
        cloudpickle.dumps(pipe)
    except Exception as exc:
        raise TypeError(
            f"compile: the pipe cannot be sent to spawned worker processes ({exc}); use "
            "start_method='fork', backend='thread', or make its functions picklable"
        ) from exc
