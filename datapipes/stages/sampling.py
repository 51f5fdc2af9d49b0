"""``sample`` and ``split``: selecting elements of a random-access pipe by index.

Both are index arithmetic (DESIGN §5): they decide which positions come out without reading
an element, plan in the head, and resume by recomputing the same positions. A ``sample``
with a weights *function* is the one exception: it reads each source element once, in the
main process, the first time an epoch needs its weight (see :func:`sample`).
"""

from __future__ import annotations

import collections
import hashlib
import math
import numbers
import operator
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, Stage, add_note, check_int, fail, positional
from .._seeds import check_seed
from ._kinds import IndexStage
from .sources import Source

#: the domain tag of a split's partition (a stream of its own, whatever the loader's seed)
_SPLIT = 3
_AFTER_SOURCE = (
    " and needs random access, which ended before it; put it right after the source, "
    "before the stages that end random access (filter, flat_map, batch, take, skip)"
)

#: what ``sample``'s weights are aligned with: its input positions, or source indices
BY_POSITION, BY_SOURCE = "position", "source"
#: the longest repr a stage shows for a parameter (``_graph._SHORT``)
_SHORT = 60
_BY_SOURCE_CALL = "by_source_index"


# -- weights as values -------------------------------------------------------------------------
class Weights:
    """``sample``'s weights as a value: a read-only float64 array compared and hashed by
    content, aligned with the stage's input positions (``sample(weights=[...])``) or with
    source indices (:func:`by_source_index`).

    It keeps what drawing with replacement needs (the cumulative distribution), built the
    first time an epoch needs it: the weights are read once, not once per epoch.

    >>> Weights([1, 2], BY_POSITION) == Weights(np.array([1.0, 2.0]), BY_POSITION)
    True
    >>> Weights([1, 2], BY_SOURCE)
    by_source_index((1.0, 2.0))
    """

    __slots__ = ("_cumulative", "_digest", "by", "values")

    def __init__(self, values: Any, by: str) -> None:
        # a copy (later changes to the caller's array do not reach a stage), with -0.0 as
        # 0.0 so that equal weights have equal bytes (the hash)
        array = np.asarray(values, dtype=np.float64) + 0.0
        array.flags.writeable = False
        self.values: np.ndarray = array
        self.by = by
        self._digest: bytes | None = None
        self._cumulative = _CumulativeCache()

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("values", "by") and hasattr(self, name):
            raise AttributeError(f"Weights are a value: {name} cannot change")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Weights):
            return NotImplemented
        return (self.by == other.by and self.values.shape == other.values.shape
                and bool(np.array_equal(self.values, other.values)))

    def __hash__(self) -> int:
        if self._digest is None:  # once: a stage's hash is asked often, the data never changes
            self._digest = hashlib.blake2b(self.values.data, digest_size=8).digest()
        return hash((self.by, len(self.values), self._digest))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Weights, (self.values, self.by))

    def __repr__(self) -> str:
        # O(1) in the number of weights, like every repr. Long weights by position show as
        # they did when a tuple held them: a checkpoint's fingerprint holds the pipe's repr,
        # and checkpoints taken then must still load.
        room = _SHORT - (len(_BY_SOURCE_CALL) + 2 if self.by == BY_SOURCE else 0)
        text = repr(tuple(self.values.tolist())) if len(self.values) <= room else ""
        if not text or len(text) > room:
            kind = "tuple" if self.by == BY_POSITION else "weights"
            text = f"<{kind} of {len(self.values)}>"
        return text if self.by == BY_POSITION else f"{_BY_SOURCE_CALL}({text})"

    def of_rows(self, rows: Any) -> _RowWeights:
        """The weights of ``rows`` (source indices, a range or an int array)."""
        return _RowWeights(lambda: _gather(self.values, rows), self._cumulative, rows)


def by_source_index(weights: Sequence[float] | np.ndarray) -> Weights:
    """Weights for :func:`sample` indexed by *source index*: the weight of an element is
    ``weights[i]``, ``i`` its index in the source (its key), wherever the sample stands.

    The same weights then work before and after a ``split`` or a ``shuffle``: after a
    split, the part's elements are a subset of the source, and each keeps its own weight.
    There must be one weight per source element (checked when the pipe is composed).

    >>> import datapipes as dp
    >>> data = dp.from_sequence(range(10))
    >>> w = by_source_index([0, 1] * 5)  # only the odd elements
    >>> train = data | dp.split([0.5, 0.5], 0) | dp.sample(6, weights=w, replace=True)
    >>> all(x % 2 for x in train)
    True
    """
    return Weights(_checked_weights(_BY_SOURCE_CALL, weights), BY_SOURCE)


def class_weights(labels: Any) -> np.ndarray:
    """Inverse-frequency weights, one per element: ``1 / count(labels[i])``, so that
    ``sample(weights=class_weights(labels), replace=True)`` draws each class about equally
    often (each class's weights add up to 1).

    Labels compare as Python values (any hashable) or, for an array or tensor, by value
    with ``numpy.unique``. Wrap the result in :func:`by_source_index` to use it after a
    ``split`` (``labels`` then being the whole source's).

    >>> class_weights(["cat", "cat", "cat", "dog"]).tolist()
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333, 1.0]
    """
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise fail("class_weights", f"labels must be a sequence, one label per element, got "
                   f"{labels!r}", TypeError)
    if isinstance(labels, (list, tuple, range)):
        try:
            per_label = collections.Counter(labels)
        except TypeError as exc:
            raise fail("class_weights", f"labels must be hashable: {exc}", TypeError) from exc
        return np.fromiter((1.0 / per_label[x] for x in labels), np.float64, count=len(labels))
    array = np.asarray(labels)
    if array.ndim != 1:
        raise fail("class_weights", f"labels must be one label per element (one-dimensional), "
                   f"got shape {array.shape}")
    if not len(array):
        return np.zeros(0, dtype=np.float64)
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    out: np.ndarray = 1.0 / counts[inverse.reshape(-1)]
    return out


def _checked_weights(where: str, weights: Any) -> np.ndarray:
    """Weights as a float64 array: one-dimensional, finite, not negative, not all 0."""
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise fail(where, f"weights must be a sequence of numbers, by_source_index(...) or a "
                   f"function of the element, got {weights!r}", TypeError)
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise fail(where, f"weights must be numbers: {exc}", TypeError) from exc
    if array.ndim != 1:
        raise fail(where, f"weights must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise fail(where, "weights must be finite and not negative")
    if len(array) and not array.sum() > 0:  # none at all fit an empty input
        raise fail(where, "weights must not all be 0")
    return array


def _gather(values: np.ndarray, rows: Any) -> np.ndarray:
    """``values[rows]``: the weights of source indices ``rows`` (a range of them: a view)."""
    if isinstance(rows, range) and rows.step == 1 and 0 <= rows.start <= rows.stop <= len(
            values):
        return values[rows.start : rows.stop]
    try:
        return values[np.asarray(rows) if isinstance(rows, range) else rows]
    except IndexError as exc:
        raise fail("sample", f"by_source_index has {len(values)} weights, fewer than the "
                   "source has elements: give one weight per source element") from exc


# -- drawing with replacement ------------------------------------------------------------------
#: below this many weights a plain binary search is as fast as the table
_TABLE_FROM = 1 << 16
#: at most 2**23 buckets (32 MB of int32 starts)
_TABLE_BITS = 23
#: uniform draws made and looked up at a time (temporaries that stay in the cache)
_DRAW_CHUNK = 1 << 16


class _Cumulative:
    """Draws with replacement from weights ``w``: exactly ``rng.choice(len(w), size,
    p=w / w.sum())`` (the same uniform draws ``rng.random``, the same positions: the first
    whose cumulative weight is above each draw).

    A binary search over millions of weights misses the cache on most of its steps, so a
    table of where each of ``K`` equal slices of ``[0, 1)`` starts narrows each search to the
    few positions of its slice first.

    >>> w = np.array([1.0, 0.0, 2.0, 1.0])
    >>> drawn = _Cumulative(w).draw(np.random.default_rng(7), 10)
    >>> drawn.tolist() == np.random.default_rng(7).choice(4, size=10, p=w / w.sum()).tolist()
    True
    """

    __slots__ = ("cdf", "scale", "starts")

    def __init__(self, w: np.ndarray) -> None:
        total = w.sum()
        if not total > 0:
            raise fail("sample", f"the weights of the {len(w)} elements that reach it are all "
                       "0: nothing to draw")
        cdf = (w / total).cumsum()
        cdf /= cdf[-1]  # as Generator.choice does
        self.cdf = cdf
        self.scale = 0
        self.starts: np.ndarray | None = None
        n = len(cdf)
        if n >= _TABLE_FROM:
            self.scale = 1 << min(_TABLE_BITS, n.bit_length() - 1)
            # starts[b]: the first position above b / K (exact: K is a power of 2)
            starts = cdf.searchsorted(np.arange(self.scale + 1) / self.scale, side="right")
            np.minimum(starts, n - 1, out=starts)
            self.starts = starts.astype(np.int32 if n < 2**31 else np.int64)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty(size, dtype=np.int64)
        for start in range(0, size, _DRAW_CHUNK):
            u = rng.random(min(_DRAW_CHUNK, size - start))  # one stream, however it is cut
            out[start : start + len(u)] = self._find(u)
        return out

    def _find(self, u: np.ndarray) -> np.ndarray:
        """For each draw, the first position whose cumulative weight is above it."""
        if self.starts is None:
            return self.cdf.searchsorted(u, side="right")
        bucket = (u * self.scale).astype(np.intp)
        lo = self.starts[bucket].astype(np.intp)  # the answer lies in [lo, hi]
        hi = self.starts[bucket + 1].astype(np.intp)
        span = int((hi - lo).max()) if len(u) else 0
        while span:
            mid = (lo + hi) >> 1
            after = self.cdf[mid] <= u
            lo = np.where(after, mid + 1, lo)
            hi = np.where(after, hi, mid)
            span >>= 1
        return lo


class _CumulativeCache:
    """The cumulative distribution last built from some weights, for the rows it was built
    for: the rows that come back each epoch (right after the source, after a split) reuse
    it; others (after a shuffle) build their own."""

    __slots__ = ("_entry", "_lock")

    def __init__(self) -> None:
        self._entry: tuple[Any, _Cumulative] | None = None
        self._lock = threading.RLock()  # building may run a weights function: user code

    def get(self, rows: Any, build: Callable[[], _Cumulative]) -> _Cumulative:
        with self._lock:
            if self._entry is not None and _same_rows(self._entry[0], rows):
                return self._entry[1]
            cumulative = build()
            self._entry = (rows, cumulative)
            return cumulative


def _same_rows(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    return bool(a == b)  # ranges (or None: weights by position)


@attrs.frozen
class _RowWeights:
    """The weights of the elements that reach a sample (lazily), and where the cumulative
    distribution built from them is kept (None: not kept)."""

    values: Callable[[], np.ndarray]
    cache: _CumulativeCache | None = None
    rows: Any = None

    def cumulative(self) -> _Cumulative:
        if self.cache is None:
            return _Cumulative(self.values())
        return self.cache.get(self.rows, lambda: _Cumulative(self.values()))


# -- weights from a function of the element ----------------------------------------------------
def _weigh(fn: Callable[[Any], Any], keys: list[int], fetch: Callable[[int], Any],
           stage: Stage) -> np.ndarray:
    """``fn`` of the elements at ``keys``, in that order, as checked float64 weights; an
    error is noted with the key of the element it came from."""
    pending = iter(keys)
    try:
        values = np.fromiter(map(fn, map(fetch, pending)), np.float64, count=len(keys))
    except Exception as exc:
        add_note(exc, stage, keys[len(keys) - operator.length_hint(pending) - 1])
        raise
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if len(bad):
        raise fail("sample", f"the weights function gave {float(values[bad[0]])!r} for the "
                   f"element with key {keys[bad[0]]}: weights must be finite and not negative")
    return values


class _SourceWeights:
    """What one weights function gives one source's elements: each element's weight
    computed at most once, the first time an epoch needs it (NaN until then)."""

    def __init__(self, fn: Callable[[Any], Any], source: Source) -> None:
        self.fn = fn
        self.source = weakref.ref(source)
        self.size = source.size()
        self.values = np.full(self.size, np.nan)
        self.known = 0
        self.lock = threading.RLock()
        self.cumulative = _CumulativeCache()

    def of_rows(self, rows: Any, stage: Stage) -> _RowWeights:
        return _RowWeights(lambda: self._gathered(rows, stage), self.cumulative, rows)

    def _gathered(self, rows: Any, stage: Stage) -> np.ndarray:
        with self.lock:
            if self.known < self.size:
                wanted = np.arange(rows.start, rows.stop, rows.step) if isinstance(
                    rows, range) else np.unique(rows)
                need = wanted[np.isnan(self.values[wanted])]
                if len(need):
                    source = self.source()
                    assert source is not None  # it is running
                    self.values[need] = _weigh(self.fn, need.tolist(), source.fetcher(), stage)
                    self.known += len(need)
            return _gather(self.values, rows)


class _FunctionWeights:
    """Weights of functions over sources, one :class:`_SourceWeights` per ``(function,
    source object)``, kept while the source object lives: a ``Loader`` (which reads its
    list once, when compiled) or a pipe iterated epoch after epoch computes them once."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int], _SourceWeights] = {}
        self._lock = threading.Lock()

    def of(self, fn: Callable[[Any], Any], source: Source) -> _SourceWeights:
        key = (id(fn), id(source))
        with self._lock:
            found = self._entries.get(key)
            if found is None or found.source() is not source or found.size != source.size():
                found = self._entries[key] = _SourceWeights(fn, source)
                weakref.finalize(source, self._entries.pop, key, None)
            return found


_FUNCTION_WEIGHTS = _FunctionWeights()


# -- the stages --------------------------------------------------------------------------------
class _Selection(IndexStage):
    """Chooses positions of the whole input: its stage-by-stage definition (``stream``)
    takes the input, then yields the chosen positions."""

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> np.ndarray:
        raise NotImplementedError

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        everything = list(items)
        positions = self.select(len(everything), ctx, stage_key)
        return (everything[j] for j in positions.tolist())


WeightsArg = Weights | Callable[[Any], Any] | None


@attrs.frozen(kw_only=True, repr=False)
class Sample(_Selection):
    call_name: ClassVar[str] = "sample"
    keeps_random_access: ClassVar[bool] = True
    n: int | None = positional(default=None)
    #: by position or by source index (:class:`Weights`), or a function of the element
    weights: WeightsArg = None
    replace: bool = False
    name: str | None = None

    def draws_randomness(self) -> bool:
        return True

    def needs_random_access(self) -> bool:
        return True

    def random_access_error(self) -> str:
        return f"draws from the whole dataset by index{_AFTER_SOURCE}"

    def check_after(self, before: tuple[Stage, ...]) -> None:
        if _is_function(self.weights):
            _check_only_index_stages_before(self, before)
        elif isinstance(self.weights, Weights) and self.weights.by == BY_SOURCE:
            _check_one_weight_per_source_element(self.weights, before)

    def length(self, n: int) -> int:
        return n if self.n is None else self.n

    # -- what it draws ------------------------------------------------------------------
    def positions(self, n: int, weights: _RowWeights | None, ctx: EpochContext,
                  stage_key: int) -> np.ndarray:
        """The input positions drawn from ``n`` inputs whose weights are ``weights``."""
        size = self.length(n)
        if weights is None:
            if not self.replace and size > n:
                raise fail("sample", f"cannot draw {size} distinct elements from {n}; pass "
                           "replace=True")
            if n == 0:
                return np.zeros(0, dtype=np.int64)
            return ctx.stage_rng(stage_key).choice(n, size=size, replace=self.replace
                                                   ).astype(np.int64)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if self.replace:  # Generator.choice's draws, from a distribution built once
            return weights.cumulative().draw(ctx.stage_rng(stage_key), size)
        w = weights.values()
        p = w / _total(w)
        if size > np.count_nonzero(p):
            raise fail("sample", f"cannot draw {size} distinct elements: only "
                       f"{np.count_nonzero(p)} have a weight above 0; pass replace=True")
        return ctx.stage_rng(stage_key).choice(n, size=size, replace=False, p=p).astype(np.int64)

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> np.ndarray:
        """The positions drawn from ``n`` inputs (weights by position, or none: the others
        need to know which elements reach it, see ``stream`` and ``index_step``)."""
        if self.weights is not None and (
                not isinstance(self.weights, Weights) or self.weights.by != BY_POSITION):
            raise TypeError(f"{self!r}: weights by source index or a function need the "
                            "elements' keys, not only their number")
        return self.positions(n, self._by_position(n), ctx, stage_key)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        """The reference: a function weighs the elements as they reach it, each epoch."""
        everything = list(items)
        weights: _RowWeights | None
        if _is_function(self.weights):
            weights = _RowWeights(lambda: self._weigh_items(everything))
        elif isinstance(self.weights, Weights) and self.weights.by == BY_SOURCE:
            keys = np.fromiter((k for k, _ in everything), np.int64, count=len(everything))
            weights = _RowWeights(lambda: _gather(self._fixed_weights().values, keys))
        else:
            weights = self._by_position(len(everything))
        positions = self.positions(len(everything), weights, ctx, stage_key)
        return (everything[j] for j in positions.tolist())

    def index_step(
        self, rows: Any, columns: list[np.ndarray], ctx: EpochContext, stage_key: int
    ) -> tuple[Any, list[np.ndarray]]:
        if isinstance(self.weights, Weights) and self.weights.by == BY_SOURCE:
            return self.step(self.weights.of_rows(rows), rows, columns, ctx, stage_key)
        return self.step(self._by_position(len(rows)), rows, columns, ctx, stage_key)

    def step(
        self, weights: _RowWeights | None, rows: Any, columns: list[np.ndarray],
        ctx: EpochContext, stage_key: int,
    ) -> tuple[Any, list[np.ndarray]]:
        """The head's index table after this stage, the rows weighed by ``weights``."""
        sel = self.positions(len(rows), weights, ctx, stage_key)
        picked = rows.start + rows.step * sel if isinstance(rows, range) else rows[sel]
        return picked, [c[sel] for c in columns]

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        # a weights function reads the source: the head gets this sample paired with it
        stage: Stage = self
        if _is_function(self.weights):
            stage = _OverSource(sample=self, source=planner.source)
        return bool(planner.add_index(stage, stage_key))

    def _by_position(self, n: int) -> _RowWeights | None:
        if self.weights is None:
            return None
        weights = self._fixed_weights()
        if len(weights.values) != n:
            raise fail("sample", f"{len(weights.values)} weights for {n} elements: give one "
                       "weight per element")
        return _RowWeights(lambda: weights.values, weights._cumulative)

    def _fixed_weights(self) -> Weights:
        assert isinstance(self.weights, Weights)
        return self.weights

    def _weigh_items(self, items: list[Item]) -> np.ndarray:
        """The function's weight of each item, each key weighed once, in key order (as the
        head does)."""
        assert _is_function(self.weights)
        by_key = dict(items)
        keys = sorted(by_key)
        values = _weigh(self.weights, keys, by_key.__getitem__, self)  # type: ignore[arg-type]
        return values[np.searchsorted(keys, [k for k, _ in items])]


@attrs.frozen(kw_only=True, repr=False, eq=False)
class _OverSource(IndexStage):
    """A ``sample`` with a weights function, paired with the source its function reads: what
    the planner places in the head (the stage itself stays a value, holding no source)."""

    sample: Sample
    source: Source

    def length(self, n: int) -> int:
        return self.sample.length(n)

    def draws_randomness(self) -> bool:
        return True

    def index_step(
        self, rows: Any, columns: list[np.ndarray], ctx: EpochContext, stage_key: int
    ) -> tuple[Any, list[np.ndarray]]:
        fn = self.sample.weights
        assert callable(fn)
        weights = _FUNCTION_WEIGHTS.of(fn, self.source).of_rows(rows, self.sample)
        return self.sample.step(weights, rows, columns, ctx, stage_key)

    def __repr__(self) -> str:
        return repr(self.sample)


def _is_function(weights: object) -> bool:
    return weights is not None and not isinstance(weights, Weights)


def _total(w: np.ndarray) -> float:
    total = float(w.sum())
    if not total > 0:
        raise fail("sample", f"the weights of the {len(w)} elements that reach it are all 0: "
                   "nothing to draw")
    return total


def _check_only_index_stages_before(stage: Sample, before: tuple[Stage, ...]) -> None:
    """A weights function is given the source's elements: nothing before it may change them."""
    for s in before:
        if not (s.is_source or s.transparent or isinstance(s, IndexStage)):
            raise TypeError(
                f"{stage!r}: a weights function is given the source's elements, so only "
                f"stages that select or reorder them (shuffle, split, sample) may come before "
                f"it, not {s!r}; put the sample before {s!r}, or weigh by source index with "
                "weights=by_source_index(...)"
            )


def _check_one_weight_per_source_element(weights: Weights, before: tuple[Stage, ...]) -> None:
    source = before[0] if before and before[0].is_source else None
    if not isinstance(source, Source) or not source.keeps_random_access:
        return  # a fragment: checked again once composed after its source
    if len(weights.values) != source.size():
        raise fail("sample", f"by_source_index has {len(weights.values)} weights for a source "
                   f"of {source.size()} elements: give one weight per source element")


def sample(
    n: int | None = None,
    *,
    weights: Sequence[float] | np.ndarray | Weights | Callable[[Any], float] | None = None,
    replace: bool = False,
    name: str | None = None,
) -> Pipe[Any]:
    """Draw ``n`` elements each epoch (all of them, by default), differently each epoch and
    the same for the same ``(seed, epoch)``: PyTorch's ``RandomSampler`` and
    ``WeightedRandomSampler`` as a stage.

    ``weights`` make an element's chance proportional to its weight (finite, not negative,
    not all 0). They are one of:

    * a sequence or array, one weight per element that reaches the sample, in order;
    * :func:`by_source_index` ``(array)``, one weight per *source* element: the same
      weights then work after a ``split`` or a ``shuffle``;
    * a function of the element (``lambda x: table[x["label"]]``): the weight of source
      element ``i`` is ``fn(source[i])``. Only stages that select or reorder (``shuffle``,
      ``split``, ``sample``) may come before it. A loader (and ``pipe.iter``) calls it
      once per source element, in the main process, the first time an epoch needs that
      weight, and keeps the weights while the source object lives (per function and
      source object): never again in later epochs, never in a worker. The stage-by-stage
      reference (``datapipes.testing.reference``) calls it on the elements as they reach
      the sample, each epoch: it is the definition, not the fast path.

    ``replace=True`` lets an element come more than once in an epoch (needed to draw more
    elements than there are). Index arithmetic: no element is read to choose (but for a
    weights function, once). An element drawn twice in one epoch has the same key both
    times, so a ``map(f, rng=True)`` after it makes the same draws for both copies (DESIGN
    §4: draws follow the element).

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
    return Pipe(Sample(n=n, weights=_weights_arg(weights), replace=replace, name=name))


def _weights_arg(weights: Any) -> WeightsArg:
    if weights is None or isinstance(weights, Weights):
        return weights
    if callable(weights) and not hasattr(weights, "__len__"):
        return weights  # type: ignore[no-any-return]
    return Weights(_checked_weights("sample", weights), BY_POSITION)


def _check_bool(stage: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise fail(stage, f"{name} must be a bool, got {value!r}", TypeError)


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
