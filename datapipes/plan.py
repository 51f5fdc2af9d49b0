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

import builtins
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from ._graph import EpochContext, Item, Pipe, Stage, add_note
from .stages._kernel import MAP, POSITION, ElementOp, apply_ops, plain_maps
from .stages.batch import Batch, batch_count, batch_iter
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
    _fused: tuple[tuple[Stage, Any], ...] | None = attrs.field(init=False)

    @_fused.default
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

    # -- head ------------------------------------------------------------------
    def index_table(self, ctx: EpochContext) -> IndexTable:
        """The head of a random-access plan: index arithmetic only, no element is read."""
        rows: Any = range(self.source.size())
        columns: list[np.ndarray] = []
        for stage_key, stage in self.index_ops:
            rows, columns = stage.index_step(rows, columns, ctx, stage_key)  # type: ignore[attr-defined]
        return IndexTable(rows, tuple(columns))

    def stream_units(self, ctx: EpochContext) -> Iterator[tuple[Any, Any, tuple[int, ...]]]:
        """The head of a stream plan: ``(key, element, positions)`` in epoch order."""
        items: Iterator[Item]
        if self.source.keeps_random_access:  # indices first, then the stream (interleave)
            items, ops = self._fetched(ctx), self.stream_ops
        else:
            elements = self.source.stream(iter(()), ctx, 0)  # notes a failing read with its key
            items, ops = ((k, (x, ())) for k, x in elements), self.index_ops
        for stage_key, stage in ops:
            items = stage.head_stream(items, ctx, stage_key)
        return ((k, x, pos) for k, (x, pos) in items)

    def _fetched(self, ctx: EpochContext) -> Iterator[Item]:
        """The elements the index head selects, fetched here, as a stream."""
        table = self.index_table(ctx)
        indices = (i for s in range(0, len(table), _CHUNK) for i in table.units(s, s + _CHUNK))
        return ((k, (x, ())) for k, x in self.source.read(indices, ctx))

    # -- segment ---------------------------------------------------------------
    def run_units(self, units: Sequence[Any] | Iterator[Any], ctx: EpochContext) -> Iterator[Item]:
        """Turn head units into ``(key, element)`` items, lazily: the segment's element part."""
        return ((key, x) for _, key, x in self.numbered_outputs(units, ctx))

    def numbered_outputs(
        self, units: Sequence[Any] | Iterator[Any], ctx: EpochContext
    ) -> Iterator[tuple[int, Any, Any]]:
        """``(u, key, element)`` for each output, ``u`` the index of its unit in ``units``."""
        ops = self.element_ops
        if not self.random_access:
            for u, (key, x, pos) in enumerate(units):
                for key_out, y in apply_ops(ops, 0, key, x, pos, ctx):
                    yield u, key_out, y
            return
        if self._fused is not None:
            rest = list(units)
            base = 0  # index in units of rest[0]
            while rest:
                done = 0
                try:
                    for x in self._chain(rest):
                        yield base + done, rest[done], x
                        done += 1
                    return
                except Exception as exc:
                    ctx.failed(exc, _raising_stage(exc, self.source, self._fused), rest[done])
                    rest = rest[done + 1 :]  # skipped: go on after it
                    base += done + 1
            return
        fetch = self.source.fetcher() if self.fetch_meter is None else self.fetch_meter
        maps = plain_maps(ops) if not self.has_positions else None
        for u, unit in enumerate(units):
            index, pos = (unit[0], unit[1:]) if self.has_positions else (unit, ())
            stage: Stage = self.source
            try:
                x = fetch(index)
                if maps is not None:
                    for stage, fn in maps:  # noqa: B007 (the stage names the error)
                        x = fn(x)
            except Exception as exc:
                ctx.failed(exc, stage, index)
                continue
            if maps is not None:
                yield u, index, x
            else:
                for key_out, y in apply_ops(ops, 0, index, x, pos, ctx):
                    yield u, key_out, y

    def _chain(self, units: list[Any]) -> Iterator[Any]:
        assert self._fused is not None
        chain: Any = self.source.fetch_many(units)
        for _, fn in self._fused:
            chain = builtins.map(fn, chain)
        return chain  # type: ignore[no-any-return]

    def fused_values(self, units: list[int]) -> list[Any]:
        """``[fn_k(...fn_1(seq[i])) for i in units]``, with no Python frame of ours per element.

        When a user function raises, its element is the first one not yet produced, and its
        stage is the one whose code is next on the traceback (fusion is only used when each
        stage's code can be told apart).
        """
        out, error = self._fused_partial(units)
        if error is not None:
            raise error
        return out

    def _fused_partial(self, units: list[int]) -> tuple[list[Any], Exception | None]:
        """``fused_values``, stopping at the first error: the values before it, and it."""
        assert self._fused is not None
        out: list[Any] = []
        try:
            out.extend(self._chain(units))
        except Exception as exc:
            add_note(exc, _raising_stage(exc, self.source, self._fused), units[len(out)])
            return out, exc
        return out, None

    def values(self, units: list[Any], ctx: EpochContext) -> list[Any]:
        """The elements for ``units`` when every element op is 1:1 (a batch's members)."""
        if self._fused is not None:
            return self.fused_values(units)
        return [x for _, x in self.run_units(units, ctx)]

    def run_batch(self, b: int, units: Sequence[Any], ctx: EpochContext) -> Iterator[Item]:
        """One whole batch in the segment: its elements, then the ops on the batch."""
        return apply_ops(self.batch_ops, 0, b, self.values(list(units), ctx), (), ctx)

    # -- positions: what a checkpoint records ------------------------------------------
    # A *unit* is what the head hands the segment: an element (by index, or from the
    # stream) or, when the segment batches, a whole batch. Units are numbered in epoch
    # order; the segment turns unit ``p`` into its outputs ``0, 1, ...``. The position
    # ``(p, j)`` means "next comes output ``j`` of unit ``p``": resuming there costs index
    # arithmetic for a random-access head (a stream head is replayed, without the segment).

    def unit_chunks(
        self, ctx: EpochContext, start: int, chunk: Callable[[], int]
    ) -> Iterator[tuple[int, str, Any]]:
        """Tasks from unit ``start`` on: ``(first unit, kind, payload)``; a batch is one unit,
        else a task holds ``chunk()`` units, asked anew for each task."""
        if self.batch is not None:
            if self.random_access:
                table = self.index_table(ctx)
                for b, first, stop in self.batch.bounds(len(table), start):
                    yield b, TASK_BATCH, (b, table.units(first, stop))
            else:
                size, drop_last = self.batch.size, self.batch.drop_last
                batches = batch_iter(self.stream_units(ctx), size, drop_last=drop_last)
                for b, units in itertools.islice(enumerate(batches), start, None):
                    yield b, TASK_BATCH, (b, units)
        elif self.random_access:
            table = self.index_table(ctx)
            first = start
            while first < len(table):
                step = chunk()
                yield first, TASK_UNITS, table.units(first, first + step)
                first += step
        else:
            units_iter = itertools.islice(self.stream_units(ctx), start, None)
            first = start
            while units := list(itertools.islice(units_iter, chunk())):
                yield first, TASK_UNITS, units
                first += len(units)

    def task_outputs(
        self, kind: str, payload: Any, ctx: EpochContext
    ) -> tuple[list[list[Item]], Exception | None]:
        """A task's outputs, one list per unit (what a worker computes and sends back); when
        a unit raises, the outputs of the units before it, and the error."""
        per_unit: list[list[Item]] = []
        try:
            if kind == TASK_BATCH:
                b, units = payload
                per_unit.append(list(self.run_batch(b, units, ctx)))
            elif self._fused is not None and not ctx.skip:
                values, error = self._fused_partial(payload)
                per_unit.extend([item] for item in zip(payload, values, strict=False))
                if error is not None:
                    return per_unit, error
            else:
                for u, key, x in self.numbered_outputs(payload, ctx):
                    while len(per_unit) <= u:
                        per_unit.append([])
                    per_unit[u].append((key, x))
        except Exception as exc:
            return per_unit, exc
        per_unit.extend([] for _ in range(len(payload) - len(per_unit)))
        return per_unit, None

    def segment_stream(
        self, ctx: EpochContext, start: tuple[int, int] = (0, 0)
    ) -> Iterator[tuple[Any, Any, tuple[int, int]]]:
        """Head then segment in this process, lazily, from position ``start``: each output
        with the position that follows it."""
        p0, j0 = start
        for first, kind, payload in self.unit_chunks(ctx, p0, lambda: _CHUNK):
            if kind == TASK_UNITS and self._fused is not None and not ctx.skip:
                for i, (key, x) in enumerate(self.run_units(payload, ctx)):  # one output each
                    yield key, x, (first + i + 1, 0)
                continue
            if kind == TASK_BATCH:
                b, units = payload
                outputs = list(self.run_batch(b, units, ctx))
                yield from with_positions(first, outputs, j0 if first == p0 else 0)
                continue
            numbered = ((first + u, key, x) for u, key, x in self.numbered_outputs(payload, ctx))
            yield from _positioned(numbered, p0, j0)

    def run_tail(self, items: Iterator[Item], ctx: EpochContext) -> Iterator[Item]:
        for stage_key, stage in self.tail:
            items = stage.stream(items, ctx, stage_key)
        return items

    def stage_running(self, code: Any) -> str:
        """The repr of the fused stage whose function has ``code`` (or the source's)."""
        for stage, fn in [(self.source, self.source.fetcher()), *(self._fused or ())]:
            if _code_of(fn) is code:
                return repr(stage)
        return repr(self.source)

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


_CHUNK = 1024  # head units turned into Python values at a time
TASK_BATCH, TASK_UNITS = "batch", "units"


def with_positions(
    p: int, outputs: list[Item], skip: int
) -> Iterator[tuple[Any, Any, tuple[int, int]]]:
    """The outputs of unit ``p`` from ``skip`` on, each with the position that follows it."""
    last = len(outputs) - 1
    for j in range(skip, len(outputs)):
        key, x = outputs[j]
        yield key, x, ((p, j + 1) if j < last else (p + 1, 0))


def _positioned(
    numbered: Iterator[tuple[int, Any, Any]], p0: int, j0: int
) -> Iterator[tuple[Any, Any, tuple[int, int]]]:
    """``(key, element, position after it)`` from ``(unit, key, element)`` in order, dropping
    the first ``j0`` outputs of unit ``p0``. An output is held until the next one shows
    whether it was its unit's last."""
    held: tuple[int, int, Any, Any] | None = None  # (unit, j, key, element)
    last, j = -1, 0
    try:
        for p, key, x in numbered:
            j = j + 1 if p == last else 0
            last = p
            if held is not None:
                hp, hj, hk, hx = held
                yield hk, hx, ((hp, hj + 1) if hp == p else (hp + 1, 0))
                held = None
            if p == p0 and j < j0:
                continue
            held = (p, j, key, x)
    except Exception:
        if held is not None:  # what came before an error comes out first
            hp, hj, hk, hx = held
            yield hk, hx, (hp, hj + 1)
        raise
    if held is not None:
        hp, hj, hk, hx = held
        yield hk, hx, (hp + 1, 0)


def _raising_stage(exc: BaseException, source: Any, maps: Sequence[tuple[Stage, Any]]) -> Any:
    """The stage whose function raised ``exc`` inside a fused C-level loop: the one whose
    code is the next frame on the traceback, or the source when no Python frame follows
    (its indexing is C code, see ``_fusable``)."""
    tb = exc.__traceback__
    frame = tb.tb_next if tb is not None else None
    if frame is None:
        return source
    code = frame.tb_frame.f_code
    for stage, fn in [(source, source.fetcher()), *maps]:
        if _code_of(fn) is code:
            return stage
    return source


def _code_of(fn: Any) -> Any:
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
        code = _code_of(fn)
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
        replace_before = getattr(keyed[at][1], "replace_before", None)
        rewritten = None if replace_before is None else replace_before(
            keyed[: at + 1], skipping=skipping, train=train
        )
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
