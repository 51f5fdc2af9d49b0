"""Small, importable functions for building pipes in tests.

They live at module level so that a pipe using them pickles, ships to spawned worker
processes, and has a ``repr`` that evaluates after
``from datapipes.testing.functions import *``. All of them take and return Python ints
(or lists of them), so outputs compare exactly.

>>> import datapipes as dp
>>> list(dp.from_sequence(range(4)) | dp.map(add_one) | dp.filter(is_even))
[2, 4]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

__all__ = [
    "Replay",
    "add_noise",
    "add_one",
    "add_position",
    "arange_of",
    "double",
    "drop_position",
    "is_even",
    "is_odd",
    "maybe_negate",
    "negate",
    "not_multiple_of_3",
    "range_of",
    "records_of",
    "repeat_twice",
    "row_to_int",
    "sum_batch",
    "weight_of",
]


def add_one(x: int) -> int:
    """``x + 1``."""
    return x + 1


def double(x: int) -> int:
    """``2 * x``."""
    return 2 * x


def negate(x: int) -> int:
    """``-x``."""
    return -x


def is_even(x: int) -> bool:
    """Whether ``x`` is even."""
    return x % 2 == 0


def is_odd(x: int) -> bool:
    """Whether ``x`` is odd."""
    return x % 2 == 1


def not_multiple_of_3(x: int) -> bool:
    """Whether ``x`` is not a multiple of 3."""
    return x % 3 != 0


def repeat_twice(x: int) -> list[int]:
    """``[x, x]``: a flat_map that doubles the stream."""
    return [x, x]


def arange_of(x: int) -> np.ndarray:
    """``numpy.arange(x % 5)``: a ragged int64 sequence per element (for ``pack`` and
    ``collate(pad=...)``)."""
    return np.arange(x % 5, dtype=np.int64)


def range_of(x: int) -> range:
    """``range(x % 4)``: a flat_map with 0 to 3 outputs per element (0 drops it)."""
    return range(x % 4)


def records_of(x: int) -> Iterator[int]:
    """``x``, ``x + 1000``, ``x + 2000``, ...: a stream of ``x % 4`` records (0 to 3) that
    tell which element they came from, as a shard's records do (for ``interleave``)."""
    return (x + 1000 * j for j in range(x % 4))


def add_noise(x: int, rng: np.random.Generator) -> int:
    """``x`` plus a random int in ``[0, 1000)`` drawn from ``rng`` (for ``map(rng=True)``)."""
    return x + int(rng.integers(1000))


def maybe_negate(x: int, rng: np.random.Generator) -> int:
    """``-x`` or ``x``, each with probability 1/2 (for ``map(rng=True)``)."""
    return -x if rng.random() < 0.5 else x


def sum_batch(batch: Sequence[int]) -> int:
    """The sum of a batch, as a Python int (for ``map`` or ``collate(fn)`` after ``batch``)."""
    return int(sum(batch))


def row_to_int(row: Mapping[str, Any]) -> int:
    """The sum of a ``from_arrays`` row's fields, as a Python int."""
    return sum(int(value) for value in row.values())


def drop_position(pair: tuple[int, int]) -> int:
    """``x`` from the ``(position, x)`` pairs that ``enumerate`` makes."""
    return pair[1]


def add_position(pair: tuple[int, int]) -> int:
    """``position + x`` from the ``(position, x)`` pairs that ``enumerate`` makes."""
    return pair[0] + pair[1]


def _as_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(items)


@attrs.frozen
class Replay:
    """A zero-argument callable returning a fresh iterator over ``items`` each call.

    ``from_iterable(Replay(...))`` is a stream source whose length is unknown, like a
    generator function, but that pickles, compares by value and has an evaluable ``repr``.

    >>> import datapipes as dp
    >>> pipe = dp.from_iterable(Replay((1, 2, 3)))
    >>> list(pipe), pipe.length()
    ([1, 2, 3], None)
    """

    items: tuple[Any, ...] = attrs.field(converter=_as_tuple)

    def __call__(self) -> Iterator[Any]:
        return iter(self.items)


def weight_of(x: int) -> float:
    """``1 + x % 3``: a weight per element (for ``sample(weights=...)``)."""
    return float(1 + x % 3)
