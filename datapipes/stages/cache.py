"""``cache(path)``: run the stages before it once, then read what they made from disk.

The stages before a ``cache`` must be deterministic (a random one is refused when the pipe
is composed: its draws would be frozen). Their output then never changes from one epoch or
run to the next, so the first pass writes it under ``path`` and every later pass reads it
back, in the workers, without running those stages. In the stage-by-stage reference the
stage is the identity: a pipe yields exactly the same elements, keys and random draws with
or without it, whether the cache exists or not. It takes no stage key (like ``prefetch``),
so adding it changes no draw of a later stage.

How it runs is decided by the planner (``Cache.replace_before``, called by ``plan()``),
from the stages before it, never from what is on disk, so that a plan, and so a checkpoint,
means the same before and after the cache was written:

* **by index** (a random-access source and then only maps and index stages such as
  ``take``, ``skip``, ``split``, ``shard_by_rank``): the cache holds each element by its
  source index. The source is replaced by a :class:`CacheSource` that fetches index ``i``
  from the cache when it is complete, and else computes it (the source, then the element
  stages before the cache) and appends it to a part file of its own process. The index
  stages stay in the head; the element stages before the cache run nowhere else. At the
  start of each pass the head seals the cache once every element the pass selects is in
  the part files: it links them into a new directory with an index and a manifest, written
  last, and renames that directory to its final name.
* **as a stream** (anything else: a stream source, a ``filter``, ``batch``, ``enumerate``
  or ``flat_map`` before it, ``on_error="skip"``): the cache runs after the workers, in the
  main process (:class:`CacheTail`). A pass writes the elements in order as they go by and
  seals them when the pass ends complete; a later pass reads them there instead of running
  the stages before it.

A cache lives in ``path/<digest>``, the digest naming the pipe before it: its stages and
their parameters, the code of its functions, the source's kind and length and a sample of
its elements. A partly written cache is never read: it has no final name. A file that is
truncated or corrupted (each record has a CRC-32) raises :class:`CacheError` naming it.

>>> import tempfile, datapipes as dp
>>> from datapipes.stages.cache import cache
>>> calls = []
>>> def decode(x):
...     calls.append(x)
...     return x * 10
>>> pipe = dp.from_sequence(range(4)) | dp.map(decode) | cache(tempfile.mkdtemp())
>>> list(pipe.iter(epoch=0)), len(calls)
([0, 10, 20, 30], 4)
>>> list(pipe.iter(epoch=1)), len(calls)  # read from the cache: decode did not run again
([0, 10, 20, 30], 4)
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import json
import mmap
import os
import pickle
import re
import shutil
import struct
import threading
import uuid
import weakref
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, Stage, fail, positional
from ..executors.mapped import MappedArray
from ..executors.shared_list import SerializedSequence
from ..executors.transport import portable_tensor
from ..plan import HEAD, Placement, Planner, plan
from ._kernel import POSITION, apply_ops
from ._kinds import IndexStage, Triple
from .sources import FromArrays, FromSequence, Source, _is_tensor

__all__ = ["Cache", "CacheError", "cache"]

#: the layout of a cache directory; a new one gets a new digest, so never an old reader
FORMAT = 1
MANIFEST = "cache.json"
INDEX = "index.npy"
#: each record: magic, key (source index, or number in the stream), payload length, CRC-32
_HEADER = struct.Struct("<4sqqI")
_MAGIC = b"DPC1"
_KEYED = struct.Struct("<qq")
BY_INDEX, STREAM = "index", "stream"


class CacheError(RuntimeError):
    """A cache directory that cannot be read: truncated, corrupted or incomplete. The
    message names the file; deleting the cache's directory makes the next pass rebuild it.

    >>> import datapipes as dp
    >>> issubclass(dp.CacheError, RuntimeError)
    True
    """


# -- the stage ---------------------------------------------------------------------------
@attrs.frozen(kw_only=True, repr=False)
class Cache(Stage):
    """``cache(path)`` as the user wrote it. In the reference it is the identity; the
    planner replaces it, and the stages before it, by what reads or writes the cache
    (``replace_before``)."""

    call_name: ClassVar[str] = "cache"
    keeps_random_access: ClassVar[bool] = True
    transparent: ClassVar[bool] = True
    path: str = positional()

    def length(self, n: int) -> int:
        return n

    def check_after(self, before: tuple[Stage, ...]) -> None:
        for stage in before:
            if stage.draws_randomness():
                raise TypeError(
                    f"{self!r} cannot come after {stage!r}, which draws randomness: the cache "
                    "would freeze its draws, and every epoch would repeat the first epoch's; "
                    f"put {stage!r} after the cache"
                )

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return items

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        # only when another stage plans the pipe before it (a later cache): nothing to run
        return bool(planner.add_unchanged(self, "the identity here: a later cache holds it"))

    def replace_before(
        self, keyed: list[tuple[int, Stage]], *, skipping: bool = False, train: bool = True
    ) -> list[tuple[int, Stage]]:
        """The planner's hook: ``keyed`` (the keyed stages from the source to this stage)
        as they should be planned, each at its place and with its stage key."""
        stage_key = keyed[-1][0]
        before = keyed[:-1]
        prefix: Pipe[Any] = Pipe(*(stage for _, stage in before))
        root = os.path.abspath(self.path)
        found = _by_index(before, skipping, train)
        if found is None:
            store = CacheStore(root, cache_digest(prefix, STREAM), STREAM)
            return [*before, (stage_key, CacheTail(cache=self, store=store))]
        kept, pool = found
        store = CacheStore(root, cache_digest(prefix, BY_INDEX), BY_INDEX)
        source = CacheSource(prefix=prefix, store=store)
        out: list[tuple[int, Stage]] = [(before[0][0], source)]
        for position, (key, stage) in enumerate(before[1:], 1):
            out.append((key, stage if position in kept else CachedStage(stage=stage)))
        head = CacheHead(cache=self, store=store, size=source.size(), pool=pool)
        return [*out, (stage_key, head)]


def cache(path: str | os.PathLike[str]) -> Pipe[Any]:
    """Run the stages before it once, keep what they make under ``path``, read it from there.

    The first complete pass writes the elements that reach it; later epochs and later runs
    read them back, in the workers, without running the stages before it. It yields what
    the pipe yields without it, keys and random draws included. A random stage before it is
    refused (its draws would be frozen): put augmentations after the cache.

    >>> import tempfile, datapipes as dp
    >>> pipe = dp.from_sequence(range(3)) | dp.map(abs) | cache(tempfile.mkdtemp())
    >>> list(pipe) == list(pipe) == [0, 1, 2]
    True
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise fail("cache", f"path must be a str or an os.PathLike, got {path!r}", TypeError)
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise fail("cache", f"path must name a directory, got {path!r}")
    if os.path.isfile(text):
        raise fail("cache", f"path {text!r} is a file; give a directory (made if missing)")
    return Pipe(Cache(path=text))


def _by_index(
    before: list[tuple[int, Stage]], skipping: bool, train: bool
) -> tuple[set[int], tuple[str, int] | None] | None:
    """Whether the pipe ``before`` a cache can be cached by source index: planned alone, it
    is a random-access head with only 1:1 maps after it. Then: the positions of its index
    stages (they stay in the head) and the pool of a ``parallel_map`` in it; else None."""
    source = before[0][1]
    if not isinstance(source, Source) or not source.keeps_random_access:
        return None
    planner = Planner(source, skipping, train)
    kept: set[int] = set()
    for position, (key, stage) in enumerate(before[1:], 1):
        planner.position = position
        index_ops, element_ops = len(planner.index_ops), len(planner.element_ops)
        if not stage.plan_into(planner, key):
            return None
        if len(planner.index_ops) > index_ops and len(planner.element_ops) == element_ops:
            kept.add(position)
    positions = any(op[0] == POSITION for op in planner.element_ops)
    if not planner.one_to_one or planner.batch is not None or planner.stream_ops or positions:
        return None
    return kept, planner.pool


# -- what the planner places instead ----------------------------------------------------
class _Memo:
    """What a process works out once for a stage (never pickled: a new process starts
    empty)."""

    def __init__(self) -> None:
        self.value: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Memo, ())


@attrs.frozen(kw_only=True, repr=False)
class CacheSource(Source):
    """The source of a pipe whose cache is by index: element ``i`` is read from the cache
    when it is complete; until then it is computed (the source, then the element stages
    before the cache) and written to it."""

    keeps_random_access: ClassVar[bool] = True
    prefix: Pipe[Any]
    store: CacheStore
    _plan: _Memo = attrs.field(factory=_Memo, init=False, eq=False)

    def size(self) -> int:
        return self.prefix.stages[0].size()  # type: ignore[attr-defined, no-any-return]

    def length(self, n: int) -> int:
        return self.size()

    def fetch(self, index: int) -> Any:
        reader = self.store.reader()
        if reader is not None:
            return reader.value(index)
        return next(self._computed([index]))

    def fetch_many(self, indices: list[int]) -> Iterator[Any]:
        reader = self.store.reader()
        if reader is not None:
            return builtins.map(reader.value, indices)
        return self._computed(indices)

    def _computed(self, indices: Iterable[int]) -> Iterator[Any]:
        """The elements at ``indices`` as the stages before the cache make them, each
        appended to the cache as it comes (their errors are noted as without the cache)."""
        if self._plan.value is None:
            self._plan.value = plan(self.prefix)  # its maps, and its source (maybe a cache)
        ops, source = self._plan.value.element_ops, self._plan.value.source
        fetch, ctx = source.fetcher(), EpochContext(0, 0)
        for i in indices:
            try:
                x = fetch(i)
            except Exception as exc:
                ctx.failed(exc, source, i)  # noted with its index, and raised
                continue
            for _, y in apply_ops(ops, 0, i, x, (), ctx):  # one each: 1:1 maps only
                self.store.append(i, y)
                yield y

    def __repr__(self) -> str:
        return repr(self.prefix.stages[0])


@attrs.frozen(kw_only=True, repr=False)
class CachedStage(Stage):
    """An element stage before a cache by index: placed where it stands, it runs inside
    the :class:`CacheSource` until the cache is complete, and then nowhere."""

    keeps_random_access: ClassVar[bool] = True
    stage: Stage

    def length(self, n: int) -> int:
        return n

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return self.stage.stream(items, ctx, stage_key)

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        why = "once, into the cache after it: then read from the cache"
        return bool(planner.add_unchanged(self.stage, why))

    def __repr__(self) -> str:
        return repr(self.stage)


@attrs.frozen(kw_only=True, repr=False)
class CacheHead(IndexStage):
    """A cache by index, in the head: it selects every element, and at the start of each
    pass it seals the cache once every element the pass selects has been written."""

    keeps_random_access: ClassVar[bool] = True
    cache: Cache
    store: CacheStore
    size: int
    pool: tuple[str, int] | None = None

    def length(self, n: int) -> int:
        return n

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> slice:
        return slice(None)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return items

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        if not planner.add_index(self, stage_key):
            return False
        state = (f"reads {self.store.directory}" if self.store.sealed()
                 else f"no cache yet: a pass writes {self.store.directory}, the next reads it")
        planner.placements[-1] = Placement(self.cache, HEAD, f"by source index; {state}")
        if self.pool is not None:  # a parallel_map before it still computes the first pass
            planner.use_pool(*self.pool)
        return True

    def index_step(
        self, rows: Any, columns: list[np.ndarray], ctx: EpochContext, stage_key: int
    ) -> tuple[Any, list[np.ndarray]]:
        self.store.seal_rows(rows, self.size)
        return rows, columns

    def __repr__(self) -> str:
        return repr(self.cache)


@attrs.frozen(kw_only=True, repr=False)
class CacheTail(Stage):
    """A cache of a stream, after the workers: it writes the elements in order as they go
    by and seals them when the pass ends complete; once sealed, it reads them instead of
    pulling its input (the stages before it do not run).

    Its position is the count of elements it gave, with the stages before it at the start
    of the epoch: a resumed pass reads on from there, or, with no cache yet, runs the
    stages before it again from the start (and so can still write the whole cache)."""

    keeps_random_access: ClassVar[bool] = True
    resumable: ClassVar[bool] = True
    cache: Cache
    store: CacheStore

    def length(self, n: int) -> int:
        return n

    def tail_reason(self, one_to_one: bool) -> str:
        return (f"a stream comes before it: writes {self.store.directory} as elements go by, "
                "then reads it here")

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        triples = ((k, x, None) for k, x in items)
        return ((k, x) for k, x, _ in self.resume(triples, ctx, stage_key, 0, None))

    def resume(
        self, items: Iterator[Triple], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Triple]:
        start = _zeros(before)
        reader = self.store.reader()
        if reader is not None:
            return ((k, x, [start, n]) for n, (k, x) in reader.entries(local))
        return self._write(items, ctx, local, start)

    def _write(self, items: Iterator[Triple], ctx: EpochContext, local: int, start: Any
               ) -> Iterator[Triple]:
        skipped = len(ctx.skipped)
        with self.store.stream_writer() as writer:
            for n, (key, x, _) in enumerate(items, 1):
                writer.add(key, x)
                if n > local:
                    yield key, x, [start, n]
            if len(ctx.skipped) == skipped:  # a pass that dropped an element seals nothing
                writer.seal()

    def __repr__(self) -> str:
        return repr(self.cache)


def _zeros(token: Any) -> Any:
    """``token`` with every counter at 0: the start of the epoch, in the same shape."""
    if isinstance(token, list):
        return [_zeros(t) for t in token]
    return None if token is None else 0


# -- the directory ----------------------------------------------------------------------
class CacheStore:
    """One cache directory, and this process's reader and writer of it. It pickles as its
    place (a new process opens its own files).

    ``path/<digest>`` is the complete cache; by index, writers append to part files in
    ``path/<digest>.partial``; a directory is built as ``path/<digest>.seal-<random>`` (or
    ``.stream-<random>``) and renamed to its final name once complete.
    """

    def __init__(self, root: str, digest: str, layout: str) -> None:
        self.root, self.digest, self.layout = root, digest, layout
        self.directory = os.path.join(root, digest)
        self.staging = f"{self.directory}.partial"
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._reader: _Reader | None = None
        self._writer: _PartWriter | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (CacheStore, (self.root, self.digest, self.layout))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CacheStore):
            return NotImplemented
        return (self.root, self.digest, self.layout) == (other.root, other.digest, other.layout)

    def __hash__(self) -> int:
        return hash((self.root, self.digest, self.layout))

    def __repr__(self) -> str:
        return f"CacheStore({self.directory!r}, {self.layout!r})"

    def _local(self) -> threading.Lock:
        if self._pid != os.getpid():  # a forked copy: its own lock and files
            self._pid, self._lock, self._writer = os.getpid(), threading.Lock(), None
        return self._lock

    def sealed(self) -> bool:
        return os.path.isdir(self.directory)

    def reader(self) -> _Reader | None:
        """The complete cache, opened in this process; None while there is none."""
        if self._reader is not None:
            return self._reader
        if not self.sealed():
            return None
        with self._local():
            if self._reader is None:
                self._reader = _Reader(self.directory, self.layout)
        return self._reader

    def append(self, key: int, value: Any) -> None:
        """Write the element at source index ``key`` to this process's part file."""
        record = _record(key, _encode(key, value))
        with self._local():
            if self._writer is None:
                self._writer = _PartWriter(self.staging)
            self._writer.write(record)

    def seal_rows(self, rows: Any, size: int) -> None:
        """Seal the cache by index when the part files hold every source index in
        ``rows``; remove what is left of the part files once it is sealed."""
        if self.sealed():
            if os.path.isdir(self.staging):
                shutil.rmtree(self.staging, ignore_errors=True)
            return
        if not os.path.isdir(self.staging):
            return
        try:
            parts = [(path, *_scan(path)) for path in _part_files(self.staging)]
            parts = [part for part in parts if len(part[1])]
            index = _index_by_key([(keys, offsets) for _, keys, offsets, _ in parts], size)
            if not bool(np.all(index[np.asarray(rows, dtype=np.int64), 0] >= 0)):
                return  # not every element yet: the pass goes on writing
            files = [(path, end) for path, _, _, end in parts]
            self._publish(files, index, int(np.count_nonzero(index[:, 0] >= 0)), link=True)
        except FileNotFoundError:  # another process sealed it and removed the part files
            if not self.sealed():
                raise
            return
        shutil.rmtree(self.staging, ignore_errors=True)

    def stream_writer(self) -> _StreamWriter:
        return _StreamWriter(self)

    def _publish(
        self, files: list[tuple[str, int]], index: np.ndarray, count: int, *, link: bool,
        building: str | None = None,
    ) -> None:
        """Make ``building`` (new if None) the complete cache: the part files ``files`` in
        it, as ``part-00000.bin``, ..., the index, then the manifest, then its final name."""
        if building is None:
            building = f"{self.directory}.seal-{uuid.uuid4().hex[:12]}"
            os.makedirs(building)
        try:
            parts = []
            for i, (path, nbytes) in enumerate(files):
                name = f"part-{i:05d}.bin"
                target = os.path.join(building, name)
                if link:
                    _link_or_copy(path, target)
                _fsync(target)
                parts.append({"name": name, "bytes": nbytes})
            _write_index(os.path.join(building, INDEX), index)
            manifest = {"format": FORMAT, "layout": self.layout, "count": count,
                        "rows": len(index), "parts": parts}
            _write_json(os.path.join(building, MANIFEST), manifest)  # the marker: last
            os.rename(building, self.directory)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
            if not self.sealed():  # else another process sealed the same cache first
                raise


class _AppendFile:
    """A new file that whole records are appended to, one write each (a process killed
    halfway leaves a torn last record, which is never read). Only the process that opened
    it closes it: a forked copy of this object that dies in a worker leaves the number
    alone, since there it may name another file."""

    def __init__(self, path: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self.fd = os.open(path, flags, 0o644)
        self.close = weakref.finalize(self, _close_in, os.getpid(), self.fd)

    def write(self, record: bytes) -> None:
        _write_all(self.fd, record)


def _close_in(pid: int, fd: int) -> None:
    if os.getpid() == pid:
        os.close(fd)


class _PartWriter(_AppendFile):
    """This process's part file of a cache by index."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        name = f"part-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin"
        super().__init__(os.path.join(directory, name))


class _StreamWriter:
    """One pass's cache of a stream, in a directory of its own: sealed when the pass says
    so, removed if it ends before (a ``break``, an error)."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store
        self.building = f"{store.directory}.stream-{uuid.uuid4().hex[:12]}"
        self.path = os.path.join(self.building, "part-00000.bin")
        self.offsets: list[int] = []
        self.at = 0
        self.file: _AppendFile | None = None
        self.sealed = False

    def __enter__(self) -> _StreamWriter:
        return self

    def _open(self) -> _AppendFile:
        os.makedirs(self.building)
        self.file = _AppendFile(self.path)
        return self.file

    def add(self, key: Any, value: Any) -> None:
        record = _record(len(self.offsets), _encode(key, (key, value)))
        (self.file or self._open()).write(record)
        self.offsets.append(self.at)
        self.at += len(record)

    def seal(self) -> None:
        if self.store.sealed():
            return  # another pass sealed it meanwhile
        (self.file or self._open()).close()  # (an empty stream: an empty cache)
        index = np.zeros((len(self.offsets), 2), dtype=np.int64)
        index[:, 1] = self.offsets
        self.store._publish([(self.path, self.at)], index, len(self.offsets), link=False,
                            building=self.building)
        self.sealed = True

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()
        if not self.sealed:
            shutil.rmtree(self.building, ignore_errors=True)


class _Reader:
    """A complete cache, opened: the index and manifest checked at once, each record's
    header and CRC-32 when it is read. Its part files are mapped as they are first read."""

    def __init__(self, directory: str, layout: str) -> None:
        self.directory = directory
        manifest = _read_manifest(directory, layout)
        self.index = _read_index(os.path.join(directory, INDEX), manifest)
        self.count = int(manifest["count"])
        self.parts = [os.path.join(directory, part["name"]) for part in manifest["parts"]]
        for path, part in zip(self.parts, manifest["parts"], strict=True):
            size = os.path.getsize(path) if os.path.exists(path) else None
            if size is None or size < part["bytes"]:
                raise CacheError(
                    f"cache: {path} is truncated: {size} bytes, the manifest says "
                    f"{part['bytes']}; {_REBUILD.format(directory)}"
                    if size is not None else f"cache: {path} is missing; "
                    f"{_REBUILD.format(directory)}"
                )
        self._maps: list[mmap.mmap | bytes | None] = [None] * len(self.parts)

    def value(self, index: int) -> Any:
        """The element at source index ``index`` (a cache by index)."""
        if not 0 <= index < len(self.index):
            raise IndexError(f"cache: source index {index} is out of range")
        part, offset = self.index[index].tolist()
        if part < 0:
            raise CacheError(
                f"cache: {self.directory} holds no element for source index {index} (it holds "
                f"those one pass selected); {_REBUILD.format(self.directory)}"
            )
        return self._load(part, offset, index)

    def entries(self, start: int) -> Iterator[tuple[int, tuple[Any, Any]]]:
        """``(n, (key, element))`` for the elements of a stream's cache from ``start``,
        ``n`` counting from 1."""
        for n in range(start, self.count):
            part, offset = self.index[n].tolist()
            yield n + 1, self._load(part, offset, n)

    def _load(self, part: int, offset: int, key: int) -> Any:
        path = self.parts[part] if 0 <= part < len(self.parts) else self.directory
        payload = self._payload(part, offset, key, path)
        try:
            return pickle.loads(payload)
        except Exception as exc:
            raise CacheError(f"cache: {path}: the record at byte {offset} does not load "
                             f"({exc}); {_REBUILD.format(self.directory)}") from exc

    def _payload(self, part: int, offset: int, key: int, path: str) -> memoryview:
        if not 0 <= part < len(self.parts):
            raise CacheError(f"cache: {os.path.join(self.directory, INDEX)} is corrupted "
                             f"(part {part}); {_REBUILD.format(self.directory)}")
        data = self._map(part)
        if not 0 <= offset <= len(data) - _HEADER.size:
            raise self._damaged(path, offset, "it lies past the end of the file (truncated?)")
        magic, found, length, crc = _HEADER.unpack_from(data, offset)
        if magic != _MAGIC or found != key:
            raise self._damaged(path, offset, f"its header is damaged (expected key {key})")
        start = offset + _HEADER.size
        if length < 0 or start + length > len(data):
            raise self._damaged(path, offset, "it runs past the end of the file (truncated?)")
        payload = memoryview(data)[start : start + length]
        if zlib.crc32(payload, zlib.crc32(_KEYED.pack(found, length))) != crc:
            raise self._damaged(path, offset, "its checksum does not match (corrupted)")
        return payload

    def _damaged(self, path: str, offset: int, what: str) -> CacheError:
        return CacheError(f"cache: {path}: the record at byte {offset} is unreadable: {what}; "
                          f"{_REBUILD.format(self.directory)}")

    def _map(self, part: int) -> mmap.mmap | bytes:
        data = self._maps[part]
        if data is None:  # (two threads may both map it: one mapping is dropped, no harm)
            with open(self.parts[part], "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self._maps[part] = data
        return data


_REBUILD = "delete {} to have the next pass rebuild the cache"


def _read_manifest(directory: str, layout: str) -> dict[str, Any]:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise CacheError(f"cache: {path} is missing: {directory} is not a complete cache; "
                         f"{_REBUILD.format(directory)}") from None
    except (OSError, ValueError) as exc:
        raise CacheError(f"cache: {path} is corrupted ({exc}); "
                         f"{_REBUILD.format(directory)}") from exc
    fields_ok = isinstance(manifest, dict) and all(
        isinstance(manifest.get(k), int) for k in ("format", "count", "rows")
    ) and isinstance(manifest.get("parts"), list) and all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and "/" not in p["name"]
        and isinstance(p.get("bytes"), int) for p in manifest["parts"]
    )
    if not fields_ok or manifest["format"] != FORMAT or manifest.get("layout") != layout:
        raise CacheError(f"cache: {path} is corrupted or of another version (expected format "
                         f"{FORMAT}, layout {layout!r}); {_REBUILD.format(directory)}")
    return manifest  # type: ignore[no-any-return]


def _read_index(path: str, manifest: dict[str, Any]) -> np.ndarray:
    directory = os.path.dirname(path)
    try:
        # mapped, so that a process holds only the pages it reads; a plain ndarray view,
        # which indexes faster than a memmap
        index = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
    except FileNotFoundError:
        raise CacheError(f"cache: {path} is missing; {_REBUILD.format(directory)}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise CacheError(f"cache: {path} is corrupted or truncated ({exc}); "
                         f"{_REBUILD.format(directory)}") from exc
    if index.dtype != np.int64 or index.shape != (manifest["rows"], 2):
        raise CacheError(f"cache: {path} is corrupted: an index of {index.dtype} "
                         f"{index.shape}, not int64 ({manifest['rows']}, 2); "
                         f"{_REBUILD.format(directory)}")
    return index


def _write_index(path: str, index: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, index, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _link_or_copy(source: str, target: str) -> None:
    """``target`` the same file as ``source`` (a hard link: no copy), or a copy of it where
    the file system has no links. A writer still appending to ``source`` only adds records
    past those the index names."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _part_files(directory: str) -> list[str]:
    names = sorted(n for n in os.listdir(directory) if n.startswith("part-") and n.endswith(".bin"))
    return [os.path.join(directory, n) for n in names]


def _scan(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The keys and offsets of the whole records a part file begins with, and where they
    end (a record torn by a killed writer, and all after it, are left out)."""
    keys: list[int] = []
    offsets: list[int] = []
    size = os.path.getsize(path)
    at = 0
    if size >= _HEADER.size:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            while at + _HEADER.size <= size:
                magic, key, length, _ = _HEADER.unpack_from(data, at)
                end = at + _HEADER.size + length
                if magic != _MAGIC or length < 0 or end > size:
                    break
                keys.append(key)
                offsets.append(at)
                at = end
    return np.array(keys, dtype=np.int64), np.array(offsets, dtype=np.int64), at


def _index_by_key(parts: list[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    """``(part, offset)`` of a record for each source index (-1: none); any record of an
    index will do, since every record of it holds the same element."""
    index = np.full((size, 2), -1, dtype=np.int64)
    for number, (keys, offsets) in enumerate(parts):
        ok = (keys >= 0) & (keys < size)
        index[keys[ok], 0] = number
        index[keys[ok], 1] = offsets[ok]
    return index


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Pickler(pickle.Pickler):
    """Pickles elements as the workers send them: tensors of every dtype included."""

    def reducer_override(self, obj: Any) -> Any:
        return portable_tensor(obj)


def _encode(key: Any, value: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except Exception as exc:
        raise TypeError(f"cache: cannot store the element with key {key!r}: it does not "
                        f"pickle ({exc})") from exc
    return buffer.getvalue()


def _record(key: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_KEYED.pack(key, len(payload))))
    return _HEADER.pack(_MAGIC, key, len(payload), crc) + payload


# -- which pipe a cache belongs to --------------------------------------------------------
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SAMPLED = 64  # a source this small is sampled whole


def cache_digest(prefix: Pipe[Any], layout: str) -> str:
    """The name of the cache of ``prefix`` (the pipe before a cache): a digest of its
    stages' reprs, what they read when the pipe runs (a shard's rank), the code of their
    functions, and its source: for data in memory (a list, an array, a memmap), its kind,
    length and a sample of its elements; for a dataset object, which is never read here (it
    may open files that forked workers would then share), its class, length and own repr.

    Data in memory is named by its elements rather than its repr, so that the copies of it
    the loader gives process workers (a shared list, a memmap sent by path) name the same
    cache.

    >>> import datapipes as dp
    >>> a = cache_digest(dp.from_sequence(range(10)) | dp.map(abs), "index")
    >>> a == cache_digest(dp.from_sequence(range(10)) | dp.map(abs), "index")
    True
    >>> a == cache_digest(dp.from_sequence(range(11)) | dp.map(abs), "index")
    False
    """
    source = prefix.stages[0]
    read = [state for s in prefix.stages if (state := s.run_time_state()) is not None]
    text = "\n".join([
        f"datapipes cache {FORMAT}", layout, _source_text(source),
        " | ".join(repr(s) for s in prefix.stages[1:]), repr(read),
        *(_stage_code(s) for s in prefix.stages),
    ])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


#: what a ``from_sequence`` may hold that is data in memory (or mapped): safe to read here
_IN_MEMORY = (list, tuple, range, np.ndarray, SerializedSequence, MappedArray)


def _source_text(source: Stage) -> str:
    if not (isinstance(source, (FromSequence, FromArrays))):
        sample = source.sample_text() if isinstance(source, Source) else ""
        return f"{source!r}|{sample}"
    n = source.size()
    seq = getattr(source, "seq", None)
    if isinstance(source, FromSequence) and not (isinstance(seq, _IN_MEMORY) or _is_tensor(seq)):
        kind = type(seq)
        own = _ADDRESS.sub("", repr(seq))[:2000] if kind.__repr__ is not object.__repr__ else ""
        return f"{source.call_name}|{n}|{kind.__module__}.{kind.__qualname__}|{own}"
    picks = range(n) if n <= _SAMPLED else sorted({0, n // 2, n - 1})
    return f"{source.call_name}|{n}|" + "|".join(_sample(source, i) for i in picks)


def _sample(source: Source, i: int) -> str:
    try:
        x = source.fetch(i)
    except Exception as exc:  # it will fail when the pipe runs, and say so then
        return f"<{type(exc).__name__}>"
    return _element_text(x)


def _element_text(x: Any) -> str:
    """Text that tells elements apart and is the same in every run and process."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]
        return f"array {x.dtype} {x.shape} {digest}"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {_element_text(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)) and len(x) <= _SAMPLED:
        return f"{type(x).__name__}(" + ", ".join(_element_text(v) for v in x) + ")"
    return _ADDRESS.sub("", repr(x))[:200]


def _stage_code(stage: Stage) -> str:
    """The code of the functions a stage holds (and of a stage class of the user's own), so
    that editing a function makes a new cache; their names are in the repr already."""
    functions: list[Any] = [getattr(stage, f.name) for f in attrs.fields(type(stage))
                            if callable(getattr(stage, f.name))]
    if not type(stage).__module__.startswith("datapipes"):
        functions += [f for f in vars(type(stage)).values() if callable(f)]
    return ",".join(_code_text(code) for fn in functions if (code := _code_of(fn)) is not None)


def _code_of(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None and callable(fn) and not isinstance(fn, type):
        code = getattr(type(fn).__call__, "__code__", None)
    return code


def _code_text(code: Any) -> str:
    consts = [_code_text(c) if hasattr(c, "co_code") else
              repr(sorted(map(repr, c))) if isinstance(c, frozenset) else repr(c)
              for c in code.co_consts]
    text = f"{code.co_code.hex()}|{code.co_names}|{consts}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]

