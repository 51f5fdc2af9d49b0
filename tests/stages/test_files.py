"""File sources: from_files (paths, random access), from_npy (rows of a memory-mapped .npy),
from_arrays over memmaps; fsspec URLs; workers, spawn and resuming."""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import numpy as np
import pytest

import datapipes as dp
from datapipes.stages.files import from_files, from_npy, open_file
from datapipes.testing import assert_matches_reference, assert_resumable

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# -- helpers (module level: workers pickle them) ----------------------------------------------


def make_tree(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name.upper())
    return root


def load(path):
    with open_file(path) as f:
        return f.read().decode()


def row_total(row):
    return float(np.asarray(row).sum())


def column_total(row):
    return float(row["x"].sum()) + float(row["y"])


NAMES = ["b.txt", "a.txt", "sub/c.txt", "sub/deeper/d.txt", "e.csv", ".hidden.txt",
         ".git/f.txt"]


# -- from_files -------------------------------------------------------------------------------


def test_a_glob_pattern_gives_its_files_sorted(tmp_path):
    make_tree(tmp_path, NAMES)
    pipe = from_files(str(tmp_path / "*.txt"))
    assert list(pipe) == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert len(pipe) == 2
    deep = from_files(str(tmp_path / "**" / "*.txt"))
    assert [os.path.relpath(p, tmp_path) for p in deep] == [
        "a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]
    assert all(type(p) is str for p in deep)


def test_a_directory_gives_every_file_under_it_but_hidden_ones(tmp_path):
    make_tree(tmp_path, NAMES)
    (tmp_path / "empty").mkdir()
    got = [os.path.relpath(p, tmp_path) for p in from_files(tmp_path)]
    assert got == ["a.txt", "b.txt", "e.csv", "sub/c.txt", "sub/deeper/d.txt"]


def test_a_list_keeps_its_order_and_one_path_is_one_file(tmp_path):
    make_tree(tmp_path, NAMES)
    paths = [tmp_path / "b.txt", str(tmp_path / "a.txt"), tmp_path / "b.txt"]
    assert list(from_files(paths)) == [str(p) for p in paths]
    assert list(from_files(tmp_path / "e.csv")) == [str(tmp_path / "e.csv")]


def test_construction_errors_name_what_was_given(tmp_path):
    make_tree(tmp_path, ["a.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^from_files: no file matches '.*\*\.jpg'$"):
        from_files(str(tmp_path / "*.jpg"))
    with pytest.raises(FileNotFoundError, match=r"^from_files: no such file or directory: "
                                                r"'.*nowhere'$"):
        from_files(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"^from_files: the directory '.*empty' holds "):
        from_files(tmp_path / "empty")
    missing = [str(tmp_path / f"m{i}.txt") for i in range(5)]
    with pytest.raises(FileNotFoundError, match=r"^from_files: no such file: '.*m0\.txt', "
                                                r"'.*m1\.txt', '.*m2\.txt' \(and 2 more\)$"):
        from_files([str(tmp_path / "a.txt"), *missing])
    with pytest.raises(FileNotFoundError, match=r"no such file"):
        from_files([str(tmp_path)])  # a directory in a list is not a file
    with pytest.raises(ValueError, match=r"^from_files: paths is empty"):
        from_files([])
    with pytest.raises(ValueError, match=r"^from_files: the path is an empty string"):
        from_files("")
    with pytest.raises(TypeError, match=r"^from_files: paths must be"):
        from_files(b"a.txt")
    with pytest.raises(TypeError, match=r"^from_files: paths must be"):
        from_files({"a": 1})
    with pytest.raises(TypeError, match=r"^from_files: paths\[0\] must be a str"):
        from_files([1])


def test_the_stage_is_a_value(tmp_path):
    make_tree(tmp_path, NAMES)
    pattern = str(tmp_path / "*.txt")
    a, b = from_files(pattern), from_files(pattern)
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != from_files(list(a))  # the pattern is part of the value
    assert from_files(list(a)) == from_files(tuple(a))
    assert repr(a) == f"from_files({pattern!r})"
    listed = [str(tmp_path / "a.txt")]
    assert repr(from_files(listed)) == f"from_files({listed!r})"
    for pipe in (a, from_files(listed)):
        assert pickle.loads(pickle.dumps(pipe)) == pipe
        assert eval(repr(pipe), {"from_files": from_files}) == pipe
    long = from_files([str(tmp_path / "a.txt")] * 10_000)
    assert repr(long) == "from_files(<list of 10000>)"
    assert (tmp_path / "z.txt").write_text("new") and from_files(pattern) != a  # a new file


def test_random_access_shuffles_samples_and_shards_indices(tmp_path):
    make_tree(tmp_path, [f"{i:02d}.txt" for i in range(10)])
    paths = list(from_files(tmp_path))
    shuffled = list(from_files(tmp_path) | dp.shuffle())
    assert shuffled == list(dp.from_sequence(paths) | dp.shuffle())
    assert shuffled != paths
    assert len(from_files(tmp_path) | dp.sample(4)) == 4
    parts = [list(from_files(tmp_path) | dp.split([0.3, 0.7], k)) for k in (0, 1)]
    assert sorted(parts[0] + parts[1]) == paths
    ranks = [list(from_files(tmp_path) | dp.shard_by_rank(rank=r, world_size=2))
             for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    assert list(from_files(tmp_path) | dp.map(load) | dp.take(2)) == ["00.TXT", "01.TXT"]


def test_a_file_that_went_missing_is_noted_with_its_index(tmp_path):
    make_tree(tmp_path, ["a.txt", "b.txt", "c.txt"])
    pipe = from_files(tmp_path) | dp.map(load)
    os.remove(tmp_path / "b.txt")
    with pytest.raises(FileNotFoundError, match=r"b.txt") as info:
        list(pipe)
    assert "on the element with key 1" in " ".join(info.value.__notes__)
    with pipe.compile(on_error="skip") as loader:
        assert list(loader) == ["A.TXT", "C.TXT"]
        assert [s.key for s in loader.skipped] == [1]


@pytest.mark.skipif(ROOT, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_noted_with_its_index(tmp_path):
    make_tree(tmp_path, ["a.txt", "b.txt"])
    os.chmod(tmp_path / "a.txt", 0)
    try:
        with pytest.raises(PermissionError) as info:
            list(from_files(tmp_path) | dp.map(load))
        assert "key 0" in " ".join(info.value.__notes__)
    finally:
        os.chmod(tmp_path / "a.txt", 0o644)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_from_files_loader_matches_the_reference(tmp_path, backend):
    make_tree(tmp_path, [f"{i:02d}.txt" for i in range(12)])
    pipe = from_files(str(tmp_path / "*.txt")) | dp.shuffle() | dp.map(load)
    assert_matches_reference(pipe, workers=2, backend=backend)
    assert_matches_reference(pipe | dp.batch(5), workers=2, backend=backend)


@pytest.mark.timeout(120)
def test_from_files_resumes(tmp_path):
    make_tree(tmp_path, [f"{i:02d}.txt" for i in range(12)])
    pipe = from_files(tmp_path) | dp.shuffle() | dp.map(load) | dp.batch(2)
    assert_resumable(pipe, at=[0, 3], workers=2, backend="thread")


def test_from_files_over_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    root = f"memory://{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    for name in ["b.txt", "a.txt", "sub/c.txt", "sub/.hidden", "x.csv"]:
        fs.pipe(f"{root}/{name}", name.upper().encode())
    pattern = from_files(f"{root}/*.txt")
    assert [p.rsplit("/", 1)[1] for p in pattern] == ["a.txt", "b.txt"]
    assert all(p.startswith("memory://") for p in pattern)
    assert list(pattern | dp.map(load)) == ["A.TXT", "B.TXT"]
    assert [p.rsplit("/", 1)[1] for p in from_files(root)] == ["a.txt", "b.txt", "c.txt",
                                                               "x.csv"]
    assert list(from_files([f"{root}/x.csv"]) | dp.map(load)) == ["X.CSV"]
    with pytest.raises(FileNotFoundError, match=r"^from_files: no file matches"):
        from_files(f"{root}/*.jpg")
    with pytest.raises(FileNotFoundError, match=r"^from_files: no such file: 'memory://"):
        from_files([f"{root}/nope.txt"])
    with (pattern | dp.shuffle() | dp.map(load)).compile(workers=2, backend="thread") as loader:
        assert sorted(loader) == ["A.TXT", "B.TXT"]
    fs.rm(root, recursive=True)

    make_tree(tmp_path, ["a.txt", "b.txt"])
    url = "file://" + str(tmp_path.resolve())
    assert list(from_files(url + "/*.txt") | dp.map(load)) == ["A.TXT", "B.TXT"]
    assert from_files(url + "/*.txt").stages[0].paths[0] == url + "/a.txt"


def test_a_url_without_fsspec_says_which_extra_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ImportError, match=r"^from_files: the path 'memory://x/\*' is a URL, "
                                          r"which needs fsspec: pip install 'datapipes\[fsspec\]'"):
        from_files("memory://x/*")
    make_tree(tmp_path, ["a.txt"])
    assert list(from_files(tmp_path)) == [str(tmp_path / "a.txt")]  # local: nothing extra


# -- from_npy ---------------------------------------------------------------------------------


def save(tmp_path, array, name="x.npy"):
    path = str(tmp_path / name)
    np.save(path, array)
    return path


def test_from_npy_rows_are_plain_copies(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    pipe = from_npy(save(tmp_path, data))
    assert len(pipe) == 4
    rows = list(pipe)
    for i, row in enumerate(rows):
        assert type(row) is np.ndarray and row.dtype == np.float32 and row.shape == (3, 2)
        np.testing.assert_array_equal(row, data[i])
        assert row.flags.writeable and row.flags.owndata
    rows[0][0, 0] = 99  # a copy: the file is unchanged
    assert float(next(iter(pipe))[0, 0]) == 0.0
    vector = list(from_npy(save(tmp_path, np.arange(5, dtype=np.int16), "v.npy")))
    assert vector == [0, 1, 2, 3, 4] and type(vector[0]) is np.int16
    fortran = np.asfortranarray(data)
    np.testing.assert_array_equal(list(from_npy(save(tmp_path, fortran, "f.npy")))[2], data[2])
    records = np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")])
    got = list(from_npy(save(tmp_path, records, "r.npy")))
    assert [(int(r["a"]), float(r["b"])) for r in got] == [(1, 2.0), (3, 4.0)]


def test_from_npy_has_random_access(tmp_path):
    data = np.arange(10) * 3
    pipe = from_npy(save(tmp_path, data)) | dp.shuffle()
    assert list(pipe) == list(dp.from_sequence(data) | dp.shuffle())
    assert list(from_npy(save(tmp_path, data)) | dp.take(2)) == [0, 3]


def test_from_npy_pickles_as_its_path(tmp_path):
    pipe = from_npy(save(tmp_path, np.zeros((1000, 1000))))  # 8 MB
    data = pickle.dumps(pipe)
    assert len(data) < 1000
    assert pickle.loads(data) == pipe
    assert repr(pipe) == f"from_npy({str(tmp_path / 'x.npy')!r})"
    assert eval(repr(pipe), {"from_npy": from_npy}) == pipe
    assert pipe != from_npy(save(tmp_path, np.zeros(3), "y.npy"))


def test_from_npy_sees_a_replaced_file(tmp_path):
    path = save(tmp_path, np.arange(4))
    assert list(from_npy(path)) == [0, 1, 2, 3]
    os.remove(path)
    np.save(path, np.arange(4) + 10)
    assert list(from_npy(path)) == [10, 11, 12, 13]


def test_from_npy_construction_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^from_npy: no such file: '.*nope\.npy'"):
        from_npy(str(tmp_path / "nope.npy"))
    text = tmp_path / "t.npy"
    text.write_text("not an array")
    with pytest.raises(ValueError, match=r"^from_npy: '.*t\.npy' is not a \.npy file"):
        from_npy(text)
    with pytest.raises(ValueError, match=r"^from_npy: '.*o\.npy' holds Python objects"):
        from_npy(save(tmp_path, np.array([{}, []], dtype=object), "o.npy"))
    with pytest.raises(ValueError, match=r"0-d array; it has no rows"):
        from_npy(save(tmp_path, np.array(3.0), "s.npy"))
    with pytest.raises(TypeError, match=r"^from_npy: path must be a str"):
        from_npy(3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_from_npy_in_process_workers(tmp_path, start_method):
    data = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    pipe = from_npy(save(tmp_path, data)) | dp.shuffle() | dp.map(row_total)
    assert_matches_reference(pipe, workers=2, start_method=start_method, epochs=1)


@pytest.mark.timeout(120)
def test_from_npy_with_threads_and_resume(tmp_path):
    data = np.arange(60, dtype=np.int64).reshape(20, 3)
    pipe = from_npy(save(tmp_path, data)) | dp.shuffle() | dp.batch(4) | dp.collate(to="numpy")
    assert_matches_reference(pipe, workers=2, backend="thread")
    assert_resumable(pipe, at=[0, 3], workers=2, backend="thread")


def test_from_npy_over_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    data = np.arange(12).reshape(6, 2)
    path = save(tmp_path, data)
    url = "file://" + os.path.abspath(path)
    assert [r.tolist() for r in from_npy(url)] == data.tolist()
    remote = f"memory://{uuid.uuid4().hex}/x.npy"
    fs = fsspec.filesystem("memory")
    fs.pipe(remote, Path(path).read_bytes())
    pipe = from_npy(remote) | dp.shuffle() | dp.map(row_total)
    assert len(pipe) == 6
    assert_matches_reference(pipe, workers=2, backend="thread", epochs=1)
    fs.rm(remote)


# -- from_arrays over memory maps --------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_from_arrays_over_memmaps_in_process_workers(tmp_path, start_method):
    x = np.arange(60, dtype=np.float64).reshape(20, 3)
    y = np.arange(20, dtype=np.int32)
    columns = {"x": np.load(save(tmp_path, x, "x.npy"), mmap_mode="r"),
               "y": np.load(save(tmp_path, y, "y.npy"), mmap_mode="r")}
    pipe = dp.from_arrays(**columns) | dp.shuffle() | dp.map(column_total)
    assert_matches_reference(pipe, workers=2, start_method=start_method, epochs=1)
    with pipe.compile(workers=2, start_method=start_method) as loader:
        assert "travels by path" in loader.explain()
