"""``batch`` and ``unbatch``: group consecutive elements, and take groups apart."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
import numpy as np

from .._graph import EpochContext, Pipe, check_int, fail, positional
from ._kernel import FLAT, ElementOp
from ._kinds import CountingStage, ElementStage, Triple

T = TypeVar("T")


def batch_iter(items: Iterable[T], size: int, *, drop_last: bool = False) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items; the last may be shorter unless ``drop_last``.

    >>> list(batch_iter(range(5), 2))
    [[0, 1], [2, 3], [4]]
    >>> list(batch_iter(range(5), 2, drop_last=True))
    [[0, 1], [2, 3]]
    """
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        if drop_last and len(chunk) < size:
            return
        yield chunk


def batch_count(n: int, size: int, drop_last: bool) -> int:
    return n // size if drop_last else -(-n // size)


@attrs.frozen(kw_only=True, repr=False)
class Batch(CountingStage):
    call_name: ClassVar[str] = "batch"
    size: int = positional()
    drop_last: bool = False

    def length(self, n: int) -> int:
        return batch_count(n, self.size, self.drop_last)

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        return bool(planner.add_batch(self))

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        # the counter: the key of the next batch (a batch is cut only when it is full, so
        # between outputs no element sits half-batched)
        b = local
        for chunk in batch_iter(items, self.size, drop_last=self.drop_last):
            yield b, [x for _, x, _ in chunk], [chunk[-1][2], b + 1]
            b += 1

    def bounds(self, n: int, start: int) -> Iterator[tuple[int, int, int]]:
        """In the workers' segment over ``n`` indexed units: ``(b, first, stop)`` for each
        batch from batch ``start`` (its membership is index arithmetic)."""
        stop = n - n % self.size if self.drop_last else n
        for b in range(start, -(-stop // self.size)):
            yield b, b * self.size, min(b * self.size + self.size, stop)


def batch(
    size: int | None = None,
    *,
    drop_last: bool = False,
    max_tokens: int | None = None,
    length: Callable[[Any], int] = len,
    oversize: str = "error",
) -> Pipe[list[Any]]:
    """Group consecutive elements into lists of ``size``.

    A batch's key is its position among the batches of the epoch.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(5)) | dp.batch(2))
    [[0, 1], [2, 3], [4]]

    With ``max_tokens``, a batch takes consecutive elements while its padded size (count ×
    the longest ``length(element)``) stays within ``max_tokens`` (and, with ``size``, while
    it holds fewer than ``size``). An element longer than ``max_tokens`` raises a
    ``ValueError`` naming it, or with ``oversize="alone"`` gets a batch of its own.
    ``drop_last`` drops the batch that the end of the epoch cut short.

    >>> list(dp.from_sequence(["ab", "c", "defg", "hi", "jklmnop"]) | dp.batch(max_tokens=8))
    [['ab', 'c'], ['defg', 'hi'], ['jklmnop']]
    """
    if max_tokens is not None:
        from .ragged import token_batch

        return token_batch(size, drop_last=drop_last, max_tokens=max_tokens, length=length,
                           oversize=oversize)
    if size is None:
        raise fail("batch", "size must be an int >= 1 (or give max_tokens=...), got None",
                   TypeError)
    size = check_int("batch", "size", size, minimum=1)
    if not isinstance(drop_last, bool):
        raise fail("batch", f"drop_last must be a bool, got {drop_last!r}", TypeError)
    if length is not len or oversize != "error":
        raise fail("batch", "length and oversize apply only with max_tokens=...")
    return Pipe(Batch(size=size, drop_last=drop_last))


def unbatch_value(group: Any) -> Iterable[Any]:
    """The elements of one batch: a list, a tuple, an array or tensor (its rows), or a dict of
    equal-length columns (one dict per row).

    >>> list(unbatch_value({"a": [1, 2], "b": [3, 4]}))
    [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
    """
    if isinstance(group, Mapping):
        columns = {k: list(unbatch_value(v)) for k, v in group.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise fail("unbatch", f"the columns of a dict batch differ in length: {lengths}")
        n = lengths.pop() if lengths else 0
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if isinstance(group, (list, tuple)) or hasattr(group, "__iter__"):
        if isinstance(group, (str, bytes)):
            raise fail("unbatch", f"cannot take a string apart as a batch: {group!r}", TypeError)
        if isinstance(group, np.ndarray) and group.ndim == 0:
            raise fail("unbatch", "cannot take a 0-dimensional array apart", TypeError)
        return group
    raise fail("unbatch", f"cannot take a {type(group).__name__} apart as a batch", TypeError)


@attrs.frozen(kw_only=True, repr=False)
class Unbatch(ElementStage):
    call_name: ClassVar[str] = "unbatch"

    def element_op(self, stage_key: int) -> ElementOp:
        return (FLAT, unbatch_value, self, stage_key)


def unbatch() -> Pipe[Any]:
    """Take batches apart: the inverse of ``batch``.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(5)) | dp.batch(2) | dp.unbatch())
    [0, 1, 2, 3, 4]
    """
    return Pipe(Unbatch())
