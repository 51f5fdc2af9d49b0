"""``augment``: a random map that runs only in training.

Evaluating on augmented data is a leak of training-time randomness into the numbers that are
supposed to measure the model (``docs/leakage.md``). ``augment(fn)`` is ``map(fn, rng=True)``
in training; for evaluation, ``pipe.iter(train=False)`` and ``compile(train=False)`` pass its
elements through unchanged. Its stage key is the same in both modes, so the stages after it
draw the same randomness whichever mode runs.

The mode is planning input (``plan(pipe, train=...)``): in evaluation the stage places itself
with no element op at all, so the workers run nothing for it and need no flag. The stage by
stage reference reads the mode from ``EpochContext.train``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs

from .._graph import EpochContext, Item, Pipe, check_callable, positional
from ._kernel import RNG_MAP, ElementOp
from ._kinds import ElementStage, Triple
from .map import _check_name

#: what ``explain()`` says of an augment planned for evaluation
EVAL_REASON = "passes elements through unchanged (train=False)"


@attrs.frozen(kw_only=True, repr=False)
class Augment(ElementStage):
    """``augment(fn)``: ``map(fn, rng=True)`` in training, nothing in evaluation."""

    call_name: ClassVar[str] = "augment"
    keeps_random_access: ClassVar[bool] = True
    one_to_one: ClassVar[bool] = True
    #: ``fn`` always takes the element's generator, as ``map(fn, rng=True)``'s does
    #: (``datapipes.testing.has_randomness`` reads it)
    rng: ClassVar[bool] = True
    fn: Callable[[Any, Any], Any] = positional()
    name: str | None = None

    def length(self, n: int) -> int:
        return n

    def element_op(self, stage_key: int) -> ElementOp:
        return (RNG_MAP, self.fn, self, stage_key)

    def draws_randomness(self) -> bool:
        return True

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        if planner.train:
            return super().plan_into(planner, stage_key)
        return bool(planner.add_unchanged(self, EVAL_REASON))

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return super().stream(items, ctx, stage_key) if ctx.train else items

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        if ctx.train:
            return super().resume(items, ctx, stage_key, local, before)
        # one output per input: the counter is always 0
        return ((key, x, [token, 0]) for key, x, token in items)


def augment(fn: Callable[[Any, Any], Any], *, name: str | None = None) -> Pipe[Any]:
    """A random map for training only: ``fn(x, rng)`` on every element, with ``rng`` keyed
    by ``(seed, epoch, stage, element)`` exactly as ``map(fn, rng=True)``; for evaluation
    (``pipe.iter(train=False)``, ``compile(train=False)``) elements pass through unchanged.

    The stage keeps its stage key in both modes (``name`` keys it by name, as ``map``'s), so
    later stages draw the same randomness in training and evaluation. It keeps random
    access and the length.

    >>> import datapipes as dp
    >>> def jitter(x, rng):
    ...     return x + int(rng.integers(1, 100))
    >>> pipe = dp.from_sequence([0, 10, 20]) | dp.augment(jitter)
    >>> list(pipe.iter(train=False))
    [0, 10, 20]
    >>> list(pipe) == list(dp.from_sequence([0, 10, 20]) | dp.map(jitter, rng=True))
    True
    >>> print(pipe.explain(train=False).splitlines()[-1])
      augment(jitter)              workers  passes elements through unchanged (train=False)
    """
    check_callable("augment", "fn", fn)
    _check_name("augment", name)
    return Pipe(Augment(fn=fn, name=name))
