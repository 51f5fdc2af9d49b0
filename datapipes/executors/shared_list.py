"""Python lists shared with forked workers without copy-on-read.

Forked workers share the parent's memory copy-on-write, but merely reading a Python
object writes its reference count, so a worker that walks a large list of dicts ends up
with a private copy of every page it touched (PyTorch issue 13246): memory grows with
each worker over an epoch. Here the list is pickled once, element by element, into one
flat byte buffer: workers read bytes, which touches no reference count, and unpickle the
element they need.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._graph import Pipe
from ..stages.sources import FromSequence

#: lists shorter than this are cheap to copy: not worth the unpickling per element
MIN_LENGTH = 10_000


class SerializedSequence:
    """A read-only sequence stored as pickled bytes in one buffer.

    >>> s = SerializedSequence([{"a": 1}, "two", 3.0])
    >>> len(s), s[0], s[-1]
    (3, {'a': 1}, 3.0)
    """

    def __init__(self, items: Sequence[Any]) -> None:
        blobs = [pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL) for x in items]
        self._offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in blobs], out=self._offsets[1:])
        self._data = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        self._n = len(blobs)

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


def share_objects(pipe: Pipe[Any]) -> tuple[Pipe[Any], str | None]:
    """``pipe`` with a large list or tuple source replaced by a :class:`SerializedSequence`,
    and a note for ``explain``; the same pipe and None when that does not apply."""
    source = pipe.stages[0]
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
