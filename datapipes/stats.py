"""What a Loader did, so a user sees the bottleneck: ``loader.stats()`` (DESIGN §12).

Always counted (per output or per task, never per element): how long the passes ran, how
much of it the training loop spent waiting inside ``next()``, and, with workers, how busy
they were and, for each task's result, whether the main process had to wait for it (the
results queue was empty) or found it already there (the workers were ahead).

With ``compile(stats=True)`` each stage the workers run is also metered: elements in and
out and the seconds inside its function, summed over the workers. That wraps every
function in a :class:`Meter` (two clock reads per element and stage) and turns off the
fusion of maps into one C-level loop, so it is for finding a bottleneck, not for training.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .stages._kernel import FILTER, FLAT, POSITION

if TYPE_CHECKING:
    from ._graph import Stage

Counts = tuple[int, int, float]  # elements in, elements out, seconds


class Meter:
    """One stage's function, counting elements in and out and the seconds spent in it.

    A filter lets out the elements it keeps, a flat_map as many as it returns. Counts can
    be taken away (``take``: a worker process sends them after each task) or added (``add``:
    the main process collects them). Threads may share a meter: each counts in a cell of
    its own (no lock on the way), and ``counts`` sums the cells.
    """

    __slots__ = ("cells", "fn", "kind")

    def __init__(self, fn: Callable[..., Any], kind: int) -> None:
        self.fn = fn
        self.kind = kind
        self.cells: dict[int, list[Any]] = {}  # thread id -> [in, out, seconds]

    def __call__(self, *args: Any) -> Any:
        start = _clock()
        try:
            result = self.fn(*args)
            if self.kind == FLAT:
                result = list(result)
        except BaseException:
            self.add((1, 0, _clock() - start))
            raise
        seconds = _clock() - start
        cell = self.cells.get(_thread())
        if cell is None:
            cell = self.cells[_thread()] = [0, 0, 0.0]
        cell[0] += 1
        cell[1] += len(result) if self.kind == FLAT else bool(result) if self.kind == FILTER else 1
        cell[2] += seconds
        return result

    @property
    def counts(self) -> Counts:
        cells = list(self.cells.values())
        return (sum(c[0] for c in cells), sum(c[1] for c in cells),
                sum(c[2] for c in cells))

    def add(self, counts: Counts) -> None:
        cell = self.cells.setdefault(_thread(), [0, 0, 0.0])
        cell[0] += counts[0]
        cell[1] += counts[1]
        cell[2] += counts[2]

    def take(self) -> Counts:
        """The counts so far, and start again from zero (the one thread that counts)."""
        counts = self.counts
        self.cells = {}
        return counts

    def __getstate__(self) -> tuple[Any, int]:
        return self.fn, self.kind  # a copy (a spawned worker's) starts from zero

    def __setstate__(self, state: tuple[Any, int]) -> None:
        self.__init__(*state)  # type: ignore[misc]


_clock = time.perf_counter
_thread = threading.get_ident


def metered_ops(ops: tuple[Any, ...]) -> tuple[Any, ...]:
    """Element ops ``(kind, fn, stage, key)`` with each function in a :class:`Meter`."""
    return tuple(op if op[0] == POSITION else (op[0], Meter(op[1], op[0]), *op[2:]) for op in ops)


def metered(values: Iterator[Any], cell: list[float]) -> Iterator[Any]:
    """``values``, adding to ``cell = [elements, seconds]`` the time spent producing each."""
    it = iter(values)
    clock = time.perf_counter
    try:
        while True:
            start = clock()
            try:
                value = next(it)
            except StopIteration:
                cell[1] += clock() - start
                return
            cell[1] += clock() - start
            cell[0] += 1
            yield value
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


@attrs.frozen
class StageStats:
    """One stage's (or the tail's) figures: where it ran, elements in and out, seconds
    inside it (summed over workers)."""

    stage: str
    where: str
    elements_in: int | None
    elements_out: int | None
    seconds: float | None


@attrs.frozen
class LoaderStats:
    """What a :class:`~datapipes.Loader` did since it was built; ``str()`` reads as a report.

    ``seconds``: wall time of its passes; ``waiting``: the part of it the training loop spent
    inside ``next()`` (in-process, that is the loading itself). With workers: ``worker_busy``
    (seconds of tasks, summed over them), ``tasks``, and of those ``results_waited`` (the main
    process had to wait for the result: the results queue was empty) and ``results_ready``
    (it was there already: the workers were ahead); ``shared_bytes`` (received through
    shared memory). ``stages``: per stage, with ``compile(stats=True)``.
    """

    passes: int
    outputs: int
    seconds: float
    waiting: float
    workers: int
    worker_busy: float
    tasks: int
    results_waited: int
    results_ready: int
    shared_bytes: int
    stages: tuple[StageStats, ...] = ()

    @property
    def waiting_share(self) -> float:
        """The share of the passes' time that the training loop waited for data."""
        return self.waiting / self.seconds if self.seconds > 0 else 0.0

    @property
    def worker_share(self) -> float:
        """How busy the workers were over the passes' time (1.0: all of them, always)."""
        span = self.workers * self.seconds
        return self.worker_busy / span if span > 0 else 0.0

    def verdict(self) -> str:
        """Where the bottleneck is, in one sentence."""
        if self.outputs == 0:
            return "nothing delivered yet"
        waited = f"the training loop waited for data {self.waiting_share:.0%} of the time"
        if self.waiting_share < 0.1:
            return f"the loader keeps up: {waited}"
        slowest = max(
            (s for s in self.stages if s.seconds is not None), key=lambda s: s.seconds or 0.0,
            default=None,
        )
        where = f"; the slowest stage is {slowest.stage} ({slowest.where})" if slowest else ""
        if not self.workers:
            return f"the loader is the bottleneck: {waited}{where}; try workers > 0"
        if self.worker_share >= 0.8:
            return (f"the workers are the bottleneck ({self.worker_share:.0%} busy): {waited}"
                    f"{where}; more workers or cheaper stages would help")
        return (f"the loader is the bottleneck but its workers are only "
                f"{self.worker_share:.0%} busy: {waited}; the rest goes to starting them (in "
                "short runs), to the main process (the stages after the workers, receiving "
                "results) or to too few tasks in flight (raise prefetch)")

    def __str__(self) -> str:
        lines = [
            f"{self.passes} passes, {self.outputs} outputs in {self.seconds:.3f} s; "
            f"waiting for data {self.waiting:.3f} s ({self.waiting_share:.0%})",
        ]
        if self.workers:
            lines.append(
                f"{self.workers} workers: {self.tasks} tasks, busy {self.worker_busy:.3f} s "
                f"({self.worker_share:.0%}); results waited for {self.results_waited}, "
                f"already there {self.results_ready}; "
                f"{self.shared_bytes / 1e6:.1f} MB through shared memory"
            )
        if self.stages:
            width = max(len(s.stage) for s in self.stages)
            lines.append(f"  {'stage':<{width}}  {'where':<7}  {'in':>9}  {'out':>9}  seconds")
            for s in self.stages:
                cells = ["-" if v is None else str(v) for v in (s.elements_in, s.elements_out)]
                seconds = "-" if s.seconds is None else f"{s.seconds:.3f}"
                lines.append(
                    f"  {s.stage:<{width}}  {s.where:<7}  {cells[0]:>9}  {cells[1]:>9}  {seconds}"
                )
        lines.append(self.verdict())
        return "\n".join(lines)


class Tally:
    """The running counts behind a Loader's :class:`LoaderStats` (the Loader's own)."""

    def __init__(self, *, metered: bool) -> None:
        self.metered = metered
        self.passes = self.outputs = self.tasks = 0
        self.results_waited = self.results_ready = 0
        self.seconds = self.waiting = 0.0
        self.busy = 0.0  # of pools already closed
        self.shared_bytes = 0
        self.segment_cell: list[float] = [0, 0.0]  # what the tail took in: elements, seconds
        self.tail_cell: list[float] = [0, 0.0]  # what the tail gave out

    def report(
        self,
        *,
        workers: int,
        worker_busy: float,
        shared_bytes: int,
        meters: Sequence[tuple[Stage, Meter]],
        placements: Sequence[Any],
        tail: Sequence[Stage],
    ) -> LoaderStats:
        stages: list[StageStats] = []
        if self.metered:
            # (the workers' source may be a stand-in for the pipe's: a shared copy of a list)
            counted = {id(placements[0].stage if stage.is_source else stage): meter.counts
                       for stage, meter in meters}
            where = "workers" if workers else "main"
            segment = [p for p in placements if p.where != "tail"]
            for i, p in enumerate(segment):
                if id(p.stage) in counted:
                    n_in, n_out, seconds = counted[id(p.stage)]
                    stages.append(StageStats(repr(p.stage), where, n_in, n_out, seconds))
                elif p.where == "workers":  # a batch: what came before it, what came after
                    before = counted.get(id(segment[i - 1].stage)) if i else None
                    after = (counted.get(id(segment[i + 1].stage))
                             if i + 1 < len(segment) else None)
                    stages.append(StageStats(
                        repr(p.stage), where, before and before[1], after and after[0], None
                    ))
                else:  # index arithmetic in the head, a stream read there: nothing per element
                    stages.append(StageStats(repr(p.stage), p.where, None, None, None))
            if tail:
                taken, inner = self.segment_cell
                given, outer = self.tail_cell
                stages.append(StageStats(
                    " | ".join(map(repr, tail)), "tail", int(taken), int(given),
                    max(0.0, outer - inner),
                ))
        return LoaderStats(
            passes=self.passes, outputs=self.outputs, seconds=self.seconds,
            waiting=self.waiting, workers=workers, worker_busy=worker_busy, tasks=self.tasks,
            results_waited=self.results_waited, results_ready=self.results_ready,
            shared_bytes=shared_bytes, stages=tuple(stages),
        )
