"""``take``, ``skip``, ``enumerate``: stages that act on positions, never on values."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from .._graph import EpochContext, Item, Pipe, Stage, check_int, positional
from ._kinds import IndexStage


@attrs.frozen(kw_only=True, repr=False)
class Take(IndexStage):
    call_name: ClassVar[str] = "take"
    n: int = positional()

    def length(self, n: int) -> int:
        return min(n, self.n)

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> slice:
        return slice(0, self.n)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return itertools.islice(items, self.n)


def take(n: int) -> Pipe[Any]:
    """The first ``n`` elements of each epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(10)) | dp.take(3))
    [0, 1, 2]
    """
    return Pipe(Take(n=check_int("take", "n", n, minimum=0)))


@attrs.frozen(kw_only=True, repr=False)
class Skip(IndexStage):
    call_name: ClassVar[str] = "skip"
    n: int = positional()

    def length(self, n: int) -> int:
        return max(0, n - self.n)

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> slice:
        return slice(self.n, None)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return itertools.islice(items, self.n, None)


def skip(n: int) -> Pipe[Any]:
    """All but the first ``n`` elements of each epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(5)) | dp.skip(3))
    [3, 4]
    """
    return Pipe(Skip(n=check_int("skip", "n", n, minimum=0)))


@attrs.frozen(kw_only=True, repr=False)
class Enumerate(Stage):
    call_name: ClassVar[str] = "enumerate"
    keeps_random_access: ClassVar[bool] = True

    def length(self, n: int) -> int:
        return n

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        for position, (key, x) in builtins.enumerate(items):
            yield key, (position, x)


def enumerate() -> Pipe[Any]:
    """Pair each element with its position at this point of the pipe, from 0 each epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence("abc") | dp.enumerate())
    [(0, 'a'), (1, 'b'), (2, 'c')]
    """
    return Pipe(Enumerate())
