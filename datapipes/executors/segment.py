"""Running a plan: the head (index table or stream), the segment (the element stages, fused
where they can be), a task's outputs, and the tail: what every executor calls. The plan
itself (``plan.py``) is data: which stage runs where.

A *unit* is what the head hands the segment: an element (by index, or from the stream) or,
when the segment batches, a whole batch. Units are numbered in epoch order; the segment
turns unit ``p`` into its outputs ``0, 1, ...``. The position ``(p, j)`` means "next comes
output ``j`` of unit ``p``": resuming there costs index arithmetic for a random-access
head (a stream head is replayed, without the segment).
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .._graph import EpochContext, Item, Stage, add_note
from ..plan import IndexTable, Plan, code_of
from ..stages._kernel import apply_ops, plain_maps
from ..stages.batch import batch_iter

_CHUNK = 1024  # head units turned into Python values at a time
TASK_BATCH, TASK_UNITS = "batch", "units"


# -- head ------------------------------------------------------------------
def index_table(plan: Plan, ctx: EpochContext) -> IndexTable:
    """The head of a random-access plan: index arithmetic only, no element is read."""
    rows: Any = range(plan.source.size())
    columns: list[np.ndarray] = []
    for stage_key, stage in plan.index_ops:
        rows, columns = stage.index_step(rows, columns, ctx, stage_key)  # type: ignore[attr-defined]
    return IndexTable(rows, tuple(columns))


def stream_units(plan: Plan, ctx: EpochContext) -> Iterator[tuple[Any, Any, tuple[int, ...]]]:
    """The head of a stream plan: ``(key, element, positions)`` in epoch order."""
    items: Iterator[Item]
    if plan.source.keeps_random_access:  # indices first, then the stream (interleave)
        items, ops = fetched(plan, ctx), plan.stream_ops
    else:
        elements = plan.source.stream(iter(()), ctx, 0)  # notes a failing read with its key
        items, ops = ((k, (x, ())) for k, x in elements), plan.index_ops
    for stage_key, stage in ops:
        items = stage.head_stream(items, ctx, stage_key)
    return ((k, x, pos) for k, (x, pos) in items)


def fetched(plan: Plan, ctx: EpochContext) -> Iterator[Item]:
    """The elements the index head selects, fetched here, as a stream."""
    table = index_table(plan, ctx)
    indices = (i for s in range(0, len(table), _CHUNK) for i in table.units(s, s + _CHUNK))
    return ((k, (x, ())) for k, x in plan.source.read(indices, ctx))


# -- segment ---------------------------------------------------------------
def run_units(
    plan: Plan, units: Sequence[Any] | Iterator[Any], ctx: EpochContext
) -> Iterator[Item]:
    """Turn head units into ``(key, element)`` items, lazily: the segment's element part."""
    return ((key, x) for _, key, x in numbered_outputs(plan, units, ctx))


def numbered_outputs(
    plan: Plan, units: Sequence[Any] | Iterator[Any], ctx: EpochContext
) -> Iterator[tuple[int, Any, Any]]:
    """``(u, key, element)`` for each output, ``u`` the index of its unit in ``units``."""
    ops = plan.element_ops
    if not plan.random_access:
        for u, (key, x, pos) in enumerate(units):
            for key_out, y in apply_ops(ops, 0, key, x, pos, ctx):
                yield u, key_out, y
        return
    if plan.fused is not None:
        rest = list(units)
        base = 0  # index in units of rest[0]
        while rest:
            done = 0
            try:
                for x in chain(plan, rest):
                    yield base + done, rest[done], x
                    done += 1
                return
            except GeneratorExit:  # closed by its consumer: not the user's code
                raise
            except BaseException as exc:  # (what is not an Exception is noted, then raised)
                ctx.failed(exc, _raising_stage(exc, plan.source, plan.fused), rest[done])
                rest = rest[done + 1 :]  # skipped: go on after it
                base += done + 1
        return
    fetch = plan.source.fetcher() if plan.fetch_meter is None else plan.fetch_meter
    maps = plain_maps(ops) if not plan.has_positions else None
    for u, unit in enumerate(units):
        index, pos = (unit[0], unit[1:]) if plan.has_positions else (unit, ())
        stage: Stage = plan.source
        ctx.stage, ctx.key = stage, index  # where a timeout finds it
        try:
            x = fetch(index)
            if maps is not None:
                for stage, fn in maps:
                    ctx.stage = stage
                    x = fn(x)
        except BaseException as exc:  # (what is not an Exception is noted, then raised)
            ctx.failed(exc, stage, index)
            continue
        if maps is not None:
            yield u, index, x
        else:
            for key_out, y in apply_ops(ops, 0, index, x, pos, ctx):
                yield u, key_out, y


def chain(plan: Plan, units: list[Any]) -> Iterator[Any]:
    """The fused maps over ``units`` as one C-level loop: no Python frame of ours per
    element."""
    assert plan.fused is not None
    values: Any = plan.source.fetch_many(units)
    for _, fn in plan.fused:
        values = builtins.map(fn, values)
    return values  # type: ignore[no-any-return]


def fused_values(plan: Plan, units: list[int], ctx: EpochContext) -> list[Any]:
    """``[fn_k(...fn_1(seq[i])) for i in units]``, with no Python frame of ours per element.

    When a user function raises, its element is the first one not yet produced, and its
    stage is the one whose code is next on the traceback (fusion is only used when each
    stage's code can be told apart).
    """
    out, error = fused_partial(plan, units, ctx)
    if error is not None:
        raise error
    return out


def fused_partial(
    plan: Plan, units: list[int], ctx: EpochContext
) -> tuple[list[Any], BaseException | None]:
    """``fused_values``, stopping at the first error: the values before it, and it. While
    it runs, ``ctx.progress`` shows how far it is (for a timeout's report)."""
    assert plan.fused is not None
    out: list[Any] = []
    ctx.progress = (units, out)
    try:
        out.extend(chain(plan, units))
    except BaseException as exc:
        add_note(exc, _raising_stage(exc, plan.source, plan.fused), units[len(out)])
        return out, exc
    finally:
        ctx.progress = None
    return out, None


def values(plan: Plan, units: list[Any], ctx: EpochContext) -> list[Any]:
    """The elements for ``units`` when every element op is 1:1 (a batch's members)."""
    if plan.fused is not None:
        return fused_values(plan, units, ctx)
    return [x for _, x in run_units(plan, units, ctx)]


def run_batch(plan: Plan, b: int, units: Sequence[Any], ctx: EpochContext) -> Iterator[Item]:
    """One whole batch in the segment: its elements, then the ops on the batch."""
    return apply_ops(plan.batch_ops, 0, b, values(plan, list(units), ctx), (), ctx)


# -- positions: what a checkpoint records ------------------------------------------
# A *unit* is what the head hands the segment: an element (by index, or from the
# stream) or, when the segment batches, a whole batch. Units are numbered in epoch
# order; the segment turns unit ``p`` into its outputs ``0, 1, ...``. The position
# ``(p, j)`` means "next comes output ``j`` of unit ``p``": resuming there costs index
# arithmetic for a random-access head (a stream head is replayed, without the segment).


def unit_chunks(
    plan: Plan, ctx: EpochContext, start: int, chunk: Callable[[], int]
) -> Iterator[tuple[int, str, Any]]:
    """Tasks from unit ``start`` on: ``(first unit, kind, payload)``; a batch is one unit,
    else a task holds ``chunk()`` units, asked anew for each task."""
    if plan.batch is not None:
        if plan.random_access:
            table = index_table(plan, ctx)
            for b, first, stop in plan.batch.bounds(len(table), start):
                yield b, TASK_BATCH, (b, table.units(first, stop))
        else:
            size, drop_last = plan.batch.size, plan.batch.drop_last
            batches = batch_iter(stream_units(plan, ctx), size, drop_last=drop_last)
            for b, units in itertools.islice(enumerate(batches), start, None):
                yield b, TASK_BATCH, (b, units)
    elif plan.random_access:
        table = index_table(plan, ctx)
        first = start
        while first < len(table):
            step = chunk()
            yield first, TASK_UNITS, table.units(first, first + step)
            first += step
    else:
        units_iter = itertools.islice(stream_units(plan, ctx), start, None)
        first = start
        while units := list(itertools.islice(units_iter, chunk())):
            yield first, TASK_UNITS, units
            first += len(units)


def task_outputs(
    plan: Plan, kind: str, payload: Any, ctx: EpochContext
) -> tuple[list[list[Item]], BaseException | None]:
    """A task's outputs, one list per unit (what a worker computes and sends back); when
    a unit raises, the outputs of the units before it, and the error."""
    per_unit: list[list[Item]] = []
    try:
        if kind == TASK_BATCH:
            b, units = payload
            per_unit.append(list(run_batch(plan, b, units, ctx)))
        elif plan.fused is not None and not ctx.skip:
            values, error = fused_partial(plan, payload, ctx)
            per_unit.extend([item] for item in zip(payload, values, strict=False))
            if error is not None:
                return per_unit, error
        else:
            for u, key, x in numbered_outputs(plan, payload, ctx):
                while len(per_unit) <= u:
                    per_unit.append([])
                per_unit[u].append((key, x))
    except BaseException as exc:  # sys.exit() and KeyboardInterrupt too: after the outputs
        return per_unit, exc
    per_unit.extend([] for _ in range(len(payload) - len(per_unit)))
    return per_unit, None


def segment_stream(
    plan: Plan, ctx: EpochContext, start: tuple[int, int] = (0, 0)
) -> Iterator[tuple[Any, Any, tuple[int, int]]]:
    """Head then segment in this process, lazily, from position ``start``: each output
    with the position that follows it."""
    p0, j0 = start
    for first, kind, payload in unit_chunks(plan, ctx, p0, lambda: _CHUNK):
        if kind == TASK_UNITS and plan.fused is not None and not ctx.skip:
            for i, (key, x) in enumerate(run_units(plan, payload, ctx)):  # one output each
                yield key, x, (first + i + 1, 0)
            continue
        if kind == TASK_BATCH:
            b, units = payload
            outputs = list(run_batch(plan, b, units, ctx))
            yield from with_positions(first, outputs, j0 if first == p0 else 0)
            continue
        numbered = ((first + u, key, x) for u, key, x in numbered_outputs(plan, payload, ctx))
        yield from _positioned(numbered, p0, j0)


def tail_stream(plan: Plan, items: Iterator[Item], ctx: EpochContext) -> Iterator[Item]:
    for stage_key, stage in plan.tail:
        items = stage.stream(items, ctx, stage_key)
    return items


def running_at(plan: Plan, ctx: EpochContext, codes: Sequence[Any]) -> tuple[str, Any]:
    """Where a task running with ``ctx`` is: the repr of its stage and the element key.
    ``codes``: the code objects on its thread's stack, innermost first, which tell which of
    the fused functions runs (a fused run has no frame of ours per element; its progress
    says which element)."""
    if ctx.progress is not None:
        units, out = ctx.progress
        key = units[len(out)] if len(out) < len(units) else None
        candidates = [(plan.source, plan.source.fetcher()), *(plan.fused or ())]
        by_code = {code_of(fn): stage for stage, fn in candidates}
        stage = next((by_code[c] for c in codes if c in by_code), plan.source)
        return repr(stage), key
    if ctx.stage is None:
        return "unknown", None
    return repr(ctx.stage), ctx.key


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
    except GeneratorExit:  # closed by its consumer
        raise
    except BaseException:
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
        if code_of(fn) is code:
            return stage
    return source
