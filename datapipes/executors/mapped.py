"""Arrays backed by a file travel to worker processes by path, never as a copy.

A NumPy memmap pickles as its whole contents: a 1 GB memmap given to ``from_sequence``
became a 1 GB private copy in each spawned worker. Here such an array is sent as where it
lies (file, byte offset, shape, strides, dtype) and the worker maps the same file itself:
the pages are the kernel's page cache, shared by every process that reads them.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np


def file_backing(array: Any) -> tuple[Any, ...] | None:
    """Where ``array``'s bytes lie in a file: the arguments of :func:`reopen`, or None when
    it is not a view of a ``numpy.memmap`` (an ordinary array, or a memmap's copy)."""
    if not isinstance(array, np.ndarray):
        return None
    base: Any = array
    while base is not None and not (isinstance(base, np.memmap) and _mmap_of(base) is not None):
        base = getattr(base, "base", None)
        if not isinstance(base, np.ndarray):
            return None
    if base is None or not base.filename:
        return None
    buffer = np.frombuffer(_mmap_of(base), dtype=np.uint8)  # type: ignore[arg-type]
    map_start = base.offset - base.offset % mmap.ALLOCATIONGRANULARITY
    offset = map_start + (array.ctypes.data - buffer.ctypes.data)
    mode = "c" if array.flags.writeable else "r"  # writes stay private, as in a fork
    return (str(base.filename), mode, int(offset), array.shape, array.strides, array.dtype,
            isinstance(array, np.memmap))


def _mmap_of(array: np.memmap) -> mmap.mmap | None:
    return getattr(array, "_mmap", None)


def reopen(
    filename: str, mode: str, offset: int, shape: tuple[int, ...], strides: tuple[int, ...],
    dtype: Any, as_memmap: bool,
) -> np.ndarray:
    """The array :func:`file_backing` described, mapped from its file in this process."""
    whole = np.memmap(filename, dtype=np.uint8, mode=mode)  # type: ignore[call-overload]
    array = np.ndarray(shape, dtype, buffer=whole, offset=offset, strides=strides)
    if not as_memmap:
        return array
    # a memmap over the same mapping, so that its rows are memmaps too, as the original's
    mapped: Any = array.view(np.memmap)
    mapped._mmap, mapped.filename = whole._mmap, whole.filename  # type: ignore[attr-defined]
    mapped.offset, mapped.mode = whole.offset, whole.mode
    return mapped  # type: ignore[no-any-return]


class MappedArray:
    """A file-backed array as a source's sequence: indexing reads the array, pickling sends
    the path (see the module docstring).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(6.0).reshape(3, 2))
    >>> seq = MappedArray(np.load(path, mmap_mode="r"))
    >>> import pickle
    >>> len(pickle.dumps(seq)) < 300, pickle.loads(pickle.dumps(seq))[2].tolist()
    (True, [4.0, 5.0])
    """

    def __init__(self, array: np.ndarray) -> None:
        where = file_backing(array)
        if where is None:
            raise ValueError("MappedArray: the array is not backed by a file (numpy.memmap)")
        self._where = where
        self._bind(array)

    def _bind(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        # per element, the array's own method, with no frame of ours in between
        self.__getitem__ = array.__getitem__  # type: ignore[method-assign]

    def __getitem__(self, index: Any) -> Any:
        return self.array[index]

    def __len__(self) -> int:
        return len(self.array)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_remapped, self._where)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


def _remapped(*where: Any) -> MappedArray:
    seq = MappedArray.__new__(MappedArray)
    seq._where = where
    seq._bind(reopen(*where))
    return seq
