"""File sources: ``from_files`` (the paths themselves, random access) and ``from_npy`` (the
rows of one ``.npy`` file, memory-mapped).

A path is a local path, or any fsspec URL (``s3://bucket/x``, ``memory://x``,
``file:///x``) where fsspec is installed: a path with a scheme is opened with fsspec, a plain
path with ``open``, so local files need nothing extra. The sources of
:mod:`datapipes.stages.records` (JSON lines, tar shards, Parquet) name their files the same
way (:func:`resolve`).
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import functools
import glob
import os
import re
import threading
from collections.abc import Callable
from typing import IO, Any, ClassVar

import attrs
import numpy as np

from .._graph import Pipe, fail, positional
from .sources import Source, _three

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?[]")
#: a list of more paths, or a longer text, shows in a repr as its length only
_SHOWN, _SHOWN_CHARS = 8, 800


def has_scheme(path: str) -> bool:
    """Whether ``path`` is a URL (``s3://...``), to be opened with fsspec.

    >>> has_scheme("memory://data/a.txt"), has_scheme("data/a.txt"), has_scheme("C:/a.txt")
    (True, False, False)
    """
    return _SCHEME.match(path) is not None


def filesystem(url: str, stage: str = "open_file") -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it."""
    try:
        import fsspec
    except ImportError as exc:
        raise ImportError(
            f"{stage}: the path {url!r} is a URL, which needs fsspec: "
            "pip install 'datapipes[fsspec]' (or pip install fsspec)"
        ) from exc
    fs, inner = fsspec.core.url_to_fs(url)
    return fs, inner


def open_file(path: str, mode: str = "rb") -> IO[Any]:
    """Open ``path`` for reading: a plain path with ``open``, a URL with fsspec.

    What a ``map`` after ``from_files`` calls to read each file, wherever it lies.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("hello")
    >>> with open_file(path) as f:
    ...     f.read()
    b'hello'
    """
    if has_scheme(path):
        fs, inner = filesystem(path)
        return fs.open(inner, mode)  # type: ignore[no-any-return]
    return open(path, mode)


def local_path(path: str) -> str | None:
    """The local path of ``path`` (itself, or a ``file://`` URL's path), None when it lies
    elsewhere (``s3://``, ``memory://``)."""
    if not has_scheme(path):
        return path
    fs, inner = filesystem(path)
    return inner if "file" in _protocols(fs) else None


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# -- naming files ------------------------------------------------------------------------


def resolve(stage: str, spec: Any) -> tuple[str | None, tuple[str, ...]]:
    """What a file source was given, as ``(pattern, paths)``: a string (one path, a glob
    pattern or a directory) is kept as the pattern and expanded to its files, sorted; a list
    of paths gives ``(None, paths)``, in its order. Raise, naming the stage and what was
    given, when a file is missing or nothing matches.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name in ["b.txt", "a.txt", ".hidden"]:
    ...     open(os.path.join(d, name), "w").close()
    >>> [os.path.basename(p) for p in resolve("from_files", d)[1]]
    ['a.txt', 'b.txt']
    >>> resolve("from_files", os.path.join(d, "*.jpg"))
    Traceback (most recent call last):
        ...
    FileNotFoundError: from_files: no file matches '.../*.jpg'
    """
    if isinstance(spec, (str, os.PathLike)):
        pattern = _path_text(stage, spec, "the path")
        return pattern, _expand(stage, pattern)
    if isinstance(spec, (bytes, bytearray, cabc.Mapping)) or not isinstance(spec, cabc.Iterable):
        raise fail(stage, "paths must be a path, a glob pattern, a directory or a list of "
                          f"paths, got {type(spec).__name__}", TypeError)
    paths = tuple(_path_text(stage, p, f"paths[{i}]") for i, p in enumerate(spec))
    if not paths:
        raise fail(stage, "paths is empty; give at least one file")
    _check_files(stage, paths)
    return None, paths


def _path_text(stage: str, path: Any, what: str) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise fail(stage, f"{what} must be a str or os.PathLike, got {type(path).__name__}",
                   TypeError)
    if not path:
        raise fail(stage, f"{what} is an empty string")
    return path


def _expand(stage: str, pattern: str) -> tuple[str, ...]:
    if has_scheme(pattern):
        return _expand_url(stage, pattern)
    if os.path.isfile(pattern):
        return (pattern,)
    if os.path.isdir(pattern):
        return _found(stage, pattern, _walk(pattern), directory=True)
    if _GLOB.search(pattern):
        found = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        return _found(stage, pattern, found, directory=False)
    raise FileNotFoundError(f"{stage}: no such file or directory: {pattern!r}")


def _walk(directory: str) -> list[str]:
    """The files under ``directory``, hidden files and directories left out."""
    found: list[str] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # not walked into
        found.extend(os.path.join(root, name) for name in names if not name.startswith("."))
    return found


def _expand_url(stage: str, url: str) -> tuple[str, ...]:
    fs, inner = filesystem(url, stage)
    if fs.isfile(inner):
        return (url,)
    if fs.isdir(inner):
        root = inner.rstrip("/")
        found = [fs.unstrip_protocol(p) for p in fs.find(inner)
                 if not any(part.startswith(".") for part in p[len(root):].split("/"))]
        return _found(stage, url, found, directory=True)
    if _GLOB.search(inner):
        matches = fs.glob(inner, detail=True)
        found = [fs.unstrip_protocol(p) for p, info in matches.items() if info["type"] == "file"]
        return _found(stage, url, found, directory=False)
    raise FileNotFoundError(f"{stage}: no such file or directory: {url!r}")


def _found(stage: str, pattern: str, found: list[str], *, directory: bool) -> tuple[str, ...]:
    if not found:
        if directory:
            raise FileNotFoundError(
                f"{stage}: the directory {pattern!r} holds no files (hidden ones are left out)"
            )
        raise FileNotFoundError(f"{stage}: no file matches {pattern!r}")
    return tuple(sorted(found))


def _check_files(stage: str, paths: tuple[str, ...]) -> None:
    missing = [p for p in paths if not _is_file(stage, p)]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:3])
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise FileNotFoundError(f"{stage}: no such file: {shown}{more}")


def _is_file(stage: str, path: str) -> bool:
    if has_scheme(path):
        fs, inner = filesystem(path, stage)
        return bool(fs.isfile(inner))
    return os.path.isfile(path)


# -- sources over files ------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class FileSource(Source):
    """A source over files: the pattern it was given (None for a list) and its paths."""

    pattern: str | None = None
    paths: tuple[str, ...]

    def given_repr(self) -> str:
        """The files as the call named them: the pattern, or the list (O(1): a long list
        shows as its length)."""
        if self.pattern is not None:
            return repr(self.pattern)
        text = repr(list(self.paths)) if len(self.paths) <= _SHOWN else ""
        return text if 0 < len(text) <= _SHOWN_CHARS else f"<list of {len(self.paths)}>"

    def options(self) -> list[str]:
        """The arguments after the files, as ``repr`` shows them."""
        return []

    def sample_text(self) -> str:
        return _three(self.paths)

    def __repr__(self) -> str:
        return f"{self.call_name}({', '.join([self.given_repr(), *self.options()])})"


@attrs.frozen(kw_only=True, repr=False)
class FromFiles(FileSource):
    call_name: ClassVar[str] = "from_files"
    keeps_random_access: ClassVar[bool] = True

    def size(self) -> int:
        return len(self.paths)

    def length(self, n: int) -> int:
        return len(self.paths)

    def fetch(self, index: int) -> str:
        return self.paths[index]

    def fetcher(self) -> Callable[[int], Any]:
        return self.paths.__getitem__


def from_files(paths: str | os.PathLike[str] | cabc.Iterable[Any]) -> Pipe[str]:
    """A random-access source over files: element ``i`` is the ``i``-th path (a ``str``).

    ``paths`` is a glob pattern (``"data/**/*.jpg"``: its files, sorted), a directory (every
    file under it, sorted, hidden ones left out), one file, or a list of paths (in its
    order). Read the files in a ``map`` (:func:`open_file` opens a URL too). A missing file
    or a pattern that matches nothing raises ``FileNotFoundError`` here, naming it.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> for name in ["b.txt", "a.txt", "c.csv"]:
    ...     with open(os.path.join(d, name), "w") as f:
    ...         _ = f.write(name.upper())
    >>> def read_text(path):
    ...     with open_file(path) as f:
    ...         return f.read().decode()
    >>> pipe = from_files(os.path.join(d, "*.txt"))
    >>> len(pipe), [os.path.basename(p) for p in pipe]
    (2, ['a.txt', 'b.txt'])
    >>> import datapipes as dp
    >>> list(pipe | dp.map(read_text))
    ['A.TXT', 'B.TXT']
    """
    pattern, found = resolve("from_files", paths)
    return Pipe(FromFiles(pattern=pattern, paths=found))


# -- from_npy ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class FromNpy(Source):
    call_name: ClassVar[str] = "from_npy"
    keeps_random_access: ClassVar[bool] = True
    path: str = positional()
    #: the array's shape, read from the file's header when the stage was built
    shape: tuple[int, ...] = attrs.field(eq=False)

    def size(self) -> int:
        return self.shape[0]

    def length(self, n: int) -> int:
        return self.shape[0]

    def fetch(self, index: int) -> Any:
        return self.fetcher()(index)

    def fetcher(self) -> Callable[[int], Any]:
        # called per task, not per element: the mapping is opened once per process
        array = mapped_npy(self.path)
        if array.ndim == 1 and array.dtype.fields is None:
            return array.__getitem__  # a NumPy scalar: a copy already
        return functools.partial(_row, array)

    def sample_text(self) -> str:
        return f"{self.path}|{self.shape}"

    def __repr__(self) -> str:
        return f"from_npy({self.path!r})"


def _row(array: np.ndarray, index: int) -> Any:
    """Row ``index`` of a mapped array, copied out of the mapping (a plain, writable array)."""
    row = array[index]
    if isinstance(row, np.ndarray):
        return np.array(row)  # owns its data; a plain ndarray, not a memmap
    return np.array(array[index : index + 1])[0]  # a structured scalar, out of the mapping


def from_npy(path: str | os.PathLike[str]) -> Pipe[Any]:
    """A random-access source over the rows of one ``.npy`` file: element ``i`` is a copy of
    ``array[i]`` (a NumPy scalar for a 1-d array).

    The file is memory-mapped, lazily, in each process that reads it: a worker maps the file
    itself by its path and never receives a copy (with ``spawn`` too); only the rows it
    reads are paged in. Only the header is read here, for the length. A URL that is not a
    local file (``s3://``, ``memory://``) is read whole into each process instead.

    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(6, dtype=np.float32).reshape(3, 2))
    >>> pipe = from_npy(path)
    >>> len(pipe), [row.tolist() for row in pipe]
    (3, [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    """
    text = _path_text("from_npy", path, "path")
    if not _is_file("from_npy", text):
        raise FileNotFoundError(f"from_npy: no such file: {text!r}")
    with open_file(text) as f:
        shape, dtype = _npy_header(text, f)
    if dtype.hasobject:
        raise fail("from_npy", f"{text!r} holds Python objects (dtype {dtype}), which cannot "
                               "be memory-mapped; load it and use from_sequence")
    if not shape:
        raise fail("from_npy", f"{text!r} holds a 0-d array; it has no rows")
    return Pipe(FromNpy(path=text, shape=shape))


def _npy_header(path: str, f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
    except ValueError as exc:
        raise fail("from_npy", f"{path!r} is not a .npy file: {exc}") from exc
    return tuple(shape), dtype


#: arrays mapped (or, for a remote URL, read) in this process: a few, most recent last
_ARRAYS: collections.OrderedDict[tuple[Any, ...], np.ndarray] = collections.OrderedDict()
_ARRAYS_LOCK = threading.Lock()
_KEEP_ARRAYS = 16


def mapped_npy(path: str) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` in this process: memory-mapped read-only (a
    local file, mapped again if the file was replaced) or read whole (a remote URL), and
    kept for the next call."""
    local = local_path(path)
    if local is not None:
        st = os.stat(local)
        key: tuple[Any, ...] = (local, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    else:
        key = (path,)
    with _ARRAYS_LOCK:
        array = _ARRAYS.get(key)
        if array is not None:
            _ARRAYS.move_to_end(key)
            return array
    if local is not None:
        array = np.load(local, mmap_mode="r")
    else:
        with open_file(path) as f:
            array = np.load(f, allow_pickle=False)
    with _ARRAYS_LOCK:
        _ARRAYS[key] = array
        while len(_ARRAYS) > _KEEP_ARRAYS:
            _ARRAYS.popitem(last=False)
    return array
