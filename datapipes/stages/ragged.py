"""Ragged data: elements of different lengths, batched so that little of a batch is padding.

``bucket_by_length`` batches each element with others of a similar length (tf.data's
``bucket_by_sequence_length``); ``batch(max_tokens=...)`` cuts consecutive elements into
batches by their padded size (its stage lives here, the public function in ``batch.py``);
``pack`` concatenates token sequences into rows of one length, as LLM pretraining does.

All three decide membership from the data, so they run after the workers, in the main
process, on the stream in order. ``bucket_by_length`` and ``pack`` hold elements across
their outputs: a checkpoint taken while they run replays the epoch up to its position.
``batch(max_tokens=...)`` holds nothing between its outputs, so it resumes from a counter.
"""

from __future__ import annotations

import bisect
import itertools
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np

from .._graph import (
    EpochContext,
    Item,
    Pipe,
    Stage,
    check_callable,
    check_int,
    fail,
    positional,
    value_repr,
)
from ._kinds import CountingStage, Triple

T = TypeVar("T")
_OVERSIZE = ("error", "alone")


# -- the plain generators: no keys, no stages ------------------------------------------------


def bucket_iter(
    items: Iterable[T],
    boundaries: Iterable[int],
    batch_sizes: Iterable[int],
    *,
    length: Callable[[Any], int] = len,
    drop_last: bool = False,
) -> Iterator[list[T]]:
    """Batch each item with others of a similar length.

    An item of length ``n`` goes to bucket ``bisect_right(boundaries, n)``: boundaries
    ``b0 < b1 < ...`` make the buckets ``[0, b0), [b0, b1), ..., [b_last, inf)``. A bucket
    yields its batch as soon as it holds its size from ``batch_sizes``; at the end the
    partial buckets follow, in bucket order, unless ``drop_last``.

    >>> words = ["a", "bb", "c", "dddd", "ee", "f", "gggg"]
    >>> list(bucket_iter(words, [2, 4], [2, 2, 2]))
    [['a', 'c'], ['bb', 'ee'], ['dddd', 'gggg'], ['f']]
    >>> list(bucket_iter(words, [2, 4], [2, 2, 2], drop_last=True))
    [['a', 'c'], ['bb', 'ee'], ['dddd', 'gggg']]
    """
    measured = ((length(x), x) for x in items)
    return _bucketed(measured, tuple(boundaries), tuple(batch_sizes), drop_last)


def _bucketed(
    measured: Iterable[tuple[int, T]],
    boundaries: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    drop_last: bool,
) -> Iterator[list[T]]:
    buckets: list[list[T]] = [[] for _ in batch_sizes]
    for n, x in measured:
        i = bisect.bisect_right(boundaries, n)
        bucket = buckets[i]
        bucket.append(x)
        if len(bucket) == batch_sizes[i]:
            yield bucket
            buckets[i] = []
    if not drop_last:
        yield from (bucket for bucket in buckets if bucket)


def token_batch_iter(
    items: Iterable[T],
    max_tokens: int,
    *,
    size: int | None = None,
    length: Callable[[Any], int] = len,
    oversize: str = "error",
    drop_last: bool = False,
) -> Iterator[list[T]]:
    """Consecutive lists whose padded size (count × longest) is at most ``max_tokens``.

    Each list takes items while the next one still fits (and, with ``size``, while it holds
    fewer than ``size``). An item longer than ``max_tokens`` raises ``ValueError``, or with
    ``oversize="alone"`` gets a list of its own. ``drop_last`` drops the list the end of the
    input cut short (the one still open then).

    >>> words = ["ab", "c", "defg", "hi", "jklmnop", "q"]
    >>> list(token_batch_iter(words, 8))
    [['ab', 'c'], ['defg', 'hi'], ['jklmnop'], ['q']]
    >>> list(token_batch_iter(words, 8, size=1))
    [['ab'], ['c'], ['defg'], ['hi'], ['jklmnop'], ['q']]
    >>> list(token_batch_iter(["abc", "defghijk", "l"], 4, oversize="alone"))
    [['abc'], ['defghijk'], ['l']]
    """
    measured = ((length(x), x) for x in items)
    return _token_batched(measured, max_tokens, size, oversize, drop_last)


def _token_batched(
    measured: Iterable[tuple[int, T]],
    max_tokens: int,
    size: int | None,
    oversize: str,
    drop_last: bool,
) -> Iterator[list[T]]:
    batch: list[T] = []
    longest = 0
    for n, x in measured:
        if n > max_tokens:
            if oversize == "error":
                raise ValueError(f"an element has length {n}, more than max_tokens={max_tokens}")
            if batch:
                yield batch
                batch, longest = [], 0
            yield [x]
            continue
        if batch and (len(batch) + 1) * max(longest, n) > max_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(x)
        longest = max(longest, n)
        if len(batch) == size:
            yield batch
            batch, longest = [], 0
    if batch and not drop_last:
        yield batch


def pack_iter(
    sequences: Iterable[Any], length: int, *, drop_remainder: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """Concatenate token sequences (1-D integer arrays or lists) into rows of ``length``.

    Each row is ``{"tokens": int64, "segment_ids": int32, "positions": int32}``, each of
    ``length``: ``segment_ids`` numbers the sequences within the row from 1 (0 is padding)
    and ``positions`` counts each token's place in its own sequence. A sequence that does
    not fit carries its rest into the next row. The last row is padded with zeros, or
    dropped with ``drop_remainder``.

    >>> [row["tokens"].tolist() for row in pack_iter([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4)]
    [[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 0, 0]]
    """
    row = _Row(length)
    for seq in sequences:
        tokens = np.asarray(seq)
        start, n = 0, len(tokens)
        while start < n:
            start = row.add(tokens, start)
            if row.full:
                yield row.take()
    if row.fill and not drop_remainder:
        yield row.take()


class _Row:
    """The row being packed: its three arrays, how far they are filled, the last segment."""

    __slots__ = ("fill", "length", "positions", "segment", "segment_ids", "tokens")
    tokens: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    fill: int
    segment: int

    def __init__(self, length: int) -> None:
        self.length = length
        self._clear()

    def _clear(self) -> None:
        self.tokens = np.zeros(self.length, np.int64)
        self.segment_ids = np.zeros(self.length, np.int32)
        self.positions = np.zeros(self.length, np.int32)
        self.fill = 0
        self.segment = 0

    @property
    def full(self) -> bool:
        return self.fill == self.length

    def add(self, seq: np.ndarray, start: int) -> int:
        """Put as much of ``seq[start:]`` as fits; return where the rest of it starts."""
        take = min(len(seq) - start, self.length - self.fill)
        stop = self.fill + take
        self.segment += 1
        self.tokens[self.fill : stop] = seq[start : start + take]
        self.segment_ids[self.fill : stop] = self.segment
        self.positions[self.fill : stop] = np.arange(start, start + take)
        self.fill = stop
        return start + take

    def take(self) -> dict[str, np.ndarray]:
        row = {"tokens": self.tokens, "segment_ids": self.segment_ids,
               "positions": self.positions}
        self._clear()
        return row


# -- what the stages share -------------------------------------------------------------------


def _measured(
    stage: Stage,
    length: Callable[[Any], Any],
    entries: Iterable[Any],
    ctx: EpochContext,
    max_tokens: int | None = None,
) -> Iterator[tuple[int, Any]]:
    """``(length(value), entry)`` for each ``(key, value, ...)`` entry. An error in
    ``length``, a length that is not an int >= 0, or one above ``max_tokens`` is noted with
    the stage and the key and raised, or under ``on_error="skip"`` the entry is dropped."""
    name = stage.call_name
    for entry in entries:
        try:
            n = length(entry[1])
            if isinstance(n, bool) or not isinstance(n, numbers.Integral):
                raise fail(name, f"length must return an int >= 0, got {value_repr(n)}",
                           TypeError)
            n = int(n)
            if n < 0:
                raise fail(name, f"length must return an int >= 0, got {n!r}")
            if max_tokens is not None and n > max_tokens:
                raise fail(name, f"the element with key {entry[0]!r} has length {n}, more than "
                                 f"max_tokens={max_tokens}; give such elements a batch of their "
                                 "own with oversize='alone', or drop them before (a filter)")
        except Exception as exc:
            ctx.failed(exc, stage, entry[0])
            continue
        yield n, entry


def _int_tuple(stage: str, name: str, value: Any, *, minimum: int) -> tuple[int, ...]:
    """``value`` (an iterable of ints, not a string or a mapping) as a tuple of plain ints."""
    message = f"{name} must be a sequence of ints >= {minimum}, got {value_repr(value)}"
    try:
        if isinstance(value, (str, bytes, Mapping)):
            raise TypeError
        items = list(value)
    except TypeError:  # not iterable, a 0-d array, or a string
        raise fail(stage, message, TypeError) from None
    if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in items):
        raise fail(stage, message, TypeError)
    if any(i < minimum for i in items):
        raise fail(stage, message)
    return tuple(int(i) for i in items)


def _check_bool(stage: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise fail(stage, f"{name} must be a bool, got {value!r}", TypeError)
    return value


# -- bucket_by_length ------------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class BucketByLength(Stage):
    call_name: ClassVar[str] = "bucket_by_length"
    boundaries: tuple[int, ...] = positional()
    batch_sizes: tuple[int, ...] = positional()
    length_fn: Callable[[Any], int] = attrs.field(default=len, alias="length")
    drop_last: bool = False

    def tail_reason(self, one_to_one: bool) -> str:
        return "holds a partial batch per bucket: on the stream in order"

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        measured = _measured(self, self.length_fn, items, ctx)
        groups = _bucketed(measured, self.boundaries, self.batch_sizes, self.drop_last)
        for b, group in enumerate(groups):
            yield b, [x for _, x in group]



def bucket_by_length(
    boundaries: Iterable[int],
    batch_sizes: Iterable[int],
    *,
    length: Callable[[Any], int] = len,
    drop_last: bool = False,
) -> Pipe[list[Any]]:
    """Batch each element with others of a similar length, as tf.data's
    ``bucket_by_sequence_length``: little padding, batches of the sizes you choose.

    Boundaries ``b0 < b1 < ...`` make ``len(boundaries) + 1`` buckets ``[0, b0), [b0, b1),
    ..., [b_last, inf)``, and ``batch_sizes`` gives each its batch size. An element goes to
    the bucket of ``length(element)``; a bucket yields its batch (a list) once it holds its
    size. At the end of the epoch the partial buckets follow, in bucket order, unless
    ``drop_last``. The ``b``-th batch of the epoch has key ``b``.

    >>> import datapipes as dp
    >>> words = ["a", "bb", "c", "dddd", "ee", "f", "gggg"]
    >>> list(dp.from_sequence(words) | bucket_by_length([2, 4], [2, 2, 2]))
    [['a', 'c'], ['bb', 'ee'], ['dddd', 'gggg'], ['f']]
    """
    name = "bucket_by_length"
    bounds = _int_tuple(name, "boundaries", boundaries, minimum=1)
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise fail(name, f"boundaries must be strictly increasing, got {list(bounds)}")
    sizes = _int_tuple(name, "batch_sizes", batch_sizes, minimum=1)
    if len(sizes) != len(bounds) + 1:
        raise fail(name, f"batch_sizes must give one size per bucket: {len(bounds) + 1} for "
                         f"{len(bounds)} boundaries, got {len(sizes)}")
    check_callable(name, "length", length)
    _check_bool(name, "drop_last", drop_last)
    return Pipe(BucketByLength(boundaries=bounds, batch_sizes=sizes, length=length,
                               drop_last=drop_last))


# -- batch(max_tokens=...) -------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class TokenBatch(CountingStage):
    """``batch(max_tokens=...)``: its membership depends on the elements' lengths, so it is
    never planned in the workers; its position is one counter (nothing is held between its
    outputs), so a checkpoint resumes it without replay."""

    call_name: ClassVar[str] = "batch"
    size: int | None = positional(default=None)
    drop_last: bool = False
    max_tokens: int
    length_fn: Callable[[Any], int] = attrs.field(default=len, alias="length")
    oversize: str = "error"

    def tail_reason(self, one_to_one: bool) -> str:
        return "membership depends on the elements' lengths: formed in order"

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        # the counter: the key of the next batch. A batch is cut before the element that does
        # not fit, so it ends with its last member's token: from there, that element starts
        # the next batch, as it did in the uninterrupted run.
        limit = self.max_tokens if self.oversize == "error" else None
        measured = _measured(self, self.length_fn, items, ctx, limit)
        b = local
        groups = _token_batched(measured, self.max_tokens, self.size, self.oversize,
                                self.drop_last)
        for group in groups:
            yield b, [x for _, x, _ in group], [group[-1][2], b + 1]
            b += 1



def token_batch(
    size: int | None,
    *,
    drop_last: object,
    max_tokens: int,
    length: Callable[[Any], int],
    oversize: str,
) -> Pipe[list[Any]]:
    """The stage ``batch(size, max_tokens=...)`` builds, its arguments checked."""
    if size is not None:
        size = check_int("batch", "size", size, minimum=1)
    drop_last = _check_bool("batch", "drop_last", drop_last)
    max_tokens = check_int("batch", "max_tokens", max_tokens, minimum=1)
    check_callable("batch", "length", length)
    if oversize not in _OVERSIZE:
        raise fail("batch", f"oversize must be 'error' or 'alone', got {oversize!r}")
    return Pipe(TokenBatch(size=size, drop_last=drop_last, max_tokens=max_tokens,
                           length=length, oversize=oversize))


# -- pack ------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class Pack(Stage):
    call_name: ClassVar[str] = "pack"
    row_length: int = positional()
    field: str | None = None
    drop_remainder: bool = False

    def tail_reason(self, one_to_one: bool) -> str:
        return "carries the rest of a sequence into the next row: on the stream in order"

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        rows = pack_iter(self._sequences(items, ctx), self.row_length,
                         drop_remainder=self.drop_remainder)
        return enumerate(rows)

    def _sequences(self, items: Iterator[Item], ctx: EpochContext) -> Iterator[np.ndarray]:
        for key, x in items:
            try:
                tokens = self._tokens(x)
            except Exception as exc:
                ctx.failed(exc, self, key)
                continue
            yield tokens

    def _tokens(self, x: Any) -> np.ndarray:
        """The element's token sequence as a 1-D integer array."""
        if self.field is not None:
            if not isinstance(x, Mapping):
                raise fail("pack", f"field={self.field!r} takes the tokens from dict elements, "
                                   f"got a {type(x).__name__}", TypeError)
            if self.field not in x:
                raise fail("pack", f"the element has no field {self.field!r} (its fields: "
                                   f"{value_repr(list(x))})")
            x = x[self.field]
        tokens = np.asarray(x)
        if tokens.ndim != 1:
            raise fail("pack", f"a sequence must be 1-D, got shape {tokens.shape}")
        if tokens.size and tokens.dtype.kind not in "iu":
            raise fail("pack", f"tokens must be integers, got dtype {tokens.dtype}", TypeError)
        return tokens



def pack(length: int, *, field: str | None = None, drop_remainder: bool = False) -> Pipe[Any]:
    """Concatenate token sequences into rows of exactly ``length`` tokens, as LLM
    pretraining packs them: no padding but at the very end.

    The elements are 1-D integer arrays or lists of ints (with ``field``, dicts holding one
    under that key; their other fields are dropped). Each row is a dict of three arrays of
    ``length``: ``"tokens"`` (int64), ``"segment_ids"`` (int32: 1, 2, ... for the sequences
    in the row, 0 for padding) and ``"positions"`` (int32: each token's place in its own
    sequence). A sequence that does not fit carries its rest into the next row, where it
    is segment 1. Only the last row is padded (tokens and segment ids 0); with
    ``drop_remainder`` it is dropped instead. The ``r``-th row of the epoch has key ``r``.

    >>> import datapipes as dp
    >>> rows = list(dp.from_sequence([[1, 2, 3], [4, 5], [6, 7, 8, 9]]) | pack(4))
    >>> [row["tokens"].tolist() for row in rows]
    [[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 0, 0]]
    >>> [row["segment_ids"].tolist() for row in rows]
    [[1, 1, 1, 2], [1, 2, 2, 2], [1, 0, 0, 0]]
    >>> [row["positions"].tolist() for row in rows]
    [[0, 1, 2, 0], [1, 0, 1, 2], [3, 0, 0, 0]]
    """
    length = check_int("pack", "length", length, minimum=1)
    if field is not None and (not isinstance(field, str) or not field):
        raise fail("pack", f"field must be a non-empty str or None, got {field!r}", TypeError)
    _check_bool("pack", "drop_remainder", drop_remainder)
    return Pipe(Pack(row_length=length, field=field, drop_remainder=drop_remainder))
