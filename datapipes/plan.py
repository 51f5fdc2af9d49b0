"""From a pipe to a plan: what runs in the main process, what in workers, what after.

A plan has three parts:

* the **head** (main process) decides *which* elements come in *what order* without
  looking at them: a random-access source becomes a table of indices that ``shuffle``,
  ``take``, ``skip`` and ``enumerate`` rewrite with index arithmetic; a stream source is
  read here, with its buffer shuffle and ``take``/``skip``;
* the **segment** (workers) turns each unit from the head into elements: fetch
  ``seq[i]``, then the maps, filters and flat_maps, fused into one loop, and when batch
  membership follows from the head alone, ``batch`` and what follows it on whole batches;
* the **tail** (main process) runs what needs the whole stream in order (``batch`` after a
  ``filter``, ``take`` after a ``flat_map``, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from ._graph import Pipe, Stage
from .stages._kernel import MAP, POSITION, ElementOp, plain_maps
from .stages.batch import Batch, batch_count
from .stages.sources import Source
from .stats import Meter, metered_ops

HEAD, WORKERS, TAIL = "main", "workers", "tail"


@attrs.frozen
class Placement:
    """Where one stage runs, and why (for ``explain``)."""

    stage: Stage
    where: str
    why: str


@attrs.frozen
class IndexTable:
    """The head's output for a random-access source: source indices in epoch order, plus
    one column per ``enumerate`` holding each element's position at that stage."""

    rows: Any  # range or 1-D int array
    columns: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def units(self, start: int, stop: int) -> list[Any]:
        """Units ``start:stop`` as plain Python values: ``i`` or ``(i, pos1, pos2, ...)``."""
        rows = self.rows[start:stop]
        rows = list(rows) if isinstance(rows, range) else rows.tolist()
        if not self.columns:
            return rows
        return list(zip(rows, *(c[start:stop].tolist() for c in self.columns), strict=True))


@attrs.frozen(eq=False)
class Plan:
    pipe: Pipe[Any]
    source: Source
    index_ops: tuple[tuple[int, Stage], ...]
    element_ops: tuple[ElementOp, ...]
    batch: Batch | None
    batch_ops: tuple[ElementOp, ...]
    tail: tuple[tuple[int, Stage], ...]
    placements: tuple[Placement, ...]
    #: ``(backend, workers)`` of the largest ``parallel_map`` in the segment: in this
    #: process, the segment runs on such a pool
    pool: tuple[str, int] | None = None
    #: how far a ``prefetch`` in the head or segment asks it to run ahead
    ahead: int | None = None
    #: where the last stage of the head (reordering, selecting or numbering by index)
    #: stands in ``pipe.stages`` (0: the source)
    last_index_stage: int = 0
    #: with ``compile(stats=True)``: the source's fetch, metered (see ``metered``)
    fetch_meter: Meter | None = None
    #: head stages that read a stream after the index head of a random-access source
    #: (``interleave`` and what follows it there): the head then fetches the elements itself
    #: and hands the workers a stream
    stream_ops: tuple[tuple[int, Stage], ...] = ()
    #: the maps of a random-access plan fused into one C-level loop, when they are all
    #: plain maps (the common, fast case); else None
    fused: tuple[tuple[Stage, Any], ...] | None = attrs.field(init=False)

    @fused.default
    def _fuse(self) -> tuple[tuple[Stage, Any], ...] | None:
        if not self.random_access or self.has_positions or self.fetch_meter is not None:
            return None
        maps = plain_maps(self.element_ops)
        return None if maps is None or not _fusable(self.source, maps) else tuple(maps)

    @property
    def random_access(self) -> bool:
        """Whether the head hands the workers indices (else a stream of elements)."""
        return self.source.keeps_random_access and not self.stream_ops

    @property
    def has_positions(self) -> bool:
        return any(op[0] == POSITION for op in self.element_ops)

    @property
    def collates_last(self) -> bool:
        """Whether the segment ends with ``collate()`` to tensors: what it outputs is then
        handed over as it is, never seen by a user's function in the same process."""
        ops = self.batch_ops if self.batch is not None else self.element_ops
        if not ops:
            return False
        return bool(ops[-1][2].hands_over_as_is())

    def unit_count(self) -> int | None:
        """How many units the head hands the segment in an epoch, when that is known
        without reading an element (a random-access head)."""
        if not self.random_access:
            return None
        n: int | None = self.source.size()
        for _, stage in self.index_ops:
            if n is None:
                return None
            n = stage.length(n)
        if n is not None and self.batch is not None:
            n = batch_count(n, self.batch.size, self.batch.drop_last)
        return n

    # -- metering ----------------------------------------------------------------
    def metered(self) -> Plan:
        """This plan with every segment function in a :class:`~datapipes.stats.Meter`
        (``compile(stats=True)``); no fusion then."""
        fetch = Meter(self.source.fetcher(), MAP) if self.random_access else None
        return attrs.evolve(
            self, element_ops=metered_ops(self.element_ops),
            batch_ops=metered_ops(self.batch_ops), fetch_meter=fetch,
        )

    def meters(self) -> list[tuple[Stage, Meter]]:
        """The meters of a metered plan, in stage order (none otherwise)."""
        found: list[tuple[Stage, Meter]] = []
        if self.fetch_meter is not None:
            found.append((self.source, self.fetch_meter))
        for _, fn, stage, _ in (*self.element_ops, *self.batch_ops):
            if isinstance(fn, Meter):
                found.append((stage, fn))
        return found

    # -- explaining --------------------------------------------------------------
    def explain(self) -> str:
        width = max(len(repr(p.stage)) for p in self.placements)
        lines = [f"plan for {self.pipe!r}"]
        for p in self.placements:
            lines.append(f"  {p.stage!r:<{width}}  {p.where:<7}  {p.why}")
        return "\n".join(lines)


def code_of(fn: Any) -> Any:
    """The code object that runs first when ``fn`` is called, or None for C code."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None and not isinstance(fn, type):
        code = getattr(type(fn).__call__, "__code__", None)
    return code


def _fusable(source: Source, maps: Sequence[tuple[Stage, Any]]) -> bool:
    """Whether a raising stage can be named from the traceback alone: every map runs Python
    code of its own, and stages that share code (the same function twice) read the same."""
    stages_by_code: dict[int, set[str]] = {}
    for stage, fn in [(source, source.fetcher()), *maps]:
        code = code_of(fn)
        if code is None:
            if stage is source:
                continue  # C indexing: an error with no Python frame after ours is the source's
            return False
        stages_by_code.setdefault(id(code), set()).add(repr(stage))
    return all(len(reprs) == 1 for reprs in stages_by_code.values())


class Planner:
    """A plan in the making. :func:`plan` offers each stage in turn its place
    (``Stage.plan_into``); the stage takes one by calling the method that fits what it is,
    which answers whether the stage fits there. The first stage that takes no place starts
    the tail. Phases: the head (index stages), then the segment (element stages), then,
    once a ``batch`` whose membership follows from the head is in, the ops on whole
    batches."""

    def __init__(self, source: Source, skipping: bool, train: bool = True) -> None:
        self.source = source
        self.skipping = skipping
        #: False plans for evaluation: stages that only train (``augment``) ask for no op
        self.train = train
        self.placements = [
            Placement(source, WORKERS, "each worker fetches the elements it needs by index")
            if source.keeps_random_access
            else Placement(source, HEAD, "reads the stream in order")
        ]
        self.index_ops: list[tuple[int, Stage]] = []
        #: after a random-access head turned into a stream (an interleave)
        self.stream_ops: list[tuple[int, Stage]] = []
        self.element_ops: list[ElementOp] = []
        self.batch: Batch | None = None
        self.batch_ops: list[ElementOp] = []
        self.phase = "head"  # then "segment", "batch"
        self.one_to_one = True
        self.pool: tuple[str, int] | None = None
        self.ahead: int | None = None
        self.last_index_stage = 0
        self.position = 0  # of the stage being offered, in pipe.stages

    def _head(self, stage_key: int, stage: Stage, where: str) -> None:
        (self.stream_ops if self.stream_ops else self.index_ops).append((stage_key, stage))
        self.last_index_stage = self.position
        self.placements.append(Placement(stage, HEAD, where))

    def _head_place(self) -> str:
        if self.source.keeps_random_access and not self.stream_ops:
            return "index arithmetic, no element is read"
        return "on the stream as it is read, before the workers"

    def add_index(self, stage: Stage, stage_key: int) -> bool:
        """A stage that reorders or selects without reading (``IndexStage.index_step``)."""
        if self.phase != "head":
            return False
        self._head(stage_key, stage, self._head_place())
        return True

    def add_position(self, stage: Stage, stage_key: int) -> bool:
        """``enumerate``: a column of the head, placed into the element by the workers."""
        if self.phase != "head":
            return False
        column = sum(op[0] == POSITION for op in self.element_ops)
        self.element_ops.append((POSITION, column, stage, stage_key))
        self._head(stage_key, stage, self._head_place())
        return True

    def add_reader(self, stage: Stage, stage_key: int) -> bool:
        """A stage that reads its inputs' streams (``interleave``): in the head, while what
        it reads has passed through no element stage and no position."""
        if self.phase != "head" or self.element_ops:
            return False
        if self.source.keeps_random_access and not self.stream_ops:  # the head turns a stream
            self.placements[0] = Placement(self.source, HEAD, f"fetched here for {stage!r}")
            self.stream_ops.append((stage_key, stage))
        else:
            (self.stream_ops if self.stream_ops else self.index_ops).append((stage_key, stage))
        self.last_index_stage = self.position
        self.placements.append(Placement(stage, HEAD, "reads its inputs' streams here, before "
                                                      "the workers"))
        return True

    def add_element(self, stage: Stage, op: ElementOp) -> bool:
        """A stage on each element alone (``ElementStage.element_op``): in the segment."""
        if self.phase == "batch":
            self.batch_ops.append(op)
            self.placements.append(Placement(stage, WORKERS, "per batch"))
            return True
        if self.skipping or not getattr(stage, "one_to_one", False):
            self.phase = "segment"
            self.one_to_one = False
        self.element_ops.append(op)
        self.placements.append(Placement(stage, WORKERS, "per element"))
        return True

    def add_unchanged(self, stage: Stage, why: str) -> bool:
        """A stage that, as planned, passes every element through unchanged (``augment``
        with ``train=False``): placed where it stands, with no op to run."""
        self.placements.append(Placement(stage, WORKERS, why))
        return True

    def add_batch(self, stage: Batch) -> bool:
        """``batch``, in the segment when its membership follows from the head alone."""
        if self.phase == "batch" or not self.one_to_one:
            return False
        self.phase = "batch"
        self.batch = stage
        self.placements.append(Placement(stage, WORKERS, "membership follows from the head"))
        return True

    def add_ahead(self, stage: Stage, n: int) -> bool:
        """``prefetch``: the segment runs ``n`` ahead."""
        self.ahead = max(self.ahead or 0, n)
        self.placements.append(Placement(stage, WORKERS, "the segment runs ahead"))
        return True

    def use_pool(self, backend: str, workers: int) -> None:
        """In this process, run the segment on a pool of ``workers`` (``parallel_map``)."""
        if self.pool is None or workers > self.pool[1]:
            self.pool = (backend, workers)

    def build(self, pipe: Pipe[Any], tail: tuple[tuple[int, Stage], ...]) -> Plan:
        if tail:
            first = tail[0][1]
            self.placements.append(Placement(first, TAIL, first.tail_reason(self.one_to_one)))
            for _, stage in tail[1:]:
                self.placements.append(Placement(stage, TAIL, f"after {first!r}"))
        return Plan(pipe, self.source, tuple(self.index_ops), tuple(self.element_ops),
                    self.batch, tuple(self.batch_ops), tail, tuple(self.placements), self.pool,
                    self.ahead, self.last_index_stage, stream_ops=tuple(self.stream_ops))


def plan(pipe: Pipe[Any], *, skipping: bool = False, train: bool = True) -> Plan:
    """Split a runnable pipe into head, segment and tail (see the module docstring).

    The plan is the same whoever runs it, so positions (checkpoints) mean the same to
    every executor. Each stage places itself (``Stage.plan_into``, :class:`Planner`).
    ``skipping`` plans for ``on_error="skip"``: any element may be dropped, so no element
    stage counts as 1:1 (counts and positions are known by running). ``train=False``
    plans for evaluation (``compile(train=False)``): ``augment`` passes elements through.
    """
    keyed = pipe.keyed_stages()
    # A stage may stand in for the stages before it (``cache``: what they make is read from
    # disk). Its hook gives them back as they are to be planned, each at its place with its
    # stage key, so positions and stage keys mean the same as in the pipe.
    for at in range(len(keyed) - 1, 0, -1):
        rewritten = keyed[at][1].replace_before(keyed[: at + 1], skipping=skipping,
                                                 train=train)
        if rewritten is not None:
            assert len(rewritten) == at + 1
            keyed = [*rewritten, *keyed[at + 1 :]]
    source = keyed[0][1]
    assert isinstance(source, Source)
    planner = Planner(source, skipping, train)
    rest = keyed[1:]
    pos = 0
    while pos < len(rest):
        planner.position = pos + 1  # its place in pipe.stages
        stage_key, stage = rest[pos]
        if not stage.plan_into(planner, stage_key):
            break
        pos += 1
    return planner.build(pipe, tuple(rest[pos:]))
