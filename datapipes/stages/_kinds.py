"""The two families the planner moves around: element stages and index stages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from .._graph import EpochContext, Item, Stage
from ._kernel import ElementOp, apply_ops


class ElementStage(Stage):
    """Works on each element alone (0, 1 or more outputs each): runs in workers."""

    #: exactly one output per input, so counts and positions are known in advance
    one_to_one: ClassVar[bool] = False

    def element_op(self, stage_key: int) -> ElementOp:
        raise NotImplementedError

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        ops = (self.element_op(stage_key),)
        for key, x in items:
            yield from apply_ops(ops, 0, key, x, (), ctx)


class IndexStage(Stage):
    """Reorders or selects elements without looking at them: plans as index arithmetic."""

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> object:
        """For ``n`` inputs, the input positions to yield, in order (a slice or an array)."""
        raise NotImplementedError
