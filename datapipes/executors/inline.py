"""The in-process executor: plain generators over the plan (the stage-by-stage
definition they must equal is ``_graph.stage_by_stage``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._graph import EpochContext
from ..plan import Plan
from .segment import segment_stream, tail_stream


def run_inline(plan: Plan, ctx: EpochContext) -> Iterator[Any]:
    """Iterate one epoch of ``plan`` in this process."""
    items = tail_stream(plan, ((k, x) for k, x, _ in segment_stream(plan, ctx)), ctx)
    return (x for _, x in items)
