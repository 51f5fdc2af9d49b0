"""The families of stages the planner knows by their methods: element stages, index
stages, and stages whose position is a counter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from .._graph import EpochContext, Item, Stage
from ._kernel import ElementOp, apply_ops

Triple = tuple[Any, Any, Any]  # (key, value, token): an item with the position after it


class ElementStage(Stage):
    """Works on each element alone (0, 1 or more outputs each): runs in workers."""

    #: exactly one output per input, so counts and positions are known in advance
    one_to_one: ClassVar[bool] = False
    resumable: ClassVar[bool] = True
    order_free: ClassVar[bool] = True

    def element_op(self, stage_key: int) -> ElementOp:
        raise NotImplementedError

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        ops = (self.element_op(stage_key),)
        for key, x in items:
            yield from apply_ops(ops, 0, key, x, (), ctx)

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        return bool(planner.add_element(self, self.element_op(stage_key)))

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        # the counter: how many outputs of the next input were already delivered
        ops = (self.element_op(stage_key),)
        skip = local
        for key, x, token in items:
            outputs = list(apply_ops(ops, 0, key, x, (), ctx))
            last = len(outputs) - 1
            for i in range(skip, len(outputs)):
                k, y = outputs[i]
                # mid-element: resume by recomputing this input (from the token before it)
                yield k, y, ([before, i + 1] if i < last else [token, 0])
            skip = 0
            before = token


class IndexStage(Stage):
    """Reorders or selects elements without looking at them: plans as index arithmetic."""

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> object:
        """For ``n`` inputs, the input positions to yield, in order (a slice or an array)."""
        raise NotImplementedError

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        return bool(planner.add_index(self, stage_key))

    def index_step(
        self, rows: Any, columns: list[np.ndarray], ctx: EpochContext, stage_key: int
    ) -> tuple[Any, list[np.ndarray]]:
        """The head's index table after this stage: ``rows`` (source indices, a range or an
        int array) and ``columns`` (one per ``enumerate`` before it) selected alike."""
        sel: Any = self.select(len(rows), ctx, stage_key)
        if isinstance(rows, range) and not isinstance(sel, slice):
            rows = np.arange(rows.start, rows.stop, rows.step)
        return rows[sel], [c[sel] for c in columns]


class CountingStage(Stage):
    """A stage whose position in an epoch is one counter (``take``, ``skip``, ``batch``,
    ``enumerate``). It is written once, as ``resume`` over ``(key, value, token)``
    triples; its reference ``stream`` is that from 0, without the tokens."""

    resumable: ClassVar[bool] = True

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        triples = ((k, x, None) for k, x in items)
        return ((k, x) for k, x, _ in self.resume(triples, ctx, stage_key, 0, None))
