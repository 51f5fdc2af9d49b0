"""Per-element operations as plain tuples, shared by the reference and every executor.

An element stage compiles to an :data:`ElementOp` ``(kind, fn, stage, stage_key)``; one
function, :func:`apply_ops`, runs a list of them on one element. Keeping this the single
place where user functions are called is what makes worker output equal the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._graph import EpochContext
from .._seeds import Key, sub_key

if TYPE_CHECKING:
    from .._graph import Stage

MAP, RNG_MAP, FILTER, FLAT, POSITION = range(5)

ElementOp = tuple[int, Any, "Stage", int]


def apply_ops(
    ops: Sequence[ElementOp],
    start: int,
    key: Key,
    x: Any,
    positions: Sequence[int],
    ctx: EpochContext,
) -> Iterator[tuple[Key, Any]]:
    """Run ``ops[start:]`` on one element, yielding its 0, 1 or more ``(key, value)`` outputs."""
    for pos in range(start, len(ops)):
        kind, fn, stage, stage_key = ops[pos]
        if kind == POSITION:
            x = (positions[fn], x)
            continue
        ctx.stage, ctx.key = stage, key  # where a timeout finds it
        try:
            if kind == MAP:
                x = fn(x)
            elif kind == RNG_MAP:
                x = fn(x, ctx.element_rng(stage_key, key))
            elif kind == FILTER:
                if not fn(x):
                    return
            else:  # FLAT
                outputs = list(enumerate(fn(x)))
        except BaseException as exc:  # (what is not an Exception is noted, then raised)
            ctx.failed(exc, stage, key)
            return  # skipped
        if kind == FLAT:
            for j, y in outputs:
                yield from apply_ops(ops, pos + 1, sub_key(key, j), y, positions, ctx)
            return
    yield key, x


def plain_maps(ops: Sequence[ElementOp]) -> list[tuple[Stage, Callable[[Any], Any]]] | None:
    """``[(stage, fn), ...]`` when every op is a plain map (the fast path), else None."""
    if all(kind == MAP for kind, *_ in ops):
        return [(stage, fn) for _, fn, stage, _ in ops]
    return None
