"""``sample`` and ``split``: selecting elements of a random-access pipe by index.

Both are index arithmetic (DESIGN §5): they decide which positions come out without reading
an element, plan in the head, and resume by recomputing the same positions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, check_int, fail, positional
from .._seeds import check_seed
from ._kinds import IndexStage

#: the domain tag of a split's partition (a stream of its own, whatever the loader's seed)
_SPLIT = 3
_AFTER_SOURCE = (
    " and needs random access, which ended before it; put it right after the source, "
    "before the stages that end random access (filter, flat_map, batch, take, skip)"
)


class _Selection(IndexStage):
    """Chooses positions of the whole input: its stage-by-stage definition (``stream``)
    takes the input, then yields the chosen positions."""

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> np.ndarray:
        raise NotImplementedError

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        everything = list(items)
        positions = self.select(len(everything), ctx, stage_key)
        return (everything[j] for j in positions.tolist())


@attrs.frozen(kw_only=True, repr=False)
class Sample(_Selection):
    call_name: ClassVar[str] = "sample"
    keeps_random_access: ClassVar[bool] = True
    n: int | None = positional(default=None)
    weights: tuple[float, ...] | None = None
    replace: bool = False
    name: str | None = None

    def draws_randomness(self) -> bool:
        return True

    def needs_random_access(self) -> bool:
        return True

    def random_access_error(self) -> str:
        return f"draws from the whole dataset by index{_AFTER_SOURCE}"

    def length(self, n: int) -> int:
        return n if self.n is None else self.n

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> np.ndarray:
        size = self.length(n)
        p = None
        if self.weights is not None:
            if len(self.weights) != n:
                raise fail("sample", f"{len(self.weights)} weights for {n} elements: give one "
                           "weight per element")
            p = np.asarray(self.weights, dtype=np.float64)
            p = p / p.sum()
            if not self.replace and size > np.count_nonzero(p):
                raise fail("sample", f"cannot draw {size} distinct elements: only "
                           f"{np.count_nonzero(p)} have a weight above 0; pass replace=True")
        elif not self.replace and size > n:
            raise fail("sample", f"cannot draw {size} distinct elements from {n}; pass "
                       "replace=True")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        rng = ctx.stage_rng(stage_key)
        return rng.choice(n, size=size, replace=self.replace, p=p).astype(np.int64)


def sample(
    n: int | None = None,
    *,
    weights: Sequence[float] | np.ndarray | None = None,
    replace: bool = False,
    name: str | None = None,
) -> Pipe[Any]:
    """Draw ``n`` elements each epoch (all of them, by default), differently each epoch and
    the same for the same ``(seed, epoch)``: PyTorch's ``RandomSampler`` and
    ``WeightedRandomSampler`` as a stage.

    ``weights`` (one per element, not negative) makes an element's chance proportional to
    its weight; ``replace=True`` lets an element come more than once in an epoch (needed to
    draw more elements than there are). Index arithmetic: no element is read to choose.
    An element drawn twice in one epoch has the same key both times, so a ``map(f,
    rng=True)`` after it makes the same draws for both copies (DESIGN §4: draws follow the
    element).

    >>> import datapipes as dp
    >>> labels = ["cat"] * 9 + ["dog"]  # one dog: give it the weight of the nine cats
    >>> balanced = dp.from_sequence(labels) | dp.sample(1000, weights=[1] * 9 + [9], replace=True)
    >>> sum(x == "dog" for x in balanced)  # about half, the same each run (seed 0, epoch 0)
    496
    >>> four = list(dp.from_sequence(range(10)) | dp.sample(4))  # distinct, random order
    >>> len(set(four))
    4
    """
    if n is not None:
        n = check_int("sample", "n", n, minimum=0)
    _check_bool("sample", "replace", replace)
    if name is not None and (not isinstance(name, str) or not name):
        raise fail("sample", f"name must be a non-empty str or None, got {name!r}", TypeError)
    kept = None if weights is None else _check_weights(weights)
    return Pipe(Sample(n=n, weights=kept, replace=replace, name=name))


def _check_bool(stage: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise fail(stage, f"{name} must be a bool, got {value!r}", TypeError)


def _check_weights(weights: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """``sample``'s weights as a tuple of floats (hashable, so the stage compares by value)."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise fail("sample", f"weights must be a sequence of numbers, got {weights!r}",
                   TypeError)
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise fail("sample", f"weights must be numbers: {exc}", TypeError) from exc
    if array.ndim != 1:
        raise fail("sample", f"weights must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise fail("sample", "weights must be finite and not negative")
    if len(array) and not array.sum() > 0:  # none at all fit an empty input
        raise fail("sample", "weights must not all be 0")
    return tuple(array.tolist())


@attrs.frozen(kw_only=True, repr=False)
class Split(_Selection):
    call_name: ClassVar[str] = "split"
    keeps_random_access: ClassVar[bool] = True
    sizes: tuple[float, ...] | tuple[int, ...] = positional()
    part: int = positional()
    seed: int = 0
    shuffle: bool = True

    def needs_random_access(self) -> bool:
        return True

    def random_access_error(self) -> str:
        return f"partitions the whole dataset by index{_AFTER_SOURCE}"

    def counts(self, n: int) -> list[int]:
        """How many of ``n`` elements each part gets."""
        if all(isinstance(s, int) for s in self.sizes):
            if sum(self.sizes) != n:
                raise fail("split", f"the sizes {list(self.sizes)} add up to "
                           f"{sum(self.sizes)}, but there are {n} elements")
            return [int(s) for s in self.sizes]
        counts = [math.floor(f * n) for f in self.sizes]
        for i in range(n - sum(counts)):  # what rounding down left: one more each, in order
            counts[i % len(counts)] += 1
        return counts

    def length(self, n: int) -> int:
        return self.counts(n)[self.part]

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> np.ndarray:
        counts = self.counts(n)
        start = sum(counts[: self.part])
        order = (
            np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SPLIT,)))
            .permutation(n) if self.shuffle else np.arange(n)
        )
        return np.sort(order[start : start + counts[self.part]])


def split(
    sizes: Sequence[float] | Sequence[int], part: int, *, seed: int = 0, shuffle: bool = True
) -> Pipe[Any]:
    """Part ``part`` of a partition of the elements into ``len(sizes)`` parts, the same in
    every epoch and every run: a train/validation split as a stage (PyTorch's
    ``random_split``).

    ``sizes`` are fractions that add up to 1 (what rounding down leaves goes one each to the
    first parts) or counts that add up to the number of elements. The partition is random,
    from ``seed`` alone (not the loader's seed nor the epoch, so the parts never change);
    ``shuffle=False`` cuts the elements in order instead. A part keeps the elements in
    their order: put a ``shuffle()`` after it to reshuffle each epoch. The parts of one
    ``sizes`` and ``seed`` are disjoint and together cover every element.

    >>> import datapipes as dp
    >>> data = dp.from_sequence(range(10))
    >>> train, val = data | dp.split([0.8, 0.2], 0), data | dp.split([0.8, 0.2], 1)
    >>> len(train), len(val), sorted([*train, *val]) == list(range(10))
    (8, 2, True)
    >>> list(data | dp.split([7, 3], 1, shuffle=False))
    [7, 8, 9]
    """
    kept = _check_sizes(sizes)
    part = check_int("split", "part", part, minimum=0)
    if part >= len(kept):
        raise fail("split", f"part must be below {len(kept)} (one per size), got {part}")
    seed_value = check_seed(seed, "split")
    if seed_value is None:
        raise fail("split", "seed must be an int: a split must be the same in every run",
                   TypeError)
    _check_bool("split", "shuffle", shuffle)
    return Pipe(Split(sizes=kept, part=part, seed=seed_value, shuffle=shuffle))


def _check_sizes(sizes: object) -> tuple[int, ...] | tuple[float, ...]:
    """``split``'s sizes as a tuple of counts (all ints) or of fractions (all numbers)."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise fail("split", f"sizes must be a non-empty list of fractions or counts, got "
                   f"{sizes!r}", TypeError)
    if not all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in sizes):
        raise fail("split", f"sizes must all be ints (counts) or all numbers (fractions), "
                   f"got {list(sizes)!r}", TypeError)
    if all(isinstance(s, numbers.Integral) for s in sizes):
        return _check_counts(sizes)
    return _check_fractions(sizes)


def _check_counts(sizes: Sequence[Any]) -> tuple[int, ...]:
    if any(s < 0 for s in sizes):
        raise fail("split", f"counts must not be negative, got {list(sizes)}")
    return tuple(int(s) for s in sizes)


def _check_fractions(sizes: Sequence[Any]) -> tuple[float, ...]:
    if any(not math.isfinite(s) or s < 0 for s in sizes):
        raise fail("split", f"fractions must be finite and not negative, got {list(sizes)}")
    if not math.isclose(sum(sizes), 1.0, abs_tol=1e-9):
        raise fail("split", f"fractions must add up to 1, got {list(sizes)} "
                   f"(sum {sum(sizes)})")
    return tuple(float(s) for s in sizes)
