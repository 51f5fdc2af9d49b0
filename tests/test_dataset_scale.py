"""What must not grow with the dataset: per-step costs, copies sent to workers, memory in
flight; and when a Loader reads its data (DESIGN §6, §10)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import datapipes as dp
from datapipes.executors.mapped import MappedArray, file_backing
from datapipes.executors.shared_list import share_objects
from datapipes.executors.sizing import TASK_BYTES, ChunkSizer, approx_nbytes
from datapipes.testing.functions import double


class Counted:
    """An element that counts how often its repr is taken."""

    calls = 0

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        Counted.calls += 1
        return f"Counted({self.i})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counted) and other.i == self.i

    def __hash__(self) -> int:
        return self.i


def keep(x: Any) -> bool:
    return True


# -- 1. per-step costs are O(1) in the dataset's size -----------------------------------------
def test_repr_len_explain_and_state_dict_do_not_walk_the_data() -> None:
    data = [Counted(i) for i in range(100_000)]
    unsized = dp.from_sequence(data) | dp.map(double) | dp.filter(keep)
    sized = dp.from_sequence(data) | dp.map(double)
    Counted.calls = 0
    assert repr(unsized) == "from_sequence(<list of 100000>) | map(double) | filter(keep)"
    with pytest.raises(TypeError, match="not known without iterating"):
        len(unsized)
    unsized.explain()
    sized.explain()
    with sized.compile() as loader:
        loader.state_dict()
        loader.explain()
    # the fingerprint of a checkpoint samples three elements; nothing else reads any
    assert Counted.calls <= 3, Counted.calls


def test_a_short_parameter_shows_in_full_and_a_long_one_as_its_size() -> None:
    assert repr(dp.from_sequence([1, (2, "a"), {"k": None}])) == (
        "from_sequence([1, (2, 'a'), {'k': None}])"
    )
    assert repr(dp.from_sequence([[0] * 100])) == "from_sequence(<list of 1>)"
    assert repr(dp.from_sequence("x" * 100)) == "from_sequence(<str of 100>)"
    assert repr(dp.from_sequence(range(10**9))) == "from_sequence(range(0, 1000000000))"


# -- 2. a memmap travels by path ------------------------------------------------------------
@pytest.fixture
def memmap(tmp_path: Any) -> np.memmap:
    path = tmp_path / "data.npy"
    np.save(path, np.arange(300_000, dtype=np.float32).reshape(100_000, 3))
    return np.load(path, mmap_mode="r")


def test_a_memmap_source_pickles_as_its_path(memmap: np.memmap) -> None:
    pipe = dp.from_sequence(memmap) | dp.map(double)
    shipped, note = share_objects(pipe)
    assert note is not None and "travels by path" in note
    assert len(pickle.dumps(pipe)) > memmap.nbytes  # the bug: the whole array, each worker
    assert len(pickle.dumps(shipped)) < 2_000
    back = pickle.loads(pickle.dumps(shipped))
    np.testing.assert_array_equal(np.stack(list(back)), np.stack(list(pipe)))


@pytest.mark.parametrize(
    "view",
    [
        lambda m: m,
        lambda m: m[10:20],
        lambda m: m[::7, 1],
        lambda m: m.T,
        lambda m: np.asarray(m)[5:9],
    ],
    ids=["whole", "rows", "strided", "transposed", "asarray"],
)
def test_a_view_of_a_memmap_maps_the_same_bytes(memmap: np.memmap, view: Any) -> None:
    array = view(memmap)
    assert file_backing(array) is not None
    back = pickle.loads(pickle.dumps(MappedArray(array)))
    assert back.array.shape == array.shape and back.array.dtype == array.dtype
    np.testing.assert_array_equal(back.array, array)
    assert type(back[0]) is type(array[0])


def test_arrays_of_from_arrays_travel_by_path(memmap: np.memmap) -> None:
    pipe = dp.from_arrays(x=memmap, y=np.zeros(len(memmap), np.uint8))
    shipped, note = share_objects(pipe)
    assert note is not None
    assert len(pickle.dumps(shipped)) < memmap.nbytes / 5  # y, a plain array, is sent
    assert [d["x"].tolist() for d in pickle.loads(pickle.dumps(shipped)) | dp.take(3)] == [
        d["x"].tolist() for d in pipe | dp.take(3)
    ]


def test_an_array_in_memory_is_not_file_backed() -> None:
    assert file_backing(np.arange(4)) is None
    assert file_backing([1, 2]) is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_spawned_workers_read_a_memmap_equal_to_the_reference(
    memmap: np.memmap, start_method: str
) -> None:
    pipe = dp.from_sequence(memmap) | dp.shuffle() | dp.take(500) | dp.batch(50) | dp.collate()
    with pipe.compile(workers=2, start_method=start_method) as loader:
        got = list(loader)
        assert "travels by path" in loader.explain()
    want = list(pipe)
    assert len(got) == len(want) == 10
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and bool((a == b).all())


# -- 3. memory in flight is bounded in bytes --------------------------------------------------
def test_a_task_carries_about_task_bytes_once_a_unit_is_measured() -> None:
    sizer = ChunkSizer(64)
    assert sizer() == 1  # before any result: one unit a task
    sizer.observe([[(0, np.zeros(1000, np.uint8))]])
    assert sizer() == 64  # small units: as many as allowed
    big = ChunkSizer(64)
    big.observe([[(0, np.zeros(50 << 20, np.uint8))], [(1, np.zeros(50 << 20, np.uint8))]])
    assert big() == 1
    mid = ChunkSizer(64)
    mid.observe([[(0, {"x": np.zeros(TASK_BYTES // 8, np.uint8), "y": "z" * 1000})]])
    assert mid() == 7  # the dict's other bytes count too


def test_approx_nbytes_samples_containers() -> None:
    assert approx_nbytes(b"abc") == 3
    assert approx_nbytes([np.zeros(10, np.float64)] * 1000) == 80_000
    assert approx_nbytes({"a": "xy", "b": np.zeros(2, np.int8)}) == 4


def big(i: int) -> np.ndarray:
    return np.full(3 << 20, i, dtype=np.uint8)  # 3 MiB


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_large_elements_make_one_element_tasks(backend: str) -> None:
    pipe = dp.from_sequence(range(40)) | dp.map(big)
    with pipe.compile(workers=2, backend=backend, prefetch=8) as loader:
        got = [int(x[0]) for x in loader]
        tasks = loader.stats().tasks
    assert got == list(range(40))
    # before: 3 elements a task (64 at most, spread over workers × 8): 14 tasks of 9 MiB
    assert tasks == 40


@pytest.mark.timeout(120)
def test_small_elements_still_share_a_task() -> None:
    pipe = dp.from_sequence(range(2000)) | dp.map(double)
    with pipe.compile(workers=2, backend="thread") as loader:
        assert list(loader) == [2 * i for i in range(2000)]
        assert loader.stats().tasks < 60  # 4 one-element tasks, then 64 a task


# -- 8. a Loader reads a list when it is compiled ---------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("workers", "backend", "size"),
    [(0, "process", 10), (2, "thread", 10), (2, "process", 10), (2, "process", 20_000)],
)
def test_a_list_changed_after_compile_changes_nothing_for_the_loader(
    workers: int, backend: str, size: int
) -> None:
    data = list(range(size))
    pipe = dp.from_sequence(data) | dp.map(double)
    with pipe.compile(workers=workers, backend=backend) as loader:
        data[0] = 1000  # after compile, before the first epoch
        first = list(loader)
        data[1] = 2000  # between epochs, with persistent workers
        second = list(loader)
    want = [2 * i for i in range(size)]
    assert first == want and second == want
    assert list(pipe)[:2] == [2000, 4000]  # the pipe itself reads the list as it is now
