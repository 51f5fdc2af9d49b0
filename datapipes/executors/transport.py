"""Moving results from worker processes to the main process.

A result is pickled, except its NumPy arrays and torch tensors: those live in shared
memory and travel as descriptors. Shared memory here is anonymous (``memfd_create``): the
worker sends the file descriptor over a Unix socket, the main process maps it and closes
it, and the memory is freed by the kernel when the last mapping goes. Nothing is ever
named in ``/dev/shm``, so nothing can be left there, not even when a process is killed.

Arrays that ``collate`` stacks in a worker are written straight into shared memory (see
``buffers.output_array``), so a batch is built once and never copied again. When the
worker's last stage is ``collate``, its tensors cross as arrays marked "tensor" and become
tensors in the main process (``stages.collate.as_tensor``): a worker then never needs torch
unless the user's own functions do, which makes a spawned worker start in a fraction of the
time.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import io
import math
import mmap
import os
import pickle
import resource
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle
import numpy as np

from ..buffers import allocating
from ..stages.collate import as_tensor, tensor_from_numpy, tensor_type

#: arrays smaller than this are pickled inline: a descriptor would cost more than a copy
INLINE_BYTES = 16 * 1024
_CHUNK = 16 * 1024 * 1024
#: ``madvise`` advice (Linux 5.14): make the pages of a range now, writable, in one call
_MADV_POPULATE_WRITE = 23
_ALIGN = 64
_HEADER = struct.Struct("<QI")  # payload length, number of descriptors
_MAX_FDS = 64  # per ancillary message (Linux allows 253); more go in further ones


class SharedMemoryError(OSError):
    """Shared memory for a result could not be allocated."""


def _memfd(size: int) -> int:
    fd = -1
    try:
        fd = os.memfd_create("datapipes", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise _no_shared_memory(size, exc) from exc
    return fd


def _populate(mm: mmap.mmap, nbytes: int) -> None:
    """Make the first ``nbytes`` of a new map's pages at once, about twice as fast as one
    page fault at a time as they are written; where the kernel cannot (before Linux 5.14,
    or short of memory), the pages come as they are written."""
    length = -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE
    if length:
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(_MADV_POPULATE_WRITE, 0, length)


def _no_shared_memory(size: int, exc: OSError) -> SharedMemoryError:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return SharedMemoryError(
            exc.errno,
            f"cannot create shared memory of {size} bytes: too many open files; each batch "
            "the program still holds keeps one, so hold fewer or raise `ulimit -n`",
        )
    return SharedMemoryError(
        exc.errno,
        f"a result could not be placed in shared memory: cannot allocate {size} bytes of "
        f"shared memory (shmem, the memory behind /dev/shm): "
        f"{os.strerror(exc.errno or errno.ENOSPC)}; free memory, raise the memory limit (a "
        "container's counts shared memory) or make batches smaller",
    )


def _out_of_fds(exc: OSError | None) -> SharedMemoryError:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return SharedMemoryError(
        exc.errno if exc is not None and exc.errno else errno.EMFILE,
        "the main process ran out of file descriptors receiving a worker's result: its limit "
        f"is {soft} open files, and every result it still holds keeps one per shared-memory "
        "chunk. Raise the limit (`ulimit -n`, or resource.setrlimit(RLIMIT_NOFILE)) or hold "
        "fewer batches (copy what you keep: tensor.clone())",
    )


class Chunk:
    """One shared-memory buffer of a worker: its memfd, the worker's map of it, an id."""

    __slots__ = ("address", "fd", "id", "map", "size")

    def __init__(self, chunk_id: int, nbytes: int) -> None:
        self.size = -(-max(nbytes, _CHUNK) // mmap.PAGESIZE) * mmap.PAGESIZE
        self.fd = _memfd(self.size)
        try:
            self.map = mmap.mmap(self.fd, self.size)
        except OSError as exc:
            os.close(self.fd)
            raise _no_shared_memory(self.size, exc) from exc
        _populate(self.map, nbytes)
        self.id = chunk_id
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))

    def close(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(BufferError):  # still exported: freed with its arrays
            self.map.close()


class ChunkPool:
    """A worker's chunks. A chunk goes out with a result and comes back when the main
    process reports that nothing refers to it any more; then it is written again. Reused
    pages are already mapped on both sides: no zero-filling, fewer page faults, no new
    segment per batch."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.free: list[Chunk] = []
        self.lent: dict[int, Chunk] = {}
        self._returned: list[int] = []
        self._lock = threading.Lock()
        self._next_id = 0

    def take(self, nbytes: int) -> Chunk:
        self._collect()
        fitting = [c for c in self.free if c.size >= nbytes]
        if fitting:
            chunk = min(fitting, key=lambda c: c.size)
            self.free.remove(chunk)
            return chunk
        self._next_id += 1
        return Chunk(self._next_id, nbytes)

    def lend(self, chunks: list[Chunk]) -> None:
        for chunk in chunks:
            self.lent[chunk.id] = chunk

    def put_back(self, chunks: list[Chunk]) -> None:
        """Chunks that were not sent after all (an error while building the result)."""
        self.free.extend(chunks)
        self._trim()

    def returned(self, chunk_ids: list[int]) -> None:
        """The main process let go of these chunks (called from the worker's receiving
        thread)."""
        with self._lock:
            self._returned.extend(chunk_ids)

    def _collect(self) -> None:
        with self._lock:
            returned, self._returned = self._returned, []
        for chunk_id in returned:
            chunk = self.lent.pop(chunk_id, None)
            if chunk is not None:
                self.free.append(chunk)
        self._trim()

    def _trim(self) -> None:
        while len(self.free) > self.keep:
            self.free.pop(0).close()


class Arena:
    """The shared memory of one result: chunks from ``pool`` (or fresh ones), filled in turn."""

    def __init__(self, pool: ChunkPool | None = None) -> None:
        self.pool = pool
        self.chunks: list[Chunk] = []
        self.used: list[int] = []

    @property
    def fds(self) -> list[int]:
        return [c.fd for c in self.chunks]

    def alloc(self, nbytes: int) -> tuple[int, int]:
        """Room for ``nbytes``: ``(chunk index, offset)``."""
        if self.chunks:
            offset = -(-self.used[-1] // _ALIGN) * _ALIGN
            if offset + nbytes <= self.chunks[-1].size:
                self.used[-1] = offset + nbytes
                return len(self.chunks) - 1, offset
        pool = self.pool
        chunk = pool.take(nbytes) if pool is not None else Chunk(len(self.chunks), nbytes)
        self.chunks.append(chunk)
        self.used.append(nbytes)
        return len(self.chunks) - 1, 0

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A new array in shared memory (what ``collate`` stacks into)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        chunk, offset = self.alloc(max(nbytes, 1))
        return np.ndarray(shape, dtype, buffer=self.chunks[chunk].map, offset=offset)

    def locate(self, arr: np.ndarray) -> tuple[int, int] | None:
        """``(chunk, offset)`` when ``arr`` is a C-contiguous view into this arena."""
        if not arr.flags.c_contiguous:
            return None
        address = arr.__array_interface__["data"][0]
        for index, chunk in enumerate(self.chunks):
            if chunk.address <= address and address + arr.nbytes <= chunk.address + chunk.size:
                return index, address - chunk.address
        return None

    def sizes(self) -> list[tuple[int, int]]:
        """``(chunk id, bytes to map)`` of each chunk, for the main process."""
        return [(c.id, -(-u // mmap.PAGESIZE) * mmap.PAGESIZE)
                for c, u in zip(self.chunks, self.used, strict=True)]

    def sent(self) -> None:
        """The result went out: its chunks are the main process's until it returns them."""
        self._hand_over(None if self.pool is None else self.pool.lend)

    def release(self) -> None:
        """The result was not sent: its chunks are free again."""
        self._hand_over(None if self.pool is None else self.pool.put_back)

    def _hand_over(self, to_pool: Callable[[list[Chunk]], None] | None) -> None:
        """Give the chunks to the pool, or close them when there is none; start empty."""
        if to_pool is not None:
            to_pool(self.chunks)
        else:
            for chunk in self.chunks:
                chunk.close()
        self.chunks, self.used = [], []


class TensorOf:
    """A tensor still to be made: ``torch.from_numpy(array)``, done by whoever unpickles it
    (the main process), so that the worker that stacked ``array`` needs no torch."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, ...]:
        return tensor_from_numpy, (self.array,)


@contextmanager
def collating_into(arena: Arena, *, tensors_as_arrays: bool = False) -> Iterator[None]:
    """``collate`` stacks into ``arena``; with ``tensors_as_arrays`` (its batches go straight
    to :func:`dumps`) its tensors are :class:`TensorOf` stand-ins."""
    tensor_token = as_tensor.set(TensorOf) if tensors_as_arrays else None
    try:
        with allocating(arena.array):
            yield
    finally:
        if tensor_token is not None:
            as_tensor.reset(tensor_token)


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, arena: Arena) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arena = arena
        self.tensor_type = tensor_type()
        self.torch_pickles = _torch_pickles() if self.tensor_type is not None else frozenset()

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is TensorOf:
            arr = obj.array
            if arr.nbytes < INLINE_BYTES and self.arena.locate(arr) is None:
                return None
            return self._array_id(arr, "n")
        if kind is self.tensor_type:
            if obj.device.type != "cpu" or obj.is_sparse or obj.requires_grad:
                return None
            arr = _tensor_bytes(obj)
            if obj.nbytes < INLINE_BYTES and self.arena.locate(arr) is None:
                if obj.dtype in self.torch_pickles or obj.is_quantized:
                    return None
                return ("r", arr, tuple(obj.shape), obj.dtype)  # its bytes, pickled inline
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


@functools.cache
def _torch_pickles() -> frozenset[Any]:
    """The dtypes whose tensors torch's own pickling brings back. Others (uint16, uint32,
    uint64, float8, ...) pickle, but loading them fails in torch 2.x, so they travel as
    bytes."""
    torch = sys.modules["torch"]
    return frozenset(getattr(torch, name) for name in (
        "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
        "float64", "complex64", "complex128"))


def portable_tensor(obj: Any) -> Any:
    """For ``Pickler.reducer_override``: a CPU tensor whose dtype torch's own pickling cannot
    bring back (uint16, uint32, uint64, float8, ...) as its bytes, shape and dtype; anything
    else ``NotImplemented`` (pickled as usual)."""
    tensor = tensor_type()
    if (
        tensor is None or type(obj) is not tensor or obj.device.type != "cpu"
        or obj.is_sparse or obj.is_quantized or obj.dtype in _torch_pickles()
    ):
        return NotImplemented
    return (_tensor_from_bytes, (_tensor_bytes(obj).copy(), tuple(obj.shape), obj.dtype))


class _PlanPickler(cloudpickle.CloudPickler):
    """cloudpickle (functions by value where needed), and tensors of every dtype."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = portable_tensor(obj)
        return super().reducer_override(obj) if reduced is NotImplemented else reduced


def dumps_plan(obj: Any) -> bytes:
    """Pickle what a spawned worker is sent (the plan, and the data in its pipe)."""
    buf = io.BytesIO()
    _PlanPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _tensor_from_bytes(raw: np.ndarray, shape: tuple[int, ...], dtype: Any) -> Any:
    return tensor_from_numpy(raw).view(dtype).reshape(shape)


def _tensor_bytes(tensor: Any) -> np.ndarray:
    """A CPU tensor's contents as a flat uint8 array (a view when it is contiguous)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(sys.modules["torch"].uint8).numpy() if flat.element_size() else flat.numpy()


def dumps(obj: Any, arena: Arena) -> bytes:
    """Pickle ``obj`` with its large arrays and tensors placed in ``arena``."""
    buf = io.BytesIO()
    try:
        _Pickler(buf, arena).dump(obj)
    except RecursionError:
        raise ValueError(
            "the result is nested too deeply to send to the main process: pickling it ran past "
            f"Python's recursion limit ({sys.getrecursionlimit()}, about half as many levels of "
            "lists, tuples or dicts). Return fewer levels (arrays for nested lists of numbers)"
        ) from None
    return buf.getvalue()


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, maps: list[mmap.mmap]) -> None:
        super().__init__(file)
        self.maps = maps

    def persistent_load(self, pid: Any) -> Any:
        if pid[0] == "r":
            return _tensor_from_bytes(*pid[1:])
        tag, chunk, offset, shape, dtype = pid
        if tag == "a":
            return np.ndarray(shape, dtype, buffer=self.maps[chunk], offset=offset)
        if tag == "n":
            return tensor_from_numpy(np.ndarray(shape, dtype, buffer=self.maps[chunk],
                                                offset=offset))
        nbytes = math.prod(shape) * dtype.itemsize
        raw = np.ndarray((nbytes,), np.uint8, buffer=self.maps[chunk], offset=offset)
        return tensor_from_numpy(raw).view(dtype).reshape(shape)


def loads(
    data: bytes,
    fds: list[int],
    sizes: list[tuple[int, int]],
    lend: Callable[[int, mmap.mmap], None] | None = None,
) -> Any:
    """Unpickle a result, mapping its shared memory (and closing the fds). ``lend(chunk id,
    map)`` is called for each chunk's map, for the caller to watch: once nothing refers to
    the map any more, the worker may write the chunk again."""
    maps = []
    try:
        if -1 in fds:  # the kernel had no room for some: see Channel.recv
            raise _out_of_fds(None)
        for fd, (chunk_id, size) in zip(fds, sizes, strict=True):
            try:
                mm = mmap.mmap(fd, size)  # which keeps a duplicate of fd
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    raise _out_of_fds(exc) from exc
                raise
            maps.append(mm)
            if lend is not None:
                lend(chunk_id, mm)
    finally:
        close_fds(fds)
    return _Unpickler(io.BytesIO(data), maps).load()


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        if fd >= 0:
            os.close(fd)


class Channel:
    """One direction of messages over a Unix stream socket, with fds passed alongside."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data: bytes, fds: list[int] = ()) -> None:  # type: ignore[assignment]
        """Send one message whole: in the main thread, Ctrl-C waits until it is out, so that
        an interrupted send never leaves half a message for the other side to misread."""
        header = _HEADER.pack(len(data), len(fds))
        main = threading.current_thread() is threading.main_thread()
        if main:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if fds:
                # one message carries at most _MAX_FDS (Linux: 253): the rest follow in
                # groups, each on a byte of its own
                socket.send_fds(self.sock, [header], list(fds[:_MAX_FDS]))
                for start in range(_MAX_FDS, len(fds), _MAX_FDS):
                    socket.send_fds(self.sock, [b"+"], list(fds[start:start + _MAX_FDS]))
            else:
                self.sock.sendall(header)
            self.sock.sendall(data)
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def recv(self) -> tuple[bytes, list[int]]:
        """The next message; raises EOFError when the other side is gone. A descriptor that
        did not fit under this process's limit is -1 in the list: the kernel drops those."""
        msg, fds, _, _ = socket.recv_fds(self.sock, _HEADER.size, _MAX_FDS)
        if not msg:
            close_fds(fds)
            raise EOFError("channel closed")
        try:
            length, count = _HEADER.unpack(msg + self._exactly(_HEADER.size - len(msg)))
            fds += [-1] * (min(count, _MAX_FDS) - len(fds))
            while len(fds) < count:
                fds += self._more_fds(min(count - len(fds), _MAX_FDS))
            return self._exactly(length), fds
        except BaseException:
            close_fds(fds)
            raise

    def _more_fds(self, n: int) -> list[int]:
        more, fds, _, _ = socket.recv_fds(self.sock, 1, n)
        if not more:
            close_fds(fds)
            raise EOFError("channel closed mid-message")
        return fds + [-1] * (n - len(fds))

    def _exactly(self, length: int) -> bytes:
        data = bytearray(length)
        view = memoryview(data)
        got = 0
        while got < length:
            n = self.sock.recv_into(view[got:])
            if not n:
                raise EOFError("channel closed mid-message")
            got += n
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def channel_pair() -> tuple[Channel, Channel]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(a), Channel(b)
