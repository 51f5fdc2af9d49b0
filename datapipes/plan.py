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

from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from ._graph import EpochContext, Item, Pipe, Stage, add_note
from .stages._kernel import POSITION, ElementOp, apply_ops, plain_maps
from .stages._kinds import ElementStage, IndexStage
from .stages.batch import Batch, batch_iter
from .stages.positions import Enumerate
from .stages.sources import Source

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

    @property
    def random_access(self) -> bool:
        return self.source.keeps_random_access

    @property
    def has_positions(self) -> bool:
        return any(isinstance(stage, Enumerate) for _, stage in self.index_ops)

    # -- head ------------------------------------------------------------------
    def index_table(self, ctx: EpochContext) -> IndexTable:
        """The head of a random-access plan: index arithmetic only, no element is read."""
        rows: Any = range(self.source.size())
        columns: list[np.ndarray] = []
        for stage_key, stage in self.index_ops:
            if isinstance(stage, Enumerate):
                columns.append(np.arange(len(rows)))
                continue
            assert isinstance(stage, IndexStage)
            sel = stage.select(len(rows), ctx, stage_key)
            if isinstance(sel, slice) and isinstance(rows, range):
                rows = rows[sel]
            else:
                rows = np.asarray(rows)[sel]
            columns = [c[sel] for c in columns]
        return IndexTable(rows, tuple(columns))

    def stream_units(self, ctx: EpochContext) -> Iterator[tuple[Any, Any, tuple[int, ...]]]:
        """The head of a stream plan: ``(key, element, positions)`` in epoch order."""
        items: Iterator[Item] = ((k, (x, ())) for k, x in enumerate(self.source.elements()))
        for stage_key, stage in self.index_ops:
            if isinstance(stage, Enumerate):
                items = _add_position(items)
            else:
                items = stage.stream(items, ctx, stage_key)
        return ((k, x, pos) for k, (x, pos) in items)

    # -- segment ---------------------------------------------------------------
    def run_units(self, units: Sequence[Any] | Iterator[Any], ctx: EpochContext) -> Iterator[Item]:
        """Turn head units into ``(key, element)`` items: the worker segment's element part."""
        ops = self.element_ops
        if not self.random_access:
            for key, x, pos in units:
                yield from apply_ops(ops, 0, key, x, pos, ctx)
            return
        fetch = self.source.fetch
        maps = plain_maps(ops)
        if maps is not None and not self.has_positions:
            for i in units:
                stage: Stage = self.source
                try:
                    x = fetch(i)
                    for stage, fn in maps:
                        x = fn(x)
                except Exception as exc:
                    add_note(exc, stage, i)
                    raise
                yield i, x
            return
        for unit in units:
            i, pos = (unit[0], unit[1:]) if self.has_positions else (unit, ())
            try:
                x = fetch(i)
            except Exception as exc:
                add_note(exc, self.source, i)
                raise
            yield from apply_ops(ops, 0, i, x, pos, ctx)

    def run_batch(self, b: int, units: Sequence[Any], ctx: EpochContext) -> Iterator[Item]:
        """One whole batch in the segment: its elements, then the ops on the batch."""
        values = [x for _, x in self.run_units(units, ctx)]
        return apply_ops(self.batch_ops, 0, b, values, (), ctx)

    def batch_units(self, ctx: EpochContext) -> Iterator[tuple[int, Sequence[Any]]]:
        """``(batch key, units)`` for each batch the segment builds."""
        assert self.batch is not None
        size, drop_last = self.batch.size, self.batch.drop_last
        if self.random_access:
            table = self.index_table(ctx)
            n = len(table)
            stop = n - n % size if drop_last else n
            for b, start in enumerate(range(0, stop, size)):
                yield b, table.units(start, min(start + size, stop))
        else:
            yield from enumerate(batch_iter(self.stream_units(ctx), size, drop_last=drop_last))

    def segment_items(self, ctx: EpochContext) -> Iterator[Item]:
        """Head then segment, in this process."""
        if self.batch is not None:
            for b, units in self.batch_units(ctx):
                yield from self.run_batch(b, units, ctx)
        elif self.random_access:
            table = self.index_table(ctx)
            for start in range(0, len(table), _CHUNK):
                yield from self.run_units(table.units(start, start + _CHUNK), ctx)
        else:
            yield from self.run_units(self.stream_units(ctx), ctx)

    def run_tail(self, items: Iterator[Item], ctx: EpochContext) -> Iterator[Item]:
        for stage_key, stage in self.tail:
            items = stage.stream(items, ctx, stage_key)
        return items

    # -- explaining --------------------------------------------------------------
    def explain(self) -> str:
        width = max(len(repr(p.stage)) for p in self.placements)
        lines = [f"plan for {self.pipe!r}"]
        for p in self.placements:
            lines.append(f"  {p.stage!r:<{width}}  {p.where:<7}  {p.why}")
        return "\n".join(lines)


_CHUNK = 1024  # head units turned into Python values at a time


def _add_position(items: Iterator[Item]) -> Iterator[Item]:
    for position, (key, (x, pos)) in enumerate(items):
        yield key, (x, (*pos, position))


def plan(pipe: Pipe[Any]) -> Plan:
    """Split a runnable pipe into head, segment and tail (see the module docstring)."""
    keyed = pipe.keyed_stages()
    source_key, source = keyed[0]
    assert isinstance(source, Source)
    placements = [Placement(source, HEAD if not source.keeps_random_access else WORKERS,
                            "reads the stream in order" if not source.keeps_random_access
                            else "each worker fetches the elements it needs by index")]
    index_ops: list[tuple[int, Stage]] = []
    element_ops: list[ElementOp] = []
    rest = keyed[1:]
    pos = 0

    # The head: a prefix of stages that never look at values (1:1 maps commute with it).
    while pos < len(rest):
        stage_key, stage = rest[pos]
        if isinstance(stage, (IndexStage, Enumerate)):
            if isinstance(stage, Enumerate):
                column = sum(isinstance(s, Enumerate) for _, s in index_ops)
                element_ops.append((POSITION, column, stage, stage_key))
            index_ops.append((stage_key, stage))
            placements.append(Placement(stage, HEAD, "index arithmetic, before any element is read"))
        elif isinstance(stage, ElementStage) and stage.one_to_one:
            element_ops.append(stage.element_op(stage_key))
            placements.append(Placement(stage, WORKERS, "per element"))
        else:
            break
        pos += 1

    # The segment: more per-element work, then perhaps whole batches.
    one_to_one = True
    while pos < len(rest) and isinstance(rest[pos][1], ElementStage):
        stage_key, stage = rest[pos]
        assert isinstance(stage, ElementStage)
        one_to_one = one_to_one and stage.one_to_one
        element_ops.append(stage.element_op(stage_key))
        placements.append(Placement(stage, WORKERS, "per element"))
        pos += 1
    batch: Batch | None = None
    batch_ops: list[ElementOp] = []
    if pos < len(rest) and isinstance(rest[pos][1], Batch) and one_to_one:
        batch = rest[pos][1]  # type: ignore[assignment]
        placements.append(Placement(batch, WORKERS, "batch membership follows from the head"))
        pos += 1
        while pos < len(rest) and isinstance(rest[pos][1], ElementStage):
            stage_key, stage = rest[pos]
            batch_ops.append(stage.element_op(stage_key))  # type: ignore[attr-defined]
            placements.append(Placement(stage, WORKERS, "per batch"))
            pos += 1

    # The tail: the first stage that needs the whole stream, and everything after it.
    tail = tuple(rest[pos:])
    if tail:
        first = tail[0][1]
        why = _tail_reason(first, one_to_one)
        placements.append(Placement(first, TAIL, why))
        for _, stage in tail[1:]:
            placements.append(Placement(stage, TAIL, f"after {first!r}"))
    return Plan(pipe, source, tuple(index_ops), tuple(element_ops), batch, tuple(batch_ops),
                tail, tuple(placements))


def _tail_reason(stage: Stage, one_to_one: bool) -> str:
    if not one_to_one:
        return "needs the stream in order: a filter or flat_map before it changes the count"
    return "needs the stream in order"
