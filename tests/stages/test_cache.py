"""cache(path): the identity on the stream, written by the first complete pass and read by the
later ones without running the stages before it, under every executor, resumable, and never
read when partly written or damaged.

Every test writes only under pytest's tmp_path; those that start workers have a timeout and
close their loaders; none asserts a duration.
"""

from __future__ import annotations

import functools
import gc
import json
import operator
import os
import pickle
import tempfile
import threading
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes.executors.shared_list import MIN_LENGTH, share_objects
from datapipes.plan import plan
from datapipes.stages.cache import Cache, CacheError, CacheSource, CacheStore, cache
from datapipes.testing import (
    assert_equal_outputs,
    assert_matches_reference,
    assert_resumable,
    reference,
)
from datapipes.testing.functions import add_noise, add_one, double, is_even, repeat_twice

pytestmark = pytest.mark.timeout(120)


# -- importable functions, so that process workers (spawn too) can run them -----------------------
@attrs.frozen
class Decode:
    """``x * 10``, appending one byte to ``log`` per call: a count that works across processes."""

    log: str

    def __call__(self, x: int) -> int:
        with open(self.log, "ab") as f:
            f.write(b".")
        return x * 10


def calls(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def to_array(x: int) -> dict[str, Any]:
    return {"image": np.full((2, 3), x, dtype=np.float32), "label": x, "name": f"n{x}"}


def draw(x: Any, rng: np.random.Generator) -> tuple[Any, int]:
    return x, int(rng.integers(1 << 30))


def stream_of_30() -> Any:
    yield from range(30)


def without_cache(pipe: dp.Pipe[Any]) -> dp.Pipe[Any]:
    """``pipe`` without its caches, and with its ``Decode`` maps counting nowhere."""
    return dp.Pipe(*(
        attrs.evolve(s, fn=Decode(os.devnull)) if isinstance(getattr(s, "fn", None), Decode)
        else s for s in pipe.stages if not isinstance(s, Cache)
    ))


def store_of(pipe: dp.Pipe[Any]) -> CacheStore:
    """The cache directory the plan of ``pipe`` uses."""
    for placed in (plan(pipe).source, *(s for _, s in plan(pipe).index_ops),
                   *(s for _, s in plan(pipe).tail)):
        store = getattr(placed, "store", None)
        if store is not None:
            return store  # type: ignore[no-any-return]
    raise AssertionError(f"no cache in the plan of {pipe!r}")


def sealed_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and "." not in p.name)


def by_index(root: Path, log: Path, **extra: Any) -> dp.Pipe[Any]:
    """A pipe cached by source index, with an index stage before the cache and random
    stages after it."""
    return (dp.from_sequence(range(40)) | dp.split([0.75, 0.25], 0) | dp.map(Decode(str(log)))
            | cache(root) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.batch(4))


def as_stream(root: Path, log: Path) -> dp.Pipe[Any]:
    """A pipe cached as a stream (a filter and a flat_map before it: tuple keys)."""
    return (dp.from_iterable(stream_of_30) | dp.filter(is_even) | dp.flat_map(repeat_twice)
            | dp.map(Decode(str(log))) | cache(root) | dp.map(draw, rng=True) | dp.batch(3))


SHAPES = {"by index": by_index, "as a stream": as_stream}
EXECUTORS = {
    "inline": {"workers": 0},
    "threads": {"workers": 2, "backend": "thread"},
    "processes": {"workers": 2, "start_method": "fork"},
}


# -- the reference: the identity --------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_the_reference_is_the_pipe_without_the_cache(tmp_path: Path, shape: str) -> None:
    pipe = SHAPES[shape](tmp_path / "c", tmp_path / "log")
    for epoch in (0, 1):
        assert_equal_outputs(reference(without_cache(pipe), epoch), reference(pipe, epoch))
    assert not (tmp_path / "c").exists()  # the reference writes nothing


def test_it_takes_no_stage_key(tmp_path: Path) -> None:
    pipe = dp.from_sequence(range(4)) | dp.map(double) | cache(tmp_path) | dp.map(draw, rng=True)
    assert [key for key, _ in pipe.keyed_stages()] == [0, 1, 2, 2]
    assert [key for key, _ in without_cache(pipe).keyed_stages()] == [0, 1, 2]


# -- every executor, with and without the cache on disk ---------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_executor_yields_the_pipe_without_the_cache(
    tmp_path: Path, shape: str, executor: str
) -> None:
    root, log = tmp_path / "c", tmp_path / "log"
    pipe = SHAPES[shape](root, log)
    plain = without_cache(pipe)
    for run in ("writes", "reads"):
        with pipe.compile(**EXECUTORS[executor]) as loader:
            for epoch in (0, 1):
                assert_equal_outputs(reference(plain, epoch), list(loader), f"{run}, {epoch}")
        assert sealed_dirs(root), f"{run}: the cache was not sealed"
    assert_matches_reference(pipe, **EXECUTORS[executor])


def test_spawned_workers_read_and_write_the_same_cache(tmp_path: Path) -> None:
    root, log = tmp_path / "c", tmp_path / "log"
    pipe = by_index(root, log)
    plain = without_cache(pipe)
    for _ in range(2):
        with pipe.compile(workers=2, start_method="spawn") as loader:
            for epoch in (0, 1):
                assert_equal_outputs(reference(plain, epoch), list(loader))
    assert calls(log) == 30  # the 30 elements of the split, once
    assert len(sealed_dirs(root)) == 1


def test_arrays_and_other_values_come_back_alike(tmp_path: Path) -> None:
    pipe = dp.from_sequence(range(20)) | dp.map(to_array) | cache(tmp_path) | dp.batch(6)
    expected = reference(without_cache(pipe))
    for _ in range(3):
        got = list(pipe.compile(workers=2, backend="thread"))
        assert_equal_outputs(expected, got)
    element = next(iter(dp.from_sequence(range(20)) | dp.map(to_array) | cache(tmp_path)))
    assert element["image"].flags.writeable  # a fresh array, not a view of the file


def test_a_large_list_shared_with_processes_uses_the_main_plans_cache(tmp_path: Path) -> None:
    data = list(range(MIN_LENGTH + 5))
    pipe = dp.from_sequence(data) | dp.map(add_one) | cache(tmp_path) | dp.take(50)
    shared, note = share_objects(pipe)
    assert note is not None
    assert store_of(shared) == store_of(pipe)
    memmap = tmp_path / "a.npy"
    np.save(memmap, np.arange(100))
    mapped = dp.from_sequence(np.load(memmap, mmap_mode="r")) | cache(tmp_path / "m")
    assert store_of(share_objects(mapped)[0]) == store_of(mapped)


# -- the stages before it run once ------------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("shape", SHAPES)
def test_later_epochs_and_runs_do_not_run_the_stages_before_it(
    tmp_path: Path, shape: str, executor: str
) -> None:
    root, log = tmp_path / "c", tmp_path / "log"
    pipe = SHAPES[shape](root, log)
    with pipe.compile(**EXECUTORS[executor]) as loader:
        list(loader)
        first = calls(log)
        assert first > 0
        list(loader)  # the same loader: it reads what the first pass wrote
        assert calls(log) == first
    with pipe.compile(**EXECUTORS[executor]) as loader:  # a later run
        list(loader)
        list(loader)
    assert list(pipe.iter(epoch=3)) == list(without_cache(pipe).iter(epoch=3))
    assert calls(log) == first


def test_explain_says_where_the_cache_is_and_whether_it_is_there(tmp_path: Path) -> None:
    pipe = by_index(tmp_path, tmp_path / "log")
    directory = store_of(pipe).directory
    before = pipe.explain()
    assert "no cache yet" in before and directory in before
    assert "map(Decode(log=" in before and "once, into the cache" in before
    list(pipe.iter())
    list(pipe.iter())
    assert f"reads {directory}" in pipe.explain()
    streamed = as_stream(tmp_path / "s", tmp_path / "log")
    assert "tail" in streamed.explain().splitlines()[5]


# -- which cache ---------------------------------------------------------------------------
def test_a_different_upstream_pipe_gets_a_different_directory(tmp_path: Path) -> None:
    base = dp.from_sequence(range(10)) | dp.map(double)
    variants = [
        base,
        dp.from_sequence(range(11)) | dp.map(double),  # another length
        dp.from_sequence(list(range(1, 11))) | dp.map(double),  # other data
        dp.from_sequence(range(10)) | dp.map(add_one),  # another function
        dp.from_sequence(range(10)) | dp.map(double) | dp.take(5),  # another selection
        dp.from_sequence(range(10)) | dp.map(lambda x: x * 2),
        dp.from_sequence(range(10)) | dp.map(lambda x: x * 3),  # same repr, other code
    ]
    directories = [store_of(v | cache(tmp_path)).directory for v in variants]
    assert len(set(directories)) == len(variants)
    assert store_of(base | cache(tmp_path)) == store_of(
        dp.from_sequence(range(10)) | dp.map(double) | cache(str(tmp_path))
    )
    # what comes after the cache does not change which cache it is
    assert store_of(base | cache(tmp_path) | dp.batch(2)) == store_of(base | cache(tmp_path))


def test_two_pipes_sharing_a_path_keep_their_own_caches(tmp_path: Path) -> None:
    a = dp.from_sequence(range(5)) | dp.map(double) | cache(tmp_path)
    b = dp.from_sequence(range(5)) | dp.map(add_one) | cache(tmp_path)
    for _ in range(2):
        assert list(a) == [0, 2, 4, 6, 8]
        assert list(b) == [1, 2, 3, 4, 5]
    assert len(sealed_dirs(tmp_path)) == 2


# -- a partial cache is never read ----------------------------------------------------------
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("shape", SHAPES)
def test_an_interrupted_first_pass_leaves_no_readable_cache(
    tmp_path: Path, shape: str, executor: str
) -> None:
    root, log = tmp_path / "c", tmp_path / "log"
    pipe = SHAPES[shape](root, log)
    with pipe.compile(**EXECUTORS[executor]) as loader:
        for i, _ in enumerate(loader):
            if i == 2:
                break
        list(loader)  # the next pass, whole, is right and completes the cache
    assert [p.name for p in root.iterdir() if ".stream-" in p.name] == []
    plain = without_cache(pipe)
    with pipe.compile(**EXECUTORS[executor]) as loader:
        assert_equal_outputs(reference(plain, 0), list(loader))
    assert sealed_dirs(root)


def test_a_break_seals_nothing(tmp_path: Path) -> None:
    for shape, make in SHAPES.items():
        root = tmp_path / shape.replace(" ", "_")
        pipe = make(root, tmp_path / "log")
        for i, _ in enumerate(pipe.iter()):
            if i == 1:
                break
        assert not root.exists() or sealed_dirs(root) == [], shape
        assert list(pipe.iter()) == list(without_cache(pipe).iter()), shape


def test_a_pass_that_skipped_an_element_seals_nothing(tmp_path: Path) -> None:
    def fail_on_3(x: int) -> int:
        if x == 3:
            raise ValueError("bad")
        return x

    pipe = dp.from_sequence(range(8)) | dp.map(fail_on_3) | cache(tmp_path) | dp.batch(3)
    with pipe.compile(on_error="skip") as loader:
        assert list(loader) == [[0, 1, 2], [4, 5, 6], [7]]
        assert [s.key for s in loader.skipped] == [3]
    assert sealed_dirs(tmp_path) == []


# -- damaged files ----------------------------------------------------------------------------
def sealed(tmp_path: Path, shape: str) -> tuple[dp.Pipe[Any], Path]:
    pipe = SHAPES[shape](tmp_path / "c", tmp_path / "log")
    list(pipe.iter())
    list(pipe.iter())  # (by index: sealed at the start of the second pass)
    (directory,) = sealed_dirs(tmp_path / "c")
    return pipe, tmp_path / "c" / directory


def read_all(pipe: dp.Pipe[Any]) -> None:
    with pipe.compile(workers=2, backend="thread") as loader:
        list(loader)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_corrupted_record_names_its_file(tmp_path: Path, shape: str) -> None:
    pipe, directory = sealed(tmp_path, shape)
    part = directory / "part-00000.bin"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=f"{part}: the record at byte [0-9]+ is unreadable"):
        read_all(pipe)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_truncated_part_names_its_file(tmp_path: Path, shape: str) -> None:
    pipe, directory = sealed(tmp_path, shape)
    part = directory / "part-00000.bin"
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(CacheError, match=f"{part} is truncated"):
        read_all(pipe)


@pytest.mark.parametrize("name", ["index.npy", "cache.json"])
def test_a_damaged_index_or_manifest_names_its_file(tmp_path: Path, name: str) -> None:
    pipe, directory = sealed(tmp_path, "by index")
    target = directory / name
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    with pytest.raises(CacheError, match=f"{target} is corrupted"):
        read_all(pipe)
    target.unlink()
    with pytest.raises(CacheError, match=f"{target} is missing"):
        read_all(pipe)


def test_a_cache_deleted_is_rebuilt(tmp_path: Path) -> None:
    import shutil

    pipe, directory = sealed(tmp_path, "by index")
    shutil.rmtree(directory)
    assert list(pipe.iter()) == list(without_cache(pipe).iter())
    assert list(pipe.iter()) == list(without_cache(pipe).iter())
    assert directory.is_dir()


# -- composition ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "random", [dp.map(add_noise, rng=True), dp.shuffle(), dp.shuffle(buffer=4), dp.sample(3)],
    ids=repr,
)
def test_a_random_stage_before_it_is_refused(tmp_path: Path, random: dp.Pipe[Any]) -> None:
    with pytest.raises(TypeError, match="draws randomness: the cache would freeze its draws"):
        dp.from_sequence(range(10)) | random | dp.map(double) | cache(tmp_path)
    with pytest.raises(TypeError, match="freeze"):
        random | cache(tmp_path)  # a fragment too
    assert (dp.from_sequence(range(10)) | cache(tmp_path) | random).is_runnable


def test_random_access_lasts_through_it(tmp_path: Path) -> None:
    pipe = dp.from_sequence(range(10)) | dp.map(double) | cache(tmp_path) | dp.shuffle()
    assert sorted(pipe) == list(range(0, 20, 2))
    with pytest.raises(TypeError, match="needs random access"):
        dp.from_sequence(range(10)) | dp.filter(is_even) | cache(tmp_path) | dp.shuffle()


def test_len(tmp_path: Path) -> None:
    assert len(dp.from_sequence(range(10)) | cache(tmp_path) | dp.batch(4)) == 3


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (3, TypeError, "cache: path must be a str or an os.PathLike, got 3"),
        (b"/tmp/x", TypeError, "cache: path must be a str or an os.PathLike"),
        ("", ValueError, "cache: path must name a directory"),
    ],
)
def test_argument_errors(path: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        cache(path)


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        cache(tmp_path / "f")


def test_repr_eq_hash_pickle(tmp_path: Path) -> None:
    stage = cache("/data/cache")
    assert repr(stage) == "cache('/data/cache')"
    assert eval(repr(stage)) == stage == cache(Path("/data/cache"))
    assert hash(stage) == hash(cache("/data/cache")) and stage != cache("/data/other")
    pipe = dp.from_sequence(range(5)) | dp.map(double) | stage
    assert pickle.loads(pickle.dumps(pipe)) == pipe
    assert repr(pipe) == "from_sequence(range(0, 5)) | map(double) | cache('/data/cache')"


def test_the_planned_source_travels_by_path(tmp_path: Path) -> None:
    pipe = dp.from_sequence(range(100)) | dp.map(double) | cache(tmp_path)
    list(pipe.iter())
    list(pipe.iter())
    source = plan(pipe).source
    assert isinstance(source, CacheSource)
    source.fetch(3)  # opens the files in this process
    copy = pickle.loads(pickle.dumps(source))
    assert copy == source and copy.store._reader is None
    assert copy.fetch(7) == 14 and copy.store.reader() is not None


def test_an_element_that_does_not_pickle_is_refused(tmp_path: Path) -> None:
    pipe = dp.from_sequence(range(3)) | dp.map(lambda x: threading.Lock()) | cache(tmp_path)
    with pytest.raises(TypeError, match="cache: cannot store the element with key 0"):
        list(pipe)


# -- where it stands in a plan ------------------------------------------------------------------
def test_enumerate_before_it_caches_the_stream(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pipe = (dp.from_sequence(range(12)) | dp.skip(2) | dp.enumerate() | dp.map(Decode(str(log)))
            | cache(tmp_path / "c") | dp.map(draw, rng=True))
    for _ in range(3):
        assert list(pipe) == list(without_cache(pipe))
    assert calls(log) == 10


def test_several_caches(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pipe = (dp.from_sequence(range(10)) | dp.map(Decode(str(log))) | cache(tmp_path / "a")
            | dp.map(add_one) | cache(tmp_path / "b") | dp.map(draw, rng=True))
    for epoch in range(3):
        assert list(pipe.iter(epoch=epoch)) == reference(without_cache(pipe), epoch)
    assert calls(log) == 10


def test_sharded_ranks_share_one_cache(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pipe = (dp.from_sequence(range(20)) | dp.map(Decode(str(log))) | cache(tmp_path / "c")
            | dp.shuffle() | dp.map(add_noise, rng=True))
    for epoch in range(3):
        shares = []
        for rank in range(2):
            with pipe.compile(rank=rank, world_size=2) as loader:
                loader.set_epoch(epoch)
                shares.append(list(loader))
        unsharded = reference(without_cache(pipe), epoch)
        assert sorted(shares[0] + shares[1]) == sorted(unsharded)
    assert calls(log) == 20
    assert len(sealed_dirs(tmp_path / "c")) == 1


# -- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_resumable_while_writing_and_while_reading(tmp_path: Path, shape: str,
                                                   backend: str) -> None:
    pipe = SHAPES[shape](tmp_path / "c", tmp_path / "log")
    # the states of epoch 0 are taken while the cache is written, and resumed once it is there
    assert_resumable(pipe, at=[0, 2, 5, -1], workers=2, backend=backend,
                     resume_with={"workers": 0})
    assert_resumable(pipe, at=[0, 3, 7], workers=2, backend=backend)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_state_taken_while_reading_resumes_without_the_cache(tmp_path: Path,
                                                               shape: str) -> None:
    import shutil

    root = tmp_path / "c"
    pipe, _ = sealed(tmp_path, shape)
    with pipe.compile(workers=2, backend="thread") as loader:
        it = iter(loader)
        first = [next(it) for _ in range(3)]
        state = json.loads(json.dumps(loader.state_dict()))
        rest = list(it)
    shutil.rmtree(root)
    with pipe.compile(workers=2, backend="thread") as resumed:
        resumed.load_state_dict(state)
        assert_equal_outputs(rest, list(resumed))
    assert first + rest == list(without_cache(pipe).iter())


def test_keys_are_kept_when_reading(tmp_path: Path) -> None:
    """A random stage after the cache draws by element key and stage key: the same draws
    whether the elements were computed or read (by index: the source index; as a stream:
    the flat_map's tuple keys)."""
    for shape, make in SHAPES.items():
        pipe = make(tmp_path / shape.replace(" ", "_"), tmp_path / "log")
        expected = [reference(without_cache(pipe), epoch) for epoch in range(3)]
        for epoch in range(3):
            assert list(pipe.iter(epoch=epoch)) == expected[epoch], shape


def test_the_stage_itself_is_the_identity_even_with_a_cache_on_disk(tmp_path: Path) -> None:
    pipe = dp.from_sequence(range(6)) | dp.map(double) | cache(tmp_path)
    list(pipe)
    list(pipe)
    assert sealed_dirs(tmp_path)
    items = [(0, "a"), (5, "b")]
    assert list(pipe.stages[-1].stream(iter(items), EpochContext(0, 0), 2)) == items


# -- more pipes before and after it ------------------------------------------------------------
def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError("bad element 7")
    return x


def row_sum(row: dict[str, Any]) -> int:
    return int(row["x"]) + int(row["y"])


def range_of(x: int) -> range:
    return range(x % 3)


ZOO = {
    "take and skip": lambda c: dp.from_sequence(range(30)) | dp.skip(3) | dp.map(double)
    | dp.take(20) | c | dp.map(draw, rng=True),
    "shard": lambda c: dp.from_sequence(range(30)) | dp.shard_by_rank(rank=1, world_size=3)
    | dp.map(double) | c | dp.shuffle() | dp.batch(4),
    "from_arrays": lambda c: dp.from_arrays(x=np.arange(20), y=np.arange(20) * 3)
    | dp.map(row_sum) | c | dp.map(add_noise, rng=True),
    "parallel_map": lambda c: dp.from_sequence(range(20))
    | dp.parallel_map(double, workers=2) | c | dp.batch(3) | dp.collate(),
    "interleave after": lambda c: dp.from_sequence(range(10)) | dp.map(double) | c
    | dp.interleave(range_of, cycle_length=2) | dp.map(draw, rng=True),
    "batch before": lambda c: dp.from_sequence(range(20)) | dp.batch(3) | c
    | dp.map(draw, rng=True),
    "only the source": lambda c: dp.from_sequence(list("abcdefgh")) | c | dp.shuffle(),
    "nothing selected": lambda c: dp.from_sequence(range(5)) | dp.take(0) | c,
}


@pytest.mark.parametrize("name", ZOO)
def test_more_pipes_around_it(tmp_path: Path, name: str) -> None:
    pipe = ZOO[name](cache(tmp_path))
    plain = ZOO[name](dp.Pipe())
    for _ in range(3):  # writes, seals and reads, then reads
        with pipe.compile(workers=2, backend="thread") as loader:
            for epoch in (0, 1):
                assert_equal_outputs(reference(plain, epoch), list(loader))


@pytest.mark.parametrize("shape", ["by index", "as a stream"])
def test_an_error_before_it_is_raised_as_without_it(tmp_path: Path, shape: str) -> None:
    source = dp.from_sequence(range(10)) if shape == "by index" else dp.from_iterable(
        stream_of_30)
    pipe = source | dp.map(fail_on_7) | cache(tmp_path) | dp.batch(2)
    with pytest.raises(ValueError, match="bad element 7") as raised:
        list(pipe.compile(workers=2))
    assert "raised in stage map(fail_on_7) on the element with key 7" in "".join(
        raised.value.__notes__)
    assert sealed_dirs(tmp_path) == []


def test_a_flipped_payload_byte_fails_its_checksum(tmp_path: Path) -> None:
    pipe, directory = sealed(tmp_path, "by index")
    part = directory / "part-00000.bin"
    data = bytearray(part.read_bytes())
    data[-1] ^= 0x01  # inside the last record's pickled element
    part.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=f"{part}: .* checksum does not match"):
        read_all(pipe)


class Squares:
    """A dataset object: read only by the workers, never when the pipe is planned."""

    def __init__(self, n: int, log: str) -> None:
        self.n, self.log = n, log

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        with open(self.log, "ab") as f:
            f.write(b".")
        return i * i

    def __repr__(self) -> str:
        return f"Squares({self.n})"


def test_a_dataset_object_is_not_read_to_name_its_cache(tmp_path: Path) -> None:
    log = tmp_path / "log"
    pipe = dp.from_sequence(Squares(100, str(log))) | dp.map(add_one) | cache(tmp_path / "c")
    assert calls(log) == 0
    for _ in range(3):
        with pipe.compile(workers=2) as loader:
            assert list(loader) == [i * i + 1 for i in range(100)]
    assert calls(log) == 100
    other = dp.from_sequence(Squares(101, str(log))) | dp.map(add_one) | cache(tmp_path / "c")
    assert store_of(other) != store_of(pipe)


CACHEABLE = [dp.map(double), dp.map(add_one), dp.take(7), dp.skip(2),
             dp.split([0.5, 0.5], 1), dp.filter(is_even), dp.flat_map(repeat_twice),
             dp.batch(3) | dp.map(len), dp.enumerate() | dp.map(sum)]
AFTER = [dp.map(draw, rng=True) | dp.map(str), dp.shuffle(buffer=3), dp.batch(2), dp.map(str)]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.booleans(), n=st.integers(0, 25),
       before=st.lists(st.sampled_from(CACHEABLE), max_size=4),
       after=st.lists(st.sampled_from(AFTER), max_size=3),
       workers=st.sampled_from([0, 2]))
def test_any_pipe_with_a_cache_is_the_pipe_without_it(
    tmp_path: Path, stream: bool, n: int, before: list[dp.Pipe[Any]],
    after: list[dp.Pipe[Any]], workers: int,
) -> None:
    source = dp.from_iterable(list(range(n))) if stream else dp.from_sequence(range(n))
    try:
        plain = functools.reduce(operator.or_, [source, *before, *after])
    except TypeError:  # a split after random access ended
        assume(False)
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    pipe = functools.reduce(operator.or_, [source, *before, cache(root), *after])
    for _ in range(3):  # writes, (seals and) reads, reads
        with pipe.compile(workers=workers, backend="thread") as loader:
            for epoch in (0, 1):
                assert_equal_outputs(reference(plain, epoch), list(loader))


def test_a_forked_copy_of_a_writer_closes_nothing(tmp_path: Path) -> None:
    """A writer that dies in a forked worker must not close its number there: the worker
    may have given it to another file (this hung a loader's workers once)."""
    from datapipes.stages.cache import _AppendFile

    writer = _AppendFile(str(tmp_path / "part.bin"))
    fd = writer.fd
    pid = os.fork()
    if pid == 0:  # the child: drop the copy, then see that the descriptor is still open
        del writer
        gc.collect()
        try:
            os.fstat(fd)
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer.close()
    with pytest.raises(OSError):
        os.fstat(fd)
