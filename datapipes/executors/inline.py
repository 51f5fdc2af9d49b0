"""The in-process executor: plain generators over the plan. This is the reference."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._graph import EpochContext
from ..plan import Plan


def run_inline(plan: Plan, ctx: EpochContext) -> Iterator[Any]:
    """Iterate one epoch of ``plan`` in this process."""
    items = plan.run_tail(((k, x) for k, x, _ in plan.segment_stream(ctx)), ctx)
    return (x for _, x in items)


def run_naive(pipe: Any, ctx: EpochContext) -> Iterator[Any]:
    """Iterate one epoch stage by stage, with no planning or fusion.

    Each stage's ``stream`` is its definition; the planned executors must agree with this.
    """
    items: Any = iter(())
    for stage_key, stage in pipe.keyed_stages():
        items = stage.stream(items, ctx, stage_key)
    return (x for _, x in items)
