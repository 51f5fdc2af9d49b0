"""``shuffle``: a full permutation on random-access pipes, a buffer shuffle anywhere."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, check_int, fail
from ._kinds import IndexStage

T = TypeVar("T")
_DRAWS = 1024  # random indices drawn per call to the generator


def buffer_shuffle(items: Iterable[T], buffer: int, rng: np.random.Generator) -> Iterator[T]:
    """Shuffle a stream through a buffer of ``buffer`` elements (as tf.data does).

    Once the buffer is full, each new element swaps with a random one, which is yielded;
    at the end the rest of the buffer comes out in a random order. ``buffer=1`` is the
    identity.

    >>> import numpy as np
    >>> out = list(buffer_shuffle(range(10), 4, np.random.default_rng(0)))
    >>> sorted(out) == list(range(10)), out != list(range(10))
    (True, True)
    """
    buf: list[T] = []
    draws: Iterator[int] = iter(())
    for item in items:
        if len(buf) < buffer:
            buf.append(item)
            continue
        j = next(draws, None)
        if j is None:
            draws = iter(rng.integers(0, buffer, size=_DRAWS).tolist())
            j = next(draws)
        yield buf[j]
        buf[j] = item
    for j in rng.permutation(len(buf)).tolist():
        yield buf[j]


@attrs.frozen(kw_only=True, repr=False)
class Shuffle(IndexStage):
    call_name: ClassVar[str] = "shuffle"
    keeps_random_access: ClassVar[bool] = True
    buffer: int | None = None
    name: str | None = None

    def draws_randomness(self) -> bool:
        return True

    def needs_random_access(self) -> bool:
        return self.buffer is None

    def length(self, n: int) -> int:
        return n

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> Any:
        rng = ctx.stage_rng(stage_key)
        if self.buffer is None:
            return rng.permutation(n)
        return np.fromiter(buffer_shuffle(range(n), self.buffer, rng), dtype=np.int64, count=n)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        rng = ctx.stage_rng(stage_key)
        if self.buffer is None:
            everything = list(items)
            return (everything[j] for j in rng.permutation(len(everything)).tolist())
        return buffer_shuffle(items, self.buffer, rng)


def shuffle(*, buffer: int | None = None, name: str | None = None) -> Pipe[Any]:
    """Shuffle the elements, differently each epoch and the same for the same ``(seed, epoch)``.

    With no ``buffer`` it is a full permutation of a random-access pipe (index arithmetic:
    no element is read to shuffle). ``buffer=k`` shuffles a stream through ``k`` elements.

    >>> import datapipes as dp
    >>> sorted(dp.from_sequence(range(5)) | dp.shuffle())
    [0, 1, 2, 3, 4]
    """
    if buffer is not None:
        buffer = check_int("shuffle", "buffer", buffer, minimum=1)
    if name is not None and (not isinstance(name, str) or not name):
        raise fail("shuffle", f"name must be a non-empty str or None, got {name!r}", TypeError)
    return Pipe(Shuffle(buffer=buffer, name=name))
