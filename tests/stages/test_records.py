"""Record sources: from_jsonl, from_tar (WebDataset shards) and from_parquet, with their
readers (read_jsonl, read_tar), bad data, fsspec URLs, workers and resuming."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes.decode import decode
from datapipes.stages.files import open_file
from datapipes.stages.records import (
    from_jsonl,
    from_parquet,
    from_tar,
    jsonl_records,
    read_jsonl,
    read_tar,
    tar_samples,
)
from datapipes.testing import assert_matches_reference, assert_resumable

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# -- helpers (module level: workers pickle them) ----------------------------------------------


def write_jsonl(path, records):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return str(path)


def add_member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path, members, fmt=tarfile.PAX_FORMAT, mode="w"):
    """``members``: ``(name, data)`` or ``(name, data, kind, link)``."""
    with tarfile.open(path, mode, format=fmt) as tar:
        for member in members:
            add_member(tar, *member)
    return str(path)


def sample_members(first, count):
    members = []
    for i in range(first, first + count):
        key = f"s{i:04d}"
        arr = io.BytesIO()
        np.save(arr, np.full(3, i, dtype=np.int32))
        members += [(f"{key}.json", json.dumps({"i": i}).encode()), (f"{key}.cls", b"%d" % (i % 3)),
                    (f"{key}.npy", arr.getvalue())]
    return members


def shard_paths(tmp_path, shards=3, per_shard=4):
    return [write_tar(tmp_path / f"shard-{s}.tar", sample_members(s * per_shard, per_shard))
            for s in range(shards)]


def record_id(record):
    return record["i"] * 10


def index_of(sample):
    return int(json.loads(sample["json"])["i"])


def label_and_array(sample):
    return sample["cls"], sample["npy"].tolist()


def row_sum(row):
    return row["x"] + len(row["name"])


# -- JSON lines -------------------------------------------------------------------------------


def jsonl_files(tmp_path, counts=(3, 4, 2)):
    paths, first = [], 0
    for n, count in enumerate(counts):
        paths.append(write_jsonl(tmp_path / f"part-{n}.jsonl",
                                 [{"i": i} for i in range(first, first + count)]))
        first += count
    return paths


def test_from_jsonl_reads_every_line_file_after_file(tmp_path):
    paths = jsonl_files(tmp_path)
    assert [r["i"] for r in from_jsonl(paths)] == list(range(9))
    assert [r["i"] for r in from_jsonl(paths[::-1])][:2] == [7, 8]  # a list keeps its order
    assert [r["i"] for r in from_jsonl(str(tmp_path / "*.jsonl"))] == list(range(9))
    assert [r["i"] for r in from_jsonl(tmp_path)] == list(range(9))  # a directory, sorted


def test_from_jsonl_is_a_stream_of_unknown_length(tmp_path):
    pipe = from_jsonl(jsonl_files(tmp_path))
    assert pipe.length() is None
    with pytest.raises(TypeError, match=r"random access"):
        pipe | dp.shuffle()
    assert sorted(r["i"] for r in pipe | dp.shuffle(buffer=4)) == list(range(9))


def test_read_jsonl_offsets_restart_where_they_say(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n\n  \n[1, 2]\r\n"\xc3\xa9"\n7')  # blank lines, CRLF, no last \n
    entries = list(read_jsonl(str(path)))
    assert [r for _, r in entries] == [{"a": 1}, [1, 2], "é", 7]
    assert entries[-1][0] == path.stat().st_size
    for k, (offset, _) in enumerate(entries):
        assert list(read_jsonl(str(path), offset)) == entries[k + 1 :]
    assert list(jsonl_records(str(path))) == [r for _, r in entries]


def test_a_malformed_line_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"i": 0}\n{"i": 1}\n{"i": oops}\n{"i": 3}\n')
    with pytest.raises(ValueError, match=r"line 3 of .*bad\.jsonl.*at byte 18") as info:
        list(from_jsonl(str(path)))
    assert "on the element with key 2" in " ".join(info.value.__notes__)
    with pytest.raises(ValueError, match=r"line 7 of"):
        list(read_jsonl(str(path), 18, start_line=7))
    path.write_bytes(b'{"i": 0}\n"\xff"\n')
    with pytest.raises(ValueError, match=r"line 2 of"):
        list(from_jsonl(str(path)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_malformed_line_is_skipped_and_recorded(tmp_path, workers):
    good = write_jsonl(tmp_path / "a.jsonl", [{"i": 0}, {"i": 1}])
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"i": 2}\nnot json\n{"i": 4}\n')
    pipe = from_jsonl([good, str(bad)]) | dp.map(record_id)
    with pipe.compile(workers=workers, backend="thread", on_error="skip") as loader:
        assert list(loader) == [0, 10, 20, 40]
        assert [s.key for s in loader.skipped] == [3]
        assert "line 2 of" in loader.skipped[0].message
        assert loader.skipped[0].error == "ValueError"


def test_a_file_missing_when_read_names_it_and_skip_goes_on(tmp_path):
    paths = jsonl_files(tmp_path)
    pipe = from_jsonl(paths)
    os.remove(paths[1])
    with pytest.raises(FileNotFoundError, match=r"part-1") as info:
        list(pipe)
    assert "key 3" in " ".join(info.value.__notes__)
    with pipe.compile(on_error="skip") as loader:
        assert [r["i"] for r in loader] == [0, 1, 2, 7, 8]
        assert [s.key for s in loader.skipped] == [3]


@pytest.mark.skipif(ROOT, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    paths = jsonl_files(tmp_path)
    os.chmod(paths[0], 0)
    try:
        with pytest.raises(PermissionError, match=r"part-0"):
            list(from_jsonl(paths))
    finally:
        os.chmod(paths[0], 0o644)


@pytest.mark.parametrize("source", [from_jsonl, from_tar])
def test_a_file_that_cannot_be_opened_is_an_error_naming_it(tmp_path, source):
    paths = [write_jsonl(tmp_path / "a.jsonl", [{"i": 0}]), str(tmp_path / "b")]
    write_jsonl(tmp_path / "b", [{"i": 1}])
    pipe = source(paths if source is from_jsonl else [str(tmp_path / "b")])
    os.remove(tmp_path / "b")
    os.mkdir(tmp_path / "b")  # readable by no one, root included
    with pytest.raises(IsADirectoryError, match=r"'.*/b'") as info:
        list(pipe)
    assert "datapipes: raised in stage" in " ".join(info.value.__notes__)


def test_jsonl_construction_errors_name_what_was_given(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^from_jsonl: no file matches '.*\*\.jsonl'"):
        from_jsonl(str(tmp_path / "*.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"^from_jsonl: no such file: '.*nope\.jsonl'"):
        from_jsonl([str(tmp_path / "nope.jsonl")])
    with pytest.raises(ValueError, match=r"^from_jsonl: paths is empty"):
        from_jsonl([])
    with pytest.raises(TypeError, match=r"^from_jsonl: paths"):
        from_jsonl(3)
    with pytest.raises(TypeError, match=r"^from_jsonl: paths\[1\] must be a str"):
        from_jsonl([str(tmp_path), 4])


def test_jsonl_stage_is_a_value(tmp_path):
    paths = jsonl_files(tmp_path)
    pattern = str(tmp_path / "*.jsonl")
    assert from_jsonl(pattern) == from_jsonl(pattern)
    assert hash(from_jsonl(paths)) == hash(from_jsonl(paths))
    assert from_jsonl(paths) != from_jsonl(paths[:2])
    assert from_jsonl(pattern) != from_jsonl(paths)  # the pattern is part of the value
    assert repr(from_jsonl(pattern)) == f"from_jsonl({pattern!r})"
    assert repr(from_jsonl(paths[:1])) == f"from_jsonl([{paths[0]!r}])"
    for pipe in (from_jsonl(pattern), from_jsonl(paths)):
        assert pickle.loads(pickle.dumps(pipe)) == pipe
        assert eval(repr(pipe), {"from_jsonl": from_jsonl}) == pipe


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_jsonl_loader_matches_the_reference(tmp_path, backend):
    pipe = from_jsonl(jsonl_files(tmp_path)) | dp.shuffle(buffer=3) | dp.map(record_id)
    assert_matches_reference(pipe | dp.batch(2), workers=2, backend=backend)


@pytest.mark.timeout(120)
def test_jsonl_resumes(tmp_path):
    pipe = from_jsonl(jsonl_files(tmp_path)) | dp.map(record_id) | dp.batch(2)
    assert_resumable(pipe, at=[0, 3], workers=2, backend="thread")


def test_jsonl_over_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    root = f"memory://{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    for n in range(2):
        with fs.open(f"{root}/part-{n}.jsonl", "wb") as f:
            f.write(b'{"i": %d}\n{"i": %d}\n' % (2 * n, 2 * n + 1))
    pipe = from_jsonl(f"{root}/*.jsonl")
    assert [r["i"] for r in pipe] == [0, 1, 2, 3]
    assert pipe.stages[0].paths[0].startswith("memory://")
    assert [r["i"] for r in from_jsonl(root)] == [0, 1, 2, 3]  # a directory
    with pytest.raises(FileNotFoundError, match=r"no file matches"):
        from_jsonl(f"{root}/*.json")
    local = jsonl_files(tmp_path)
    url = "file://" + os.path.abspath(local[0])
    assert [r["i"] for r in from_jsonl([url])] == [0, 1, 2]
    assert next(read_jsonl(url)) == (9, {"i": 0})
    fs.rm(root, recursive=True)


# -- tar shards -------------------------------------------------------------------------------


def test_from_tar_groups_members_into_samples(tmp_path):
    members = [("0001.jpg", b"J1"), ("0001.JSON", b"{}"), ("0001.seg.png", b"S"),
               ("d/0002.txt", b"two"), ("d/", b"", tarfile.DIRTYPE, ""),
               ("README", b"no extension"), ("0003.cls", b"3")]
    path = write_tar(tmp_path / "a.tar", members)
    samples = list(from_tar(path))
    assert samples == [
        {"__key__": "0001", "__shard__": path, "jpg": b"J1", "json": b"{}", "seg.png": b"S"},
        {"__key__": "d/0002", "__shard__": path, "txt": b"two"},
        {"__key__": "0003", "__shard__": path, "cls": b"3"},
    ]
    assert list(samples[0]) == ["__key__", "__shard__", "jpg", "json", "seg.png"]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_long_member_names_in_every_tar_format(tmp_path, fmt):
    long = "p" * 70 + "/" + "n" * 80  # fits ustar's prefix field
    names = [long + ".txt"]
    if fmt != tarfile.USTAR_FORMAT:
        names.append("q" * 150 + ".txt")  # a pax header or a GNU long name
    path = write_tar(tmp_path / "a.tar", [(name, b"x" * 600) for name in names], fmt=fmt)
    expected = [(name[:-4], b"x" * 600) for name in names]
    assert [(s["__key__"], s["txt"]) for s in from_tar(path)] == expected


def test_read_tar_offsets_restart_where_they_say(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("a.txt", b"1" * 1000), ("a.cls", b"1"),
                                          ("b" * 120 + ".txt", b"2"), ("c.txt", b"3")])
    entries = list(read_tar(path))
    assert [s["__key__"][:3] for _, s in entries] == ["a", "bbb", "c"]
    with tarfile.open(path) as tar:
        starts = {m.name: m.offset for m in tar.getmembers()}
    assert [offset for offset, _ in entries] == [starts["a.txt"], starts["b" * 120 + ".txt"],
                                                 starts["c.txt"]]
    for k, (offset, _) in enumerate(entries):
        assert list(read_tar(path, offset)) == entries[k:]
    assert [s for _, s in entries] == list(tar_samples(path))


def test_gzipped_shards(tmp_path):
    members = sample_members(0, 3)
    plain = write_tar(tmp_path / "a.tar", members)
    gz = write_tar(tmp_path / "a.tar.gz", members, mode="w:gz")
    assert [s["json"] for _, s in read_tar(gz)] == [s["json"] for _, s in read_tar(plain)]
    offsets = [offset for offset, _ in read_tar(gz)]
    assert offsets == [offset for offset, _ in read_tar(plain)]
    assert [s["__key__"] for _, s in read_tar(gz, offsets[1])] == ["s0001", "s0002"]


def test_a_truncated_shard_names_the_shard_and_the_offset(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("a.txt", b"x" * 2000), ("b.txt", b"y")])
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "a.tar").write_bytes(data[:1500])  # inside a's data
    with pytest.raises(ValueError, match=r"a\.tar' is truncated: its data ends at byte 1500, "
                                         r"inside the member 'a\.txt'") as info:
        list(from_tar(path))
    assert "key 0" in " ".join(info.value.__notes__)
    (tmp_path / "a.tar").write_bytes(data[:2560 + 100])  # inside b's header
    with pytest.raises(ValueError, match=r"truncated: its data ends at byte 2660, in the header "
                                         "at byte 2560"):
        list(read_tar(path))
    gz = write_tar(tmp_path / "b.tar.gz", [("a.txt", os.urandom(5000))], mode="w:gz")
    raw = (tmp_path / "b.tar.gz").read_bytes()
    (tmp_path / "b.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"b\.tar\.gz' is truncated"):
        list(read_tar(gz))


def test_a_corrupt_header_or_a_file_that_is_no_tar(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(b"this is not a tar file" * 100)
    with pytest.raises(ValueError, match=r"a\.tar' is not a valid tar file: the header at byte "
                                         r"0 is corrupt"):
        list(from_tar(str(path)))


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("../evil.txt", b"x"), r"has a '\.\.' in its path"),
        (("a/../../evil.txt", b"x"), r"has a '\.\.' in its path"),
        (("/etc/evil.txt", b"x"), "has an absolute path"),
        (("evil.txt", b"", tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link"),
        (("evil.txt", b"", tarfile.LNKTYPE, "0001.txt"), "is a hard link"),
        (("evil.txt", b"", tarfile.FIFOTYPE, ""), "is not a regular file"),
    ],
)
def test_unsafe_members_are_refused_naming_shard_and_member(tmp_path, member, why):
    path = write_tar(tmp_path / "a.tar", [("0001.txt", b"one"), member, ("0003.txt", b"three")])
    with pytest.raises(ValueError, match=rf"refused the member '{member[0]}' of the shard "
                                         rf"'.*a\.tar' \(at byte 1024\): it {why}"):
        list(from_tar(path))
    with from_tar(path).compile(on_error="skip") as loader:
        assert [s["txt"] for s in loader] == [b"one", b"three"]
        assert [s.key for s in loader.skipped] == [1]


def test_a_refused_member_drops_the_sample_it_belongs_to(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("0001.txt", b"1"), ("0002.txt", b"2"),
                                          ("0002.jpg", b"", tarfile.SYMTYPE, "/x"),
                                          ("0002.cls", b"2"), ("0003.txt", b"3")])
    with from_tar(path).compile(on_error="skip") as loader:
        assert [s["__key__"] for s in loader] == ["0001", "0003"]
        assert [s.key for s in loader.skipped] == [1]
        assert "'0002.jpg'" in loader.skipped[0].message


def test_a_duplicate_extension_is_an_error(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("0001.txt", b"1"), ("0001.txt", b"again")])
    with pytest.raises(ValueError, match=r"two members with the extension 'txt'"):
        list(from_tar(path))


@pytest.mark.timeout(60)
def test_a_truncated_shard_under_skip_ends_there_and_the_next_goes_on(tmp_path):
    paths = shard_paths(tmp_path, shards=3, per_shard=2)
    data = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(data[: len(data) // 2])
    pipe = from_tar(paths) | dp.map(index_of)
    with pytest.raises(ValueError, match=r"shard-1.tar' is truncated"):
        list(pipe)
    with pipe.compile(workers=2, backend="thread", on_error="skip") as loader:
        got = list(loader)
        skipped = loader.skipped
    assert got[:2] == [0, 1] and got[-2:] == [4, 5]
    assert len(got) == 5  # the first sample of shard 1 was whole
    assert len(skipped) == 1 and "truncated" in skipped[0].message


def test_tar_construction_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^from_tar: no file matches"):
        from_tar(str(tmp_path / "*.tar"))
    with pytest.raises(FileNotFoundError, match=r"^from_tar: no such file or directory"):
        from_tar(str(tmp_path / "missing.tar"))
    with pytest.raises(FileNotFoundError, match=r"^from_tar: the directory .* holds no files"):
        from_tar(tmp_path)


def test_tar_stage_is_a_value(tmp_path):
    paths = shard_paths(tmp_path)
    pipe = from_tar(paths)
    assert pipe == from_tar(list(paths)) != from_tar(paths[:2])
    assert pickle.loads(pickle.dumps(pipe)) == pipe
    assert eval(repr(pipe), {"from_tar": from_tar}) == pipe
    many = from_tar(paths * 30)
    assert repr(many) == "from_tar(<list of 90>)"


def test_tar_then_decode(tmp_path):
    paths = shard_paths(tmp_path, shards=2, per_shard=3)
    out = list(from_tar(paths) | dp.map(decode) | dp.map(label_and_array))
    assert out == [(i % 3, [i, i, i]) for i in range(6)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_tar_loader_matches_the_reference(tmp_path, backend):
    pipe = from_tar(shard_paths(tmp_path)) | dp.shuffle(buffer=5) | dp.map(decode)
    assert_matches_reference(pipe, workers=2, backend=backend)


@pytest.mark.timeout(120)
def test_tar_resumes(tmp_path):
    pipe = from_tar(shard_paths(tmp_path)) | dp.map(decode) | dp.map(label_and_array)
    assert_resumable(pipe, at=[0, 3], workers=2, backend="thread")


def test_shards_in_a_shuffled_order_with_interleave(tmp_path):
    paths = shard_paths(tmp_path, shards=4, per_shard=3)
    pipe = (dp.from_sequence(paths) | dp.shuffle() | dp.interleave(tar_samples, cycle_length=2)
            | dp.map(index_of))
    assert sorted(pipe) == list(range(12))
    assert list(pipe) != list(range(12))


def test_tar_over_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    root = f"memory://{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    for s, local in enumerate(shard_paths(tmp_path, shards=2, per_shard=2)):
        fs.pipe(f"{root}/shard-{s}.tar", Path(local).read_bytes())
    pipe = from_tar(f"{root}/*.tar") | dp.map(index_of)
    assert list(pipe) == [0, 1, 2, 3]
    assert list(from_tar(root) | dp.map(index_of)) == [0, 1, 2, 3]
    with pipe.compile(workers=2, backend="thread") as loader:
        assert list(loader) == [0, 1, 2, 3]
    url = "file://" + os.path.abspath(tmp_path / "shard-1.tar")
    samples = list(from_tar(url))
    assert [s["__key__"] for s in samples] == ["s0002", "s0003"]
    assert samples[0]["__shard__"] == url
    fs.rm(root, recursive=True)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(
        st.tuples(st.sampled_from(["", "d/", "a/b/", "x" * 90 + "/"]),
                  st.text("abc0é", min_size=1, max_size=120),
                  st.sampled_from(["jpg", "json", "seg.png", "TXT"])),
        max_size=8,
    ),
    sizes=st.lists(st.integers(0, 1100), min_size=8, max_size=8),
    fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
)
def test_read_tar_agrees_with_tarfile(tmp_path, names, sizes, fmt):
    members = [(f"{d}{base}.{ext}", bytes([i]) * size)
               for i, ((d, base, ext), size) in enumerate(zip(names, sizes, strict=False))]
    path = write_tar(tmp_path / f"{uuid.uuid4().hex}.tar", members, fmt=fmt)
    expected, duplicate = [], False  # WebDataset's grouping, from tarfile's reading
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            directory, _, base = info.name.rpartition("/")
            key, _, ext = base.partition(".")
            key, ext = (f"{directory}/" if directory else "") + key, ext.lower()
            data = tar.extractfile(info).read()
            if not expected or expected[-1][1]["__key__"] != key:
                expected.append((info.offset, {"__key__": key, "__shard__": path}))
            duplicate = duplicate or ext in expected[-1][1]
            expected[-1][1][ext] = data
    if duplicate:
        with pytest.raises(ValueError, match=r"two members"):
            list(read_tar(path))
    else:
        assert list(read_tar(path)) == expected


# -- Parquet ----------------------------------------------------------------------------------


def parquet_files(tmp_path, sizes=((3, 2), (0,), (4,)), name="part"):
    """Files of row groups of the given sizes; row ``i`` is ``{"x": i, "name": "r<i>"}``."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    paths, first = [], 0
    for n, groups in enumerate(sizes):
        path = str(tmp_path / f"{name}-{n}.parquet")
        schema = pa.schema([("x", pa.int64()), ("name", pa.string()), ("w", pa.float64())])
        with pq.ParquetWriter(path, schema) as writer:
            for size in groups:
                rows = range(first, first + size)
                writer.write_table(pa.table({"x": list(rows), "name": [f"r{i}" for i in rows],
                                             "w": [i / 2 for i in rows]}, schema=schema))
                first += size
        paths.append(path)
    return paths


def test_from_parquet_rows_across_files_and_row_groups(tmp_path):
    paths = parquet_files(tmp_path)
    pipe = from_parquet(paths)
    assert len(pipe) == 9
    rows = list(pipe)
    assert rows[0] == {"x": 0, "name": "r0", "w": 0.0}
    assert [r["x"] for r in rows] == list(range(9))
    only = from_parquet(str(tmp_path / "*.parquet"), columns=["name", "x"])
    assert list(only)[4] == {"name": "r4", "x": 4}
    assert pipe.stages[0].row_counts == ((3, 2), (0,), (4,))


def test_parquet_has_random_access(tmp_path):
    pipe = from_parquet(parquet_files(tmp_path)) | dp.shuffle() | dp.map(row_sum)
    order = list(dp.from_sequence(range(9)) | dp.shuffle())
    assert list(pipe) == [i + len(f"r{i}") for i in order]
    parts = [list(from_parquet(parquet_files(tmp_path)) | dp.split([0.5, 0.5], k)
                  | dp.map(row_sum)) for k in (0, 1)]
    assert sorted(parts[0] + parts[1]) == sorted(i + len(f"r{i}") for i in range(9))


def test_parquet_reads_each_row_group_once_in_order(tmp_path, monkeypatch):
    from datapipes.stages import records

    paths = parquet_files(tmp_path, sizes=((3, 2), (4,)), name="counted")
    pipe = from_parquet(paths)
    opened, reads = [], []
    real_file = records._parquet_file

    def counting_file(path):
        opened.append(path)
        parquet_file = real_file(path)
        real_read = parquet_file.read_row_group

        def read_row_group(group, **kwargs):
            reads.append((path, group))
            return real_read(group, **kwargs)

        parquet_file.read_row_group = read_row_group
        return parquet_file

    monkeypatch.setattr(records, "_parquet_file", counting_file)
    monkeypatch.setattr(records, "_OPENED", records._Opened())
    assert len(list(pipe)) == 9
    assert opened == paths
    assert reads == [(paths[0], 0), (paths[0], 1), (paths[1], 0)]


def test_parquet_construction_errors(tmp_path):
    paths = parquet_files(tmp_path)
    with pytest.raises(ValueError, match=r"^from_parquet: '.*part-0\.parquet' has no column "
                                         r"'nope'; its columns are \['x', 'name', 'w'\]"):
        from_parquet(paths, columns=["x", "nope"])
    with pytest.raises(TypeError, match=r"^from_parquet: columns must be a list"):
        from_parquet(paths, columns="x")
    with pytest.raises(ValueError, match=r"^from_parquet: columns must be a non-empty"):
        from_parquet(paths, columns=[])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"^from_parquet: cannot read the footer of '.*bad"):
        from_parquet([str(bad)])
    with pytest.raises(FileNotFoundError, match=r"^from_parquet: no such file"):
        from_parquet([str(tmp_path / "gone.parquet")])


def test_a_parquet_file_missing_when_read_is_noted_with_its_index(tmp_path):
    paths = parquet_files(tmp_path, name="vanishing")
    pipe = from_parquet(paths)
    os.remove(paths[2])
    with pytest.raises(OSError, match=r"vanishing-2") as info:
        list(pipe)
    assert "key 5" in " ".join(info.value.__notes__)


def test_parquet_stage_is_a_value(tmp_path):
    paths = parquet_files(tmp_path)
    pipe = from_parquet(paths, columns=["x"])
    assert pipe == from_parquet(paths, columns=("x",)) != from_parquet(paths)
    assert hash(pipe) == hash(from_parquet(paths, columns=["x"]))
    assert pickle.loads(pickle.dumps(pipe)) == pipe
    assert repr(from_parquet(paths[0])) == f"from_parquet({paths[0]!r})"
    assert repr(pipe).endswith(", columns=['x'])")
    assert eval(repr(pipe), {"from_parquet": from_parquet}) == pipe


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_parquet_loader_matches_the_reference(tmp_path, backend):
    pipe = from_parquet(parquet_files(tmp_path)) | dp.shuffle() | dp.map(row_sum)
    assert_matches_reference(pipe | dp.batch(2), workers=2, backend=backend)


@pytest.mark.timeout(120)
def test_parquet_resumes(tmp_path):
    pipe = from_parquet(parquet_files(tmp_path)) | dp.shuffle() | dp.map(row_sum)
    assert_resumable(pipe, at=[0, 3], workers=2, backend="thread")


def test_parquet_over_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    local = parquet_files(tmp_path)
    root = f"memory://{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    for path in local:
        fs.pipe(f"{root}/{os.path.basename(path)}", Path(path).read_bytes())
    pipe = from_parquet(f"{root}/*.parquet", columns=["x"])
    assert [r["x"] for r in pipe | dp.shuffle()] == list(dp.from_sequence(range(9)) | dp.shuffle())
    with pipe.compile(workers=2, backend="thread") as loader:
        assert [r["x"] for r in loader] == list(range(9))
    url = "file://" + os.path.abspath(local[0])
    assert [r["x"] for r in from_parquet([url])] == [0, 1, 2, 3, 4]
    with open_file(url) as f:
        assert f.read(4) == b"PAR1"
    fs.rm(root, recursive=True)
