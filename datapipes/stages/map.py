"""``map``, ``flat_map``: one function applied to each element."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import attrs

from .._graph import Pipe, check_callable, fail, positional
from ._kernel import FLAT, MAP, RNG_MAP, ElementOp
from ._kinds import ElementStage


def _check_name(stage: str, name: object) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise fail(stage, f"name must be a non-empty str or None, got {name!r}", TypeError)


@attrs.frozen(kw_only=True, repr=False)
class Map(ElementStage):
    call_name: ClassVar[str] = "map"
    keeps_random_access: ClassVar[bool] = True
    one_to_one: ClassVar[bool] = True
    fn: Callable[..., Any] = positional()
    rng: bool = False
    name: str | None = None

    def length(self, n: int) -> int:
        return n

    def element_op(self, stage_key: int) -> ElementOp:
        return (RNG_MAP if self.rng else MAP, self.fn, self, stage_key)


def map(fn: Callable[..., Any], *, rng: bool = False, name: str | None = None) -> Pipe[Any]:
    """Apply ``fn`` to every element.

    With ``rng=True``, ``fn(x, rng)`` receives a ``numpy.random.Generator`` keyed by
    ``(seed, epoch, stage, element)``: the same draws whoever computes the element.
    ``name`` keys the stage's randomness by name instead of by position, so inserting
    stages before it keeps its draws.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(4)) | dp.map(lambda x: x * x))
    [0, 1, 4, 9]
    >>> noisy = dp.from_sequence([0.0] * 3) | dp.map(lambda x, rng: x + rng.random(), rng=True)
    >>> list(noisy) == list(noisy)
    True
    """
    check_callable("map", "fn", fn)
    if not isinstance(rng, bool):
        raise fail("map", f"rng must be a bool, got {rng!r}", TypeError)
    _check_name("map", name)
    return Pipe(Map(fn=fn, rng=rng, name=name))


@attrs.frozen(kw_only=True, repr=False)
class FlatMap(ElementStage):
    call_name: ClassVar[str] = "flat_map"
    fn: Callable[[Any], Iterable[Any]] = positional()

    def element_op(self, stage_key: int) -> ElementOp:
        return (FLAT, self.fn, self, stage_key)


def flat_map(fn: Callable[[Any], Iterable[Any]]) -> Pipe[Any]:
    """Replace every element by the elements of the iterable ``fn`` returns for it.

    >>> import datapipes as dp
    >>> list(dp.from_sequence([1, 2, 3]) | dp.flat_map(lambda n: [n] * n))
    [1, 2, 2, 3, 3, 3]
    """
    check_callable("flat_map", "fn", fn)
    return Pipe(FlatMap(fn=fn))
