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
from ..stages.sources import FromArrays, FromSequence
from .mapped import MappedArray, file_backing
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
    """``pipe`` with a list source copied: the rule for when a Loader reads its data.

    A Loader reads a list or tuple source once, when it is compiled: changing the list
    afterwards changes nothing for that Loader, whatever its executor, its workers or its
    epoch (a shallow copy: the elements themselves are not copied). Arrays, memmaps and
    datasets are read in place (see ``docs/loader.md``, "When the data is read").
    """
    source = pipe.stages[0]
    if isinstance(source, FromSequence) and type(source.seq) is list:
        return Pipe(FromSequence(seq=list(source.seq)), *pipe.stages[1:])
    return pipe


def share_objects(pipe: Pipe[Any]) -> tuple[Pipe[Any], str | None]:
    """``pipe`` as process workers should receive it, and a note for ``explain`` (None when
    nothing changed): a large list or tuple source becomes a :class:`SerializedSequence`;
    arrays backed by a file travel by path (:mod:`.mapped`)."""
    source = pipe.stages[0]
    mapped = _by_path(source)
    if mapped is not None:
        new_source, note = mapped
        return Pipe(new_source, *pipe.stages[1:]), note
    if not isinstance(source, FromSequence) or type(source.seq) not in (list, tuple):
        return pipe, None
    if len(source.seq) < MIN_LENGTH:
        return pipe, None
    try:
        shared = SerializedSequence(source.seq)
    except Exception as exc:  # an element that does not pickle: keep the list as it is
        return pipe, f"the list stays as it is (an element does not pickle: {exc})"
    note = (
        f"the list of {len(shared)} objects is pickled once into one {shared.nbytes} byte "
        "buffer, so workers do not copy it page by page (copy-on-read)"
    )
    return Pipe(FromSequence(seq=shared), *pipe.stages[1:]), note


def _by_path(source: Any) -> tuple[Any, str] | None:
    """The source with its file-backed arrays sent by path, and a note; None if it has none."""
    if isinstance(source, FromSequence) and file_backing(source.seq) is not None:
        seq = MappedArray(source.seq)
        return FromSequence(seq=seq), _path_note([seq])
    if isinstance(source, FromArrays):
        columns = [(name, MappedArray(c) if file_backing(c) is not None else c)
                   for name, c in source.columns]
        mapped = [c for _, c in columns if isinstance(c, MappedArray)]
        if mapped:
            return FromArrays(columns=tuple(columns)), _path_note(mapped)
    return None


def _path_note(arrays: list[MappedArray]) -> str:
    files = sorted({a._where[0] for a in arrays})
    size = sum(a.nbytes for a in arrays)
    return (f"the memory-mapped data ({size} bytes in {', '.join(files)}) travels by path: "
            "each worker maps the file itself")
