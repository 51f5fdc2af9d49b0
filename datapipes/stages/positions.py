"""``take``, ``skip``, ``enumerate``: stages that act on positions, never on values."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, check_int, positional
from ._kinds import CountingStage, IndexStage, Triple


@attrs.frozen(kw_only=True, repr=False)
class Take(CountingStage, IndexStage):
    call_name: ClassVar[str] = "take"
    n: int = positional()

    def length(self, n: int) -> int:
        return min(n, self.n)

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> slice:
        return slice(0, self.n)

    def counter_limit(self) -> int:
        return self.n

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        taken = local  # the counter: elements taken so far
        for key, x, token in itertools.islice(items, max(0, self.n - taken)):
            taken += 1
            yield key, x, [token, taken]


def take(n: int) -> Pipe[Any]:
    """The first ``n`` elements of each epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(10)) | dp.take(3))
    [0, 1, 2]
    """
    return Pipe(Take(n=check_int("take", "n", n, minimum=0)))


@attrs.frozen(kw_only=True, repr=False)
class Skip(CountingStage, IndexStage):
    call_name: ClassVar[str] = "skip"
    n: int = positional()

    def length(self, n: int) -> int:
        return max(0, n - self.n)

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> slice:
        return slice(self.n, None)

    def counter_limit(self) -> int:
        return self.n

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        # the counter: elements skipped so far (n once the output has begun)
        for _ in itertools.islice(items, max(0, self.n - local)):
            pass
        for key, x, token in items:
            yield key, x, [token, self.n]


def skip(n: int) -> Pipe[Any]:
    """All but the first ``n`` elements of each epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(5)) | dp.skip(3))
    [3, 4]
    """
    return Pipe(Skip(n=check_int("skip", "n", n, minimum=0)))


@attrs.frozen(kw_only=True, repr=False)
class Enumerate(CountingStage):
    call_name: ClassVar[str] = "enumerate"
    keeps_random_access: ClassVar[bool] = True

    def length(self, n: int) -> int:
        return n

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        return bool(planner.add_position(self, stage_key))

    def index_step(
        self, rows: Any, columns: list[np.ndarray], ctx: EpochContext, stage_key: int
    ) -> tuple[Any, list[np.ndarray]]:
        """In the index head: a column of positions, placed into elements by the workers."""
        return rows, [*columns, np.arange(len(rows))]

    def head_stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int
                    ) -> Iterator[Item]:
        """On a stream head: the position joins the element's positions, placed into it by
        the workers after the maps before this stage."""
        for position, (key, (x, positions)) in builtins.enumerate(items):
            yield key, (x, (*positions, position))

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        for position, (key, x, token) in builtins.enumerate(items, local):
            yield key, (position, x), [token, position + 1]


def enumerate() -> Pipe[Any]:
    """Pair each element with its position at this point of the pipe, from 0 each epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence("abc") | dp.enumerate())
    [(0, 'a'), (1, 'b'), (2, 'c')]
    """
    return Pipe(Enumerate())
