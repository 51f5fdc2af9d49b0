"""Moving results from worker processes to the main process.

A result is pickled, except its NumPy arrays and torch tensors: those live in shared
memory and travel as descriptors. Shared memory here is anonymous (``memfd_create``): the
worker sends the file descriptor over a Unix socket, the main process maps it and closes
it, and the memory is freed by the kernel when the last mapping goes. Nothing is ever
named in ``/dev/shm``, so nothing can be left there, not even when a process is killed.

Arrays that ``collate`` stacks in a worker are written straight into shared memory (see
``stages.collate.allocator``), so a batch is built once and never copied again.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import math
import mmap
import os
import pickle
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..stages.collate import allocator

#: arrays smaller than this are pickled inline: a descriptor would cost more than a copy
INLINE_BYTES = 16 * 1024
_CHUNK = 16 * 1024 * 1024
_ALIGN = 64
_HEADER = struct.Struct("<QI")  # payload length, number of descriptors
_MAX_FDS = 64


class SharedMemoryError(OSError):
    """Shared memory for a result could not be allocated."""


def _memfd(size: int) -> int:
    try:
        fd = os.memfd_create("datapipes", os.MFD_CLOEXEC)
    except OSError as exc:
        raise SharedMemoryError(
            exc.errno, f"cannot create shared memory of {size} bytes: {exc}"
        ) from exc
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        raise SharedMemoryError(
            exc.errno,
            f"cannot allocate {size} bytes of shared memory (shmem, the memory behind /dev/shm):"
            f" {os.strerror(exc.errno or errno.ENOSPC)}",
        ) from exc
    return fd


class Arena:
    """Shared-memory chunks a worker fills while it builds one result."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.maps: list[mmap.mmap] = []
        self.used: list[int] = []
        self._ranges: list[tuple[int, int]] = []  # (address, size) of each chunk

    def alloc(self, nbytes: int) -> tuple[int, int]:
        """Room for ``nbytes``: ``(chunk index, offset)``."""
        if self.maps:
            offset = -(-self.used[-1] // _ALIGN) * _ALIGN
            if offset + nbytes <= len(self.maps[-1]):
                self.used[-1] = offset + nbytes
                return len(self.maps) - 1, offset
        size = max(nbytes, _CHUNK)
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        fd = _memfd(size)
        mm = mmap.mmap(fd, size)
        self.fds.append(fd)
        self.maps.append(mm)
        self.used.append(nbytes)
        address = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        self._ranges.append((address, size))
        return len(self.maps) - 1, 0

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A new array in shared memory (what ``collate`` stacks into)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        chunk, offset = self.alloc(max(nbytes, 1))
        return np.ndarray(shape, dtype, buffer=self.maps[chunk], offset=offset)

    def locate(self, arr: np.ndarray) -> tuple[int, int] | None:
        """``(chunk, offset)`` when ``arr`` is a C-contiguous view into this arena."""
        if not arr.flags.c_contiguous:
            return None
        address = arr.__array_interface__["data"][0]
        for chunk, (start, size) in enumerate(self._ranges):
            if start <= address and address + arr.nbytes <= start + size:
                return chunk, address - start
        return None

    def sizes(self) -> list[int]:
        return [-(-u // mmap.PAGESIZE) * mmap.PAGESIZE for u in self.used]

    def release(self) -> None:
        """Drop the worker's side: close fds and maps (arrays still alive keep their map)."""
        for fd in self.fds:
            os.close(fd)
        for mm in self.maps:
            with contextlib.suppress(BufferError):  # still exported: freed with its array
                mm.close()
        self.fds, self.maps, self.used, self._ranges = [], [], [], []


@contextmanager
def collating_into(arena: Arena) -> Iterator[None]:
    token = allocator.set(arena.array)
    try:
        yield
    finally:
        allocator.reset(token)


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, arena: Arena) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arena = arena

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is torch.Tensor:
            if obj.device.type != "cpu" or obj.is_sparse or obj.requires_grad:
                return None
            arr = _tensor_bytes(obj)
            if obj.nbytes < INLINE_BYTES and self.arena.locate(arr) is None:
                return None
            # as raw bytes: also dtypes NumPy lacks (bfloat16, float8, ...)
            return (*self._array_id(arr, "t")[:3], tuple(obj.shape), obj.dtype)
        if kind is np.ndarray:
            small = obj.nbytes < INLINE_BYTES and self.arena.locate(obj) is None
            if obj.dtype.hasobject or small:
                return None
            return self._array_id(obj, "a")
        return None

    def _array_id(self, arr: np.ndarray, tag: str) -> tuple[Any, ...]:
        where = self.arena.locate(arr)
        if where is None:
            copy = self.arena.array(arr.shape, arr.dtype)
            np.copyto(copy, arr)
            where = self.arena.locate(copy)
            assert where is not None
        return (tag, where[0], where[1], arr.shape, arr.dtype)


def _tensor_bytes(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor's contents as a flat uint8 array (a view when it is contiguous)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy() if flat.element_size() else flat.numpy()


def dumps(obj: Any, arena: Arena) -> bytes:
    """Pickle ``obj`` with its large arrays and tensors placed in ``arena``."""
    buf = io.BytesIO()
    _Pickler(buf, arena).dump(obj)
    return buf.getvalue()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, maps: list[mmap.mmap]) -> None:
        super().__init__(file)
        self.maps = maps

    def persistent_load(self, pid: Any) -> Any:
        tag, chunk, offset, shape, dtype = pid
        if tag == "a":
            return np.ndarray(shape, dtype, buffer=self.maps[chunk], offset=offset)
        nbytes = math.prod(shape) * dtype.itemsize
        raw = np.ndarray((nbytes,), np.uint8, buffer=self.maps[chunk], offset=offset)
        return torch.from_numpy(raw).view(dtype).reshape(shape)


def loads(data: bytes, fds: list[int], sizes: list[int]) -> Any:
    """Unpickle a result, mapping its shared memory (and closing the fds)."""
    maps = []
    try:
        for fd, size in zip(fds, sizes, strict=True):
            maps.append(mmap.mmap(fd, size))
    finally:
        for fd in fds:
            os.close(fd)
    return _Unpickler(io.BytesIO(data), maps).load()


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class Channel:
    """One direction of messages over a Unix stream socket, with fds passed alongside."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes, fds: list[int] = ()) -> None:  # type: ignore[assignment]
        header = _HEADER.pack(len(data), len(fds))
        if fds:
            socket.send_fds(self.sock, [header], list(fds))
        else:
            self.sock.sendall(header)
        self.sock.sendall(data)

    def recv(self) -> tuple[bytes, list[int]]:
        """The next message; raises EOFError when the other side is gone."""
        msg, fds, _, _ = socket.recv_fds(self.sock, _HEADER.size, _MAX_FDS)
        if not msg:
            close_fds(fds)
            raise EOFError("channel closed")
        header = msg
        while len(header) < _HEADER.size:
            more = self.sock.recv(_HEADER.size - len(header))
            if not more:
                raise EOFError("channel closed mid-message")
            header += more
        length, _ = _HEADER.unpack(header)
        data = bytearray(length)
        view = memoryview(data)
        got = 0
        while got < length:
            n = self.sock.recv_into(view[got:])
            if not n:
                close_fds(fds)
                raise EOFError("channel closed mid-message")
            got += n
        return bytes(data), fds

    def close(self) -> None:
        self.sock.close()


def channel_pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(a), Channel(b)
