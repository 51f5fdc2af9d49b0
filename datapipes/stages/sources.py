"""Sources: where a pipe's elements come from."""

from __future__ import annotations

import builtins
import collections.abc as cabc
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, Stage, add_note, fail, positional, value_repr
from ..executors.mapped import MappedArray, file_backing
from ..executors.shared_list import path_note, share_list


def data_eq(a: Any, b: Any) -> bool:
    """Equality for data held by a source: by value where that is cheap and well defined."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if _is_tensor(a):
        import torch

        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(data_eq(x, y) for x, y in zip(a, b, strict=True))
    try:
        return bool(a == b)
    except Exception:
        return False


def _is_tensor(value: object) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype")


class Source(Stage):
    """A stage that starts a pipe."""

    is_source: ClassVar[bool] = True

    def size(self) -> int:
        raise NotImplementedError

    def fetch(self, index: int) -> Any:
        raise NotImplementedError

    def fetcher(self) -> Callable[[int], Any]:
        """A callable ``i -> element``, as direct as possible (it is called per element)."""
        return self.fetch

    def fetch_many(self, indices: list[int]) -> Iterator[Any]:
        """The elements at ``indices`` (valid indices, from the head), lazily."""
        return builtins.map(self.fetcher(), indices)

    def elements(self) -> Iterator[Any]:
        """The elements of one epoch, in source order."""
        return builtins.map(self.fetcher(), range(self.size()))

    def read(self, indices: Iterable[int], ctx: EpochContext) -> Iterator[Item]:
        """``(index, element)`` for each of ``indices`` (random access only). An element
        that cannot be fetched is noted with its index: raised, or dropped under skip."""
        fetch = self.fetcher()
        for index in indices:
            try:
                x = fetch(index)
            except Exception as exc:
                ctx.failed(exc, self, index)
                continue
            yield index, x

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        if self.keeps_random_access:
            return self.read(range(self.size()), ctx)
        return self._read_stream()

    def _read_stream(self) -> Iterator[Item]:
        elements = self.elements()
        key = 0
        while True:
            try:
                x = next(elements)
            except StopIteration:
                return
            except Exception as exc:
                add_note(exc, self, key)
                raise  # a stream cannot go on after its iterator failed: never skip
            yield key, x
            key += 1

    def read_at_compile(self) -> Source:
        """The source a Loader reads: taken when it is compiled (a list source copies its
        list, so changing the list afterwards changes nothing for the Loader)."""
        return self

    def for_workers(self) -> tuple[Source, str] | None:
        """The source as process workers should receive it, and what ``explain`` says of
        that (data that travels by reference, a large list pickled once); None: as it is."""
        return None

    def sample_text(self) -> str:
        """A few of the source's elements as text, when reading them costs nothing (data in
        memory), for a checkpoint's fingerprint: so that a state does not fit another list
        of the same length. Three elements at most, never a walk over the data."""
        return ""

    def __repr__(self) -> str:
        return super().__repr__()


def _three(data: Any) -> str:
    n = len(data)
    picks = sorted({0, n // 2, n - 1}) if n else []
    return "|".join(repr(data[i])[:200] for i in picks)


@attrs.frozen(kw_only=True, repr=False)
class FromSequence(Source):
    call_name: ClassVar[str] = "from_sequence"
    keeps_random_access: ClassVar[bool] = True
    seq: Any = positional(eq=attrs.cmp_using(eq=data_eq), hash=False)

    def size(self) -> int:
        return len(self.seq)

    def length(self, n: int) -> int:
        return len(self.seq)

    def fetch(self, index: int) -> Any:
        return self.seq[index]

    def fetcher(self) -> Callable[[int], Any]:
        return self.seq.__getitem__  # type: ignore[no-any-return]

    def sample_text(self) -> str:
        return _three(self.seq) if isinstance(self.seq, (list, tuple, range)) else ""

    def read_at_compile(self) -> Source:
        return FromSequence(seq=list(self.seq)) if type(self.seq) is list else self

    def for_workers(self) -> tuple[Source, str] | None:
        if file_backing(self.seq) is not None:
            seq = MappedArray(self.seq)
            return FromSequence(seq=seq), path_note([seq])
        shared = share_list(self.seq)
        if shared is None:
            return None
        seq, note = shared
        return (self if seq is self.seq else FromSequence(seq=seq)), note

    def fetch_many(self, indices: list[int]) -> Iterator[Any]:
        seq = self.seq
        if type(seq) is range and seq.start == 0 and seq.step == 1:
            return iter(indices)  # range(n)[i] is i: the usual index-to-sample source
        return builtins.map(seq.__getitem__, indices)


def from_sequence(seq: cabc.Sequence[Any] | Any) -> Pipe[Any]:
    """A random-access source over anything with ``__len__`` and ``__getitem__``.

    Lists, ``range``, NumPy arrays and map-style ``torch.utils.data.Dataset`` all work.
    Elements are fetched lazily, only when reached.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(["a", "b", "c"]) | dp.take(2))
    ['a', 'b']
    """
    if isinstance(seq, (cabc.Mapping, cabc.Iterator)) or not (
        hasattr(seq, "__len__") and hasattr(seq, "__getitem__")
    ):
        raise fail(
            "from_sequence",
            f"seq must support len() and integer indexing (a list, range, array or map-style "
            f"Dataset), got {type(seq).__name__}; for other iterables use from_iterable",
            TypeError,
        )
    return Pipe(FromSequence(seq=seq))


def _columns_eq(a: tuple[tuple[str, Any], ...], b: tuple[tuple[str, Any], ...]) -> bool:
    return len(a) == len(b) and all(
        na == nb and data_eq(ca, cb) for (na, ca), (nb, cb) in zip(a, b, strict=True)
    )


@attrs.frozen(kw_only=True, repr=False)
class FromArrays(Source):
    call_name: ClassVar[str] = "from_arrays"
    keeps_random_access: ClassVar[bool] = True
    columns: tuple[tuple[str, Any], ...] = attrs.field(
        eq=attrs.cmp_using(eq=_columns_eq), hash=False
    )

    def size(self) -> int:
        return len(self.columns[0][1])

    def length(self, n: int) -> int:
        return self.size()

    def fetch(self, index: int) -> dict[str, Any]:
        return {name: column[index] for name, column in self.columns}

    def for_workers(self) -> tuple[Source, str] | None:
        columns = [(name, MappedArray(c) if file_backing(c) is not None else c)
                   for name, c in self.columns]
        mapped = [c for _, c in columns if isinstance(c, MappedArray)]
        return (FromArrays(columns=tuple(columns)), path_note(mapped)) if mapped else None

    def sample_text(self) -> str:
        data = [name for name, _ in self.columns]
        data += [repr(column[i]) for _, column in self.columns
                 for i in {0, len(column) // 2, len(column) - 1} if len(column)]
        return _three(data)

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value_repr(col)}" for name, col in self.columns)
        return f"from_arrays({args})"


def from_arrays(**columns: Any) -> Pipe[dict[str, Any]]:
    """A random-access source over aligned arrays: element ``i`` is ``{name: column[i]}``.

    >>> import numpy as np, datapipes as dp
    >>> pipe = dp.from_arrays(x=np.arange(3), y=np.array([10, 20, 30]))
    >>> [(int(d["x"]), int(d["y"])) for d in pipe]
    [(0, 10), (1, 20), (2, 30)]
    """
    if not columns:
        raise fail("from_arrays", "give at least one column, e.g. from_arrays(x=array)")
    for name, column in columns.items():
        if not (isinstance(column, np.ndarray) or _is_tensor(column)):
            raise fail(
                "from_arrays",
                f"column {name!r} must be a NumPy array or a torch tensor, got "
                f"{type(column).__name__}; wrap it with numpy.asarray",
                TypeError,
            )
        if column.ndim == 0:
            raise fail("from_arrays", f"column {name!r} is 0-dimensional; it has no rows")
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise fail("from_arrays", f"columns must have the same length, got {detail}")
    return Pipe(FromArrays(columns=tuple(columns.items())))


@attrs.frozen(kw_only=True, repr=False)
class FromIterable(Source):
    call_name: ClassVar[str] = "from_iterable"
    obj: Iterable[Any] | Callable[[], Iterable[Any]] = positional(
        eq=attrs.cmp_using(eq=data_eq), hash=False
    )

    def length(self, n: int) -> int | None:
        return len(self.obj) if isinstance(self.obj, cabc.Sized) else None

    def elements(self) -> Iterator[Any]:
        if isinstance(self.obj, cabc.Iterable):
            return iter(self.obj)
        result = self.obj()
        if not isinstance(result, cabc.Iterable):
            raise fail(
                "from_iterable",
                f"the callable {value_repr(self.obj)} must return an iterable, got "
                f"{type(result).__name__}",
                TypeError,
            )
        return iter(result)


def from_iterable(obj: Iterable[Any] | Callable[[], Iterable[Any]]) -> Pipe[Any]:
    """A stream source: a re-iterable object, or a function returning a fresh iterator.

    Each epoch iterates it again, so a one-shot iterator (a generator object) is refused:
    pass the generator function instead.

    >>> import datapipes as dp
    >>> def numbers():
    ...     yield from range(3)
    >>> list(dp.from_iterable(numbers))
    [0, 1, 2]
    """
    if isinstance(obj, cabc.Iterator):
        raise fail(
            "from_iterable",
            f"got a one-shot iterator ({type(obj).__name__}), which cannot be run again for "
            "a second epoch; pass a re-iterable object or a function that returns a new "
            "iterator (e.g. the generator function itself, not its call)",
            TypeError,
        )
    if not (isinstance(obj, cabc.Iterable) or callable(obj)):
        raise fail(
            "from_iterable",
            f"obj must be iterable or a zero-argument callable, got {type(obj).__name__}",
            TypeError,
        )
    return Pipe(FromIterable(obj=obj))
