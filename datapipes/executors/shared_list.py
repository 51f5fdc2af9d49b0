"""Python lists shared with forked workers without copy-on-read.

Forked workers share the parent's memory copy-on-write, but merely reading a Python
object writes its reference count, so a worker that walks a large list of dicts ends up
with a private copy of every page it touched (PyTorch issue 13246): memory grows with
each worker over an epoch. Here the list is pickled once, element by element, into one
flat byte buffer: workers read bytes, which touches no reference count, and unpickle the
element they need.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._graph import Pipe
from .mapped import MappedArray
from .transport import portable_tensor

#: lists shorter than this are cheap to copy: not worth the unpickling per element
MIN_LENGTH = 10_000


class SerializedSequence:
    """A read-only sequence stored as pickled bytes in one buffer.

    >>> s = SerializedSequence([{"a": 1}, "two", 3.0])
    >>> len(s), s[0], s[-1]
    (3, {'a': 1}, 3.0)
    """

    def __init__(self, items: Sequence[Any]) -> None:
        buffer = io.BytesIO()
        pickler = _ElementPickler(buffer)
        ends = []
        for x in items:  # one pickle per element, each loadable alone
            pickler.dump(x)
            pickler.clear_memo()
            ends.append(buffer.tell())
        self._offsets = np.zeros(len(ends) + 1, dtype=np.int64)
        self._offsets[1:] = ends
        self._data = np.frombuffer(buffer.getbuffer(), dtype=np.uint8)
        self._n = len(ends)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        i = int(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"index {index} is out of range for {self._n} elements")
        start, stop = self._offsets[i : i + 2].tolist()
        return pickle.loads(self._data[start:stop].data)

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._offsets.nbytes)


class _ElementPickler(pickle.Pickler):
    """Pickles elements as a worker must load them: tensors of every dtype included."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)

    def reducer_override(self, obj: Any) -> Any:
        return portable_tensor(obj)


def snapshot(pipe: Pipe[Any]) -> Pipe[Any]:
    """``pipe`` as a Loader reads it: its source as ``Source.read_at_compile`` gives it (a
    list is copied, see ``docs/loader.md``, "When the data is read")."""
    first: Any = pipe.stages[0]  # a runnable pipe's source
    source = first.read_at_compile()
    return pipe if source is first else Pipe(source, *pipe.stages[1:])


def share_objects(pipe: Pipe[Any]) -> tuple[Pipe[Any], str | None]:
    """``pipe`` as process workers should receive it, and a note for ``explain`` (None when
    nothing changed): its source as ``Source.for_workers`` gives it (a large list pickled
    once into a :class:`SerializedSequence`, file-backed arrays sent by path)."""
    first: Any = pipe.stages[0]  # a runnable pipe's source
    shipped = first.for_workers()
    if shipped is None:
        return pipe, None
    source, note = shipped
    return (pipe if source is first else Pipe(source, *pipe.stages[1:])), note


def share_list(items: Any) -> tuple[Any, str] | None:
    """A list or tuple of ``MIN_LENGTH`` objects or more as a :class:`SerializedSequence`,
    and a note; the list itself (and why) when an element does not pickle; None when it
    is too short to be worth it."""
    if type(items) not in (list, tuple) or len(items) < MIN_LENGTH:
        return None
    try:
        shared = SerializedSequence(items)
    except Exception as exc:  # an element that does not pickle: keep the list as it is
        return items, f"the list stays as it is (an element does not pickle: {exc})"
    return shared, (
        f"the list of {len(shared)} objects is pickled once into one {shared.nbytes} byte "
        "buffer, so workers do not copy it page by page (copy-on-read)"
    )


def path_note(arrays: list[MappedArray]) -> str:
    """What ``explain`` says of arrays that travel by path."""
    files = sorted({a._where[0] for a in arrays})
    size = sum(a.nbytes for a in arrays)
    return (f"the memory-mapped data ({size} bytes in {', '.join(files)}) travels by path: "
            "each worker maps the file itself")
