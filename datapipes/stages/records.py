"""Record sources: JSON lines (``from_jsonl``), WebDataset tar shards (``from_tar``) and
Parquet files (``from_parquet``).

JSON lines and tar shards are streams, read file after file in the main process. Each file
is read by a plain generator that starts at a byte offset and yields every record with its
offset (:func:`read_jsonl`, :func:`read_tar`): where a reader stands is explicit, so that a
reader can later be started where a checkpoint says. Parquet files have random access:
their footers give the rows of each row group, and a worker reads the row group that holds
the row it needs.

Bad data raises an error naming the file, and the line or byte offset; under
``compile(on_error="skip")`` a bad record is dropped and recorded with its key, and reading
goes on (after a shard that cannot be read further, with the next file).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import gzip
import json
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import IO, Any, ClassVar

import attrs

from .._graph import EpochContext, Item, Pipe, fail
from .files import FileSource, has_scheme, open_file, resolve

#: what the readers yield inside: ``(offset, record, None)``, or ``(offset, None, error)``
#: for a bad record that reading can go past
Entry = tuple[int, Any, Exception | None]


def _keyed(source: FileSource, ctx: EpochContext,
           read: Callable[[str], Generator[Entry, None, None]]) -> Iterator[Item]:
    """The records of ``source``'s files in order, keyed ``0, 1, ...``. A bad record takes
    its key and is noted with it (raised, or recorded and dropped under skip); an error
    that ends a file's reader is noted with the next key, and the next file goes on."""
    key = 0
    for path in source.paths:
        with contextlib.closing(read(path)) as entries:  # its file closes with the epoch
            while True:
                try:
                    _, record, error = next(entries)
                except StopIteration:
                    break
                except Exception as exc:
                    if path not in str(exc):
                        exc.add_note(f"datapipes: while reading {path!r}")
                    ctx.failed(exc, source, key)
                    key += 1
                    break
                if error is not None:
                    ctx.failed(error, source, key)
                else:
                    yield key, record
                key += 1


def _raising(entries: Iterator[Entry]) -> Iterator[tuple[int, Any]]:
    for offset, record, error in entries:
        if error is not None:
            raise error
        yield offset, record


# -- JSON lines ----------------------------------------------------------------------------


def read_jsonl(path: str, start_offset: int = 0, *, start_line: int = 1
               ) -> Iterator[tuple[int, Any]]:
    """The records of the JSON-lines file ``path`` from byte ``start_offset`` (the start of
    a line), each as ``(offset after its line, record)``; blank lines are passed over.

    A malformed line raises ``ValueError`` naming the file, the line (numbered from
    ``start_line`` at ``start_offset``) and its byte offset. To go on after it, start again
    at the offset after it.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write('{"a": 1}\\n\\n[2]\\n"three"\\n')
    >>> list(read_jsonl(path))
    [(9, {'a': 1}), (14, [2]), (22, 'three')]
    >>> list(read_jsonl(path, 14, start_line=4))
    [(22, 'three')]
    """
    return _raising(_jsonl_entries(path, start_offset, start_line))


def _jsonl_entries(path: str, start_offset: int = 0, start_line: int = 1
                   ) -> Generator[Entry, None, None]:
    with open_file(path) as f:
        if start_offset:
            f.seek(start_offset)
        offset, line = start_offset, start_line
        for raw in f:
            end = offset + len(raw)
            if raw.strip():
                try:
                    yield end, json.loads(raw), None
                except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                    error = ValueError(f"from_jsonl: malformed JSON on line {line} of {path!r} "
                                       f"(at byte {offset}): {exc}")
                    error.__cause__ = exc
                    yield end, None, error
            offset, line = end, line + 1


def jsonl_records(path: str) -> Iterator[Any]:
    """The records of one JSON-lines file: to read files in a shuffled order, several at a
    time, with ``from_sequence(paths) | shuffle() | interleave(jsonl_records, cycle_length=k)``.

    >>> import os, tempfile, datapipes as dp
    >>> d = tempfile.mkdtemp()
    >>> paths = [os.path.join(d, name) for name in ["a.jsonl", "b.jsonl"]]
    >>> for path, text in zip(paths, ['"a0"\\n"a1"\\n', '"b0"\\n']):
    ...     with open(path, "w") as f:
    ...         _ = f.write(text)
    >>> list(dp.from_sequence(paths) | dp.interleave(jsonl_records, cycle_length=2))
    ['a0', 'b0', 'a1']
    """
    return (record for _, record in read_jsonl(path))


@attrs.frozen(kw_only=True, repr=False)
class FromJsonl(FileSource):
    call_name: ClassVar[str] = "from_jsonl"

    def length(self, n: int) -> None:
        return None

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return _keyed(self, ctx, _jsonl_entries)


def from_jsonl(paths: str | os.PathLike[str] | Iterable[Any]) -> Pipe[Any]:
    """A stream source over JSON-lines files: one element per line (``json.loads``), the
    files one after another (a glob pattern or a directory: sorted; a list: in its order).

    The ``k``-th record of the epoch has key ``k``, counting the malformed lines too. A
    malformed line raises ``ValueError`` naming the file and the line; under
    ``compile(on_error="skip")`` it is dropped and recorded in ``loader.skipped``.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name, text in [("a.jsonl", '{"x": 1}\\n{"x": 2}\\n'), ("b.jsonl", '{"x": 3}\\n')]:
    ...     with open(os.path.join(d, name), "w") as f:
    ...         _ = f.write(text)
    >>> list(from_jsonl(os.path.join(d, "*.jsonl")))
    [{'x': 1}, {'x': 2}, {'x': 3}]
    """
    pattern, found = resolve("from_jsonl", paths)
    return Pipe(FromJsonl(pattern=pattern, paths=found))


# -- tar shards ----------------------------------------------------------------------------

_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_DIRECTORY = b"5"
_LINKS = {b"1": "a hard link", b"2": "a symbolic link"}
_LONG_NAME, _LONG_LINK, _PAX, _GLOBAL_PAX = b"L", b"K", b"x", b"g"
#: WebDataset's rule: the key is the path up to the first dot of the basename
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@attrs.frozen
class _Member:
    offset: int  # of its first header (a long name or pax header comes before it)
    name: str
    kind: bytes
    data: bytes


class _Shard:
    """Reads the members of one tar file, block by block, keeping the byte offset."""

    def __init__(self, path: str, f: IO[bytes], offset: int) -> None:
        self.path, self.f, self.offset = path, f, offset

    def read(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, or an error naming the shard and where its data ended."""
        chunks, got = [], 0
        while got < n:
            try:
                chunk = self.f.read(n - got)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise self.truncated(self.offset + got, what, exc) from exc
            if not chunk:
                raise self.truncated(self.offset + got, what)
            chunks.append(chunk)
            got += len(chunk)
        self.offset += n
        return b"".join(chunks)

    def truncated(self, at: int, what: str, cause: Exception | None = None) -> ValueError:
        detail = f" ({cause})" if cause is not None else ""
        return ValueError(f"from_tar: the shard {self.path!r} is truncated: its data ends at "
                          f"byte {at}, {what}{detail}")

    def header(self) -> bytes | None:
        """The next 512-byte header block; None at the end of the archive (a zero block).
        The end of the file where a header should start is a truncated shard: every tar
        ends with zero blocks."""
        at = self.offset
        try:
            first = self.f.read(_BLOCK)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise self.truncated(at, f"in the header at byte {at}", exc) from exc
        if not first:
            raise self.truncated(at, "where a header should start (the end-of-archive marker "
                                     "is missing)")
        self.offset += len(first)
        block = first + (self.read(_BLOCK - len(first), f"in the header at byte {at}")
                         if len(first) < _BLOCK else b"")
        if block == _ZEROS:
            return None
        if not _checksum_matches(block):
            raise ValueError(f"from_tar: the shard {self.path!r} is not a valid tar file: "
                             f"the header at byte {at} is corrupt (bad checksum)")
        return block

    def members(self) -> Iterator[_Member]:
        """The members, their long names and pax headers applied."""
        long_name: str | None = None
        pax: dict[str, str] = {}
        start = self.offset
        while (block := self.header()) is not None:
            at = self.offset - _BLOCK
            name = pax.get("path") or long_name or _ustar_name(block)
            size = int(pax["size"]) if "size" in pax else _number(block[124:136], self, at)
            data = self.read(size, f"inside the member {name!r} (header at byte {at}, "
                                   f"{size} bytes of data)")
            self.read(-size % _BLOCK, f"in the padding after the member {name!r}")
            kind = block[156:157]
            if kind == _LONG_NAME:
                long_name = _text(data)
            elif kind == _PAX:
                pax = _pax_records(data, self.path, at)
            elif kind not in (_LONG_LINK, _GLOBAL_PAX):
                yield _Member(start, name, kind, data)
                long_name, pax, start = None, {}, self.offset
        if long_name is not None or pax:
            raise self.truncated(self.offset, "after a long-name or pax header with no member")


def _checksum_matches(block: bytes) -> bool:
    """Whether a header's checksum is right, summing its bytes as unsigned or (as some old
    tars did) signed, with the checksum field counted as spaces."""
    text = block[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(text, 8)
    except ValueError:
        return False
    if stored == sum(block[:148]) + 256 + sum(block[156:]):  # 8 spaces: 256
        return True
    return stored == sum(struct.unpack_from("148b8x356b", block)) + 256


def _number(field: bytes, shard: _Shard, at: int) -> int:
    if field[0] in (0x80, 0xFF):  # GNU base-256, for sizes of 8 GiB and more
        n = int.from_bytes(field[1:], "big")
        return n if field[0] == 0x80 else n - 256 ** (len(field) - 1)
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ValueError(f"from_tar: the shard {shard.path!r} is not a valid tar file: the "
                         f"header at byte {at} has a bad number {field!r}") from None


def _text(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _ustar_name(block: bytes) -> str:
    name = _text(block[:100])
    prefix = _text(block[345:500]) if block[257:263] == b"ustar\x00" else ""
    return f"{prefix}/{name}" if prefix else name


def _pax_records(data: bytes, path: str, at: int) -> dict[str, str]:
    """The ``length key=value\\n`` records of a pax header."""
    records: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(data) and data[pos] != 0:
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
            records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError:
        raise ValueError(f"from_tar: the shard {path!r} is not a valid tar file: the pax "
                         f"header at byte {at} is corrupt") from None
    return records


def _refusal(member: _Member) -> str | None:
    """Why a member may not be read, or None."""
    parts = re.split(r"[\\/]", member.name)
    if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name):
        return "has an absolute path"
    if ".." in parts:
        return "has a '..' in its path"
    if member.kind in _LINKS:
        return f"is {_LINKS[member.kind]}"
    if member.kind not in _REGULAR and member.kind != _DIRECTORY:
        return f"is not a regular file (type {member.kind.decode('latin-1')!r})"
    return None


def _refused(path: str, member: _Member, why: str) -> ValueError:
    return ValueError(f"from_tar: refused the member {member.name!r} of the shard {path!r} "
                      f"(at byte {member.offset}): it {why}; a shard holds regular files with "
                      "relative paths")


class _Sample:
    """A sample being put together: the members of one key, in order."""

    def __init__(self, offset: int, key: str, path: str) -> None:
        self.offset = offset
        self.fields: dict[str, Any] = {"__key__": key, "__shard__": path}
        self.error: Exception | None = None

    @property
    def key(self) -> str:
        return self.fields["__key__"]  # type: ignore[no-any-return]

    def entry(self) -> Entry:
        if self.error is not None:
            return self.offset, None, self.error
        return self.offset, self.fields, None


def _tar_entries(path: str, start_offset: int = 0) -> Generator[Entry, None, None]:
    """The samples of one shard from ``start_offset`` (the start of a member's headers),
    each with the offset of its first member; a sample with a refused member comes as its
    error. An error that ends the shard (truncated, corrupt) is raised."""
    with open_file(path) as raw:
        f = _maybe_gunzip(raw)
        if start_offset:
            f.seek(start_offset)
        sample: _Sample | None = None
        for member in _Shard(path, f, start_offset).members():
            why = _refusal(member)
            if why is None and member.kind == _DIRECTORY:
                continue
            found = _KEY_EXT.match(member.name)
            if found is None and why is None:
                continue  # no extension: not part of a sample (as WebDataset)
            key, ext = found.groups() if found is not None else (member.name, "")
            if sample is None or key != sample.key:
                if sample is not None:
                    yield sample.entry()
                sample = _Sample(member.offset, key, path)
            _add_member(sample, member, ext.lower(), why)
        if sample is not None:
            yield sample.entry()


def _add_member(sample: _Sample, member: _Member, ext: str, why: str | None) -> None:
    path = sample.fields["__shard__"]
    if sample.error is not None:
        return
    if why is not None:
        sample.error = _refused(path, member, why)
    elif ext in sample.fields:
        sample.error = ValueError(
            f"from_tar: the sample {sample.key!r} of the shard {path!r} has two members "
            f"with the extension {ext!r} (the second at byte {member.offset})"
        )
    else:
        sample.fields[ext] = member.data


def _maybe_gunzip(f: IO[bytes]) -> IO[bytes]:
    """``f``, decompressed when it is gzip (a ``.tar.gz`` shard; offsets then count the
    uncompressed bytes)."""
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    return f


def read_tar(path: str, start_offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """The samples of the tar shard ``path`` from byte ``start_offset`` (where a member's
    headers start), each as ``(offset of its first member, sample)``.

    A sample is a dict: ``"__key__"`` (the member path up to the first dot of its basename),
    ``"__shard__"`` (``path``), and one ``bytes`` value per member, named by the rest of
    the name, lower-cased (``"jpg"``, ``"seg.png"``). A member that is a link, has an
    absolute path or a ``..`` raises ``ValueError`` naming the shard and the member; a
    shard that ends early raises naming it and the byte offset.

    >>> import io, os, tarfile, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "shard.tar")
    >>> with tarfile.open(path, "w") as tar:
    ...     for name, data in [("a.txt", b"hi"), ("a.cls", b"1"), ("b.txt", b"yo")]:
    ...         info = tarfile.TarInfo(name)
    ...         info.size = len(data)
    ...         tar.addfile(info, io.BytesIO(data))
    >>> [(offset, sample["__key__"], sample["txt"]) for offset, sample in read_tar(path)]
    [(0, 'a', b'hi'), (2048, 'b', b'yo')]
    >>> [sample["__key__"] for _, sample in read_tar(path, 2048)]
    ['b']
    """
    return _raising(_tar_entries(path, start_offset))


def tar_samples(path: str) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard: to read shards in a shuffled order, several at a time,
    with ``from_sequence(paths) | shuffle() | interleave(tar_samples, cycle_length=k)``.

    >>> import io, os, tarfile, tempfile, datapipes as dp
    >>> paths = [os.path.join(tempfile.mkdtemp(), name) for name in ["a.tar", "b.tar"]]
    >>> for path, keys in zip(paths, [["a0", "a1"], ["b0"]]):
    ...     with tarfile.open(path, "w") as tar:
    ...         for key in keys:
    ...             info = tarfile.TarInfo(f"{key}.txt")
    ...             tar.addfile(info, io.BytesIO(b""))
    >>> shards = dp.from_sequence(paths) | dp.interleave(tar_samples, cycle_length=2)
    >>> [sample["__key__"] for sample in shards]
    ['a0', 'b0', 'a1']
    """
    return (sample for _, sample in read_tar(path))


@attrs.frozen(kw_only=True, repr=False)
class FromTar(FileSource):
    call_name: ClassVar[str] = "from_tar"

    def length(self, n: int) -> None:
        return None

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return _keyed(self, ctx, _tar_entries)


def from_tar(paths: str | os.PathLike[str] | Iterable[Any]) -> Pipe[dict[str, Any]]:
    """A stream source over WebDataset tar shards: one dict per sample, the shards one after
    another (a glob pattern or a directory: sorted; a list: in its order).

    Members are grouped by key, the member path up to the first dot of its basename; the
    rest of the name (lower-cased) names the field: ``{"__key__": "0001", "__shard__": path,
    "jpg": b"...", "json": b"..."}``. Members of one sample must be consecutive; directories
    and files without an extension are passed over. Decode the fields in a ``map``
    (``dp.map(dp.decode)``). Links, absolute paths and paths with ``..`` are refused, naming
    the shard and the member; under ``compile(on_error="skip")`` such a sample is dropped,
    and a shard that is truncated or corrupt ends there (the sample being read is dropped)
    while the next shard goes on (a shard must end with the end-of-archive marker every tar
    writer puts there: without it, a shard cut at a member boundary would look whole).
    ``.tar.gz`` shards are read too.

    >>> import io, os, tarfile, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "shard-0.tar")
    >>> with tarfile.open(path, "w") as tar:
    ...     for name, data in [("0001.txt", b"cat"), ("0001.cls", b"3"), ("0002.txt", b"dog")]:
    ...         info = tarfile.TarInfo(name)
    ...         info.size = len(data)
    ...         tar.addfile(info, io.BytesIO(data))
    >>> [(s["__key__"], s["txt"], s.get("cls")) for s in from_tar(path)]
    [('0001', b'cat', b'3'), ('0002', b'dog', None)]
    """
    pattern, found = resolve("from_tar", paths)
    return Pipe(FromTar(pattern=pattern, paths=found))


# -- Parquet -------------------------------------------------------------------------------


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("from_parquet needs pyarrow: pip install 'datapipes[parquet]' (or "
                          "pip install pyarrow)") from exc
    return pq


def _parquet_file(path: str) -> Any:
    """The open ``pyarrow.parquet.ParquetFile`` of ``path`` (a local path or a URL)."""
    pq = _pyarrow_parquet()
    return pq.ParquetFile(open_file(path) if has_scheme(path) else path)


def _close(parquet_file: Any) -> None:
    close = getattr(parquet_file, "close", None)
    if close is not None:
        close()


@attrs.frozen(kw_only=True, repr=False)
class FromParquet(FileSource):
    call_name: ClassVar[str] = "from_parquet"
    keeps_random_access: ClassVar[bool] = True
    columns: tuple[str, ...] | None = None
    #: the rows of each row group of each file, from the footers, read when it was built
    row_counts: tuple[tuple[int, ...], ...] = attrs.field(eq=False)
    #: each non-empty row group as ``(file, row group)``, and the first row of each
    groups: tuple[tuple[int, int], ...] = attrs.field(init=False, eq=False)
    starts: tuple[int, ...] = attrs.field(init=False, eq=False)

    @groups.default
    def _groups(self) -> tuple[tuple[int, int], ...]:
        return tuple((f, g) for f, counts in enumerate(self.row_counts)
                     for g, n in enumerate(counts) if n)

    @starts.default
    def _starts(self) -> tuple[int, ...]:
        starts, total = [], 0
        for f, g in self.groups:
            starts.append(total)
            total += self.row_counts[f][g]
        return (*starts, total)

    def size(self) -> int:
        return self.starts[-1]

    def length(self, n: int) -> int:
        return self.starts[-1]

    def fetch(self, index: int) -> dict[str, Any]:
        g = bisect.bisect_right(self.starts, index) - 1
        f, group = self.groups[g]
        table = _row_group(self.paths[f], group, self.columns)
        return table.slice(index - self.starts[g], 1).to_pylist()[0]  # type: ignore[no-any-return]

    def options(self) -> list[str]:
        return [] if self.columns is None else [f"columns={list(self.columns)!r}"]


class _Opened(threading.local):
    """Per thread of this process: the Parquet files open and the row groups read last."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.files: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.tables: collections.OrderedDict[tuple[Any, ...], Any] = collections.OrderedDict()


_OPENED = _Opened()
_KEEP_FILES, _KEEP_ROW_GROUPS = 8, 4


def _row_group(path: str, group: int, columns: tuple[str, ...] | None) -> Any:
    """Row group ``group`` of ``path`` as a ``pyarrow.Table``, from this thread's cache."""
    opened = _OPENED
    if opened.pid != os.getpid():  # a forked child: its parent's open files are not its own
        opened.__init__()  # type: ignore[misc]
    key = (path, group, columns)
    table = opened.tables.get(key)
    if table is not None:
        opened.tables.move_to_end(key)
        return table
    table = _file(opened, path).read_row_group(
        group, columns=None if columns is None else list(columns), use_threads=False
    )
    opened.tables[key] = table
    if len(opened.tables) > _KEEP_ROW_GROUPS:
        opened.tables.popitem(last=False)
    return table


def _file(opened: _Opened, path: str) -> Any:
    parquet_file = opened.files.get(path)
    if parquet_file is None:
        parquet_file = opened.files[path] = _parquet_file(path)
        if len(opened.files) > _KEEP_FILES:
            _close(opened.files.popitem(last=False)[1])
    opened.files.move_to_end(path)
    return parquet_file


def _footer(path: str, columns: tuple[str, ...] | None) -> tuple[int, ...]:
    """The rows of each row group of ``path``, after checking it has ``columns``."""
    try:
        parquet_file = _parquet_file(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise fail("from_parquet", f"cannot read the footer of {path!r}: {exc}") from exc
    try:
        metadata = parquet_file.metadata
        names = parquet_file.schema_arrow.names
        missing = [c for c in columns or () if c not in names]
        if missing:
            raise fail("from_parquet", f"{path!r} has no column {', '.join(map(repr, missing))}; "
                                       f"its columns are {names}")
        return tuple(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups))
    finally:
        _close(parquet_file)


def _check_columns(columns: Any) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not isinstance(columns, Iterable):
        raise fail("from_parquet", f"columns must be a list of column names, got {columns!r}",
                   TypeError)
    names = tuple(columns)
    if not names or not all(isinstance(c, str) for c in names):
        raise fail("from_parquet", f"columns must be a non-empty list of str, got {columns!r}",
                   TypeError if names else ValueError)
    return names


def from_parquet(paths: str | os.PathLike[str] | Iterable[Any], columns: Iterable[str] | None = None
                 ) -> Pipe[dict[str, Any]]:
    """A random-access source over the rows of Parquet files (needs pyarrow): element ``i``
    is row ``i`` as a dict ``{column: value}`` (of ``columns`` only, when given), counting
    the files' rows one file after another (a glob pattern or a directory: sorted; a list:
    in its order).

    The footers are read here, for the number of rows of each row group. A worker reads a
    row group when it first needs one of its rows and keeps the last few it read, so
    reading in order costs one read per row group; a full ``shuffle()`` may cost one per row.

    >>> import os, tempfile
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
    >>> pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", "c"]}), path, row_group_size=2)
    >>> pipe = from_parquet(path, columns=["y"])
    >>> len(pipe), list(pipe)
    (3, [{'y': 'a'}, {'y': 'b'}, {'y': 'c'}])
    """
    names = _check_columns(columns)
    _pyarrow_parquet()
    pattern, found = resolve("from_parquet", paths)
    counts = tuple(_footer(path, names) for path in found)
    return Pipe(FromParquet(pattern=pattern, paths=found, columns=names, row_counts=counts))

