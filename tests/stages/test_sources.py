"""Sources by example: from_sequence, from_arrays, from_iterable, and how pipes compose."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes._graph import stage_by_stage as run_naive


class CountingDataset(torch.utils.data.Dataset):
    """A map-style Dataset that records every index it is asked for."""

    def __init__(self, n: int, *, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.calls: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.calls.append(i)
        if i == self.fail_at:
            raise KeyError(f"no element {i}")
        return 10 * i


def numbers():
    yield from range(4)


def double(x):
    return 2 * x


def keep_even(x):
    return x % 2 == 0


# -- from_sequence --------------------------------------------------------------------------


def test_from_sequence_list():
    assert list(dp.from_sequence(["a", "b", "c"])) == ["a", "b", "c"]


def test_from_sequence_range():
    pipe = dp.from_sequence(range(3, 8))
    assert list(pipe) == [3, 4, 5, 6, 7]
    assert len(pipe) == 5


def test_from_sequence_numpy_array_yields_rows():
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = list(dp.from_sequence(data))
    assert len(out) == 4
    for i, row in enumerate(out):
        assert isinstance(row, np.ndarray)
        assert row.dtype == np.float32
        np.testing.assert_array_equal(row, data[i])


def test_from_sequence_dataset():
    ds = CountingDataset(5)
    pipe = dp.from_sequence(ds)
    assert len(pipe) == 5
    assert list(pipe) == [0, 10, 20, 30, 40]


def test_from_sequence_is_lazy_with_take():
    ds = CountingDataset(100)
    pipe = dp.from_sequence(ds) | dp.take(3)
    assert ds.calls == []  # building the pipe reads nothing
    assert list(pipe) == [0, 10, 20]
    assert sorted(ds.calls) == [0, 1, 2]


def test_from_sequence_shuffle_then_take_fetches_only_taken():
    ds = CountingDataset(100)
    out = list(dp.from_sequence(ds) | dp.shuffle() | dp.take(3))
    assert len(ds.calls) == 3
    assert sorted(out) == sorted(10 * i for i in ds.calls)


def test_from_sequence_fetches_only_elements_reached():
    # "Elements are fetched lazily, only when reached" (from_sequence's docstring): an element
    # that fails to load must not fail the elements before it, exactly as in run_naive.
    pipe = dp.from_sequence(CountingDataset(10, fail_at=5))
    assert list(itertools.islice(run_naive(pipe, EpochContext(0, 0)), 3)) == [0, 10, 20]
    assert list(itertools.islice(pipe, 3)) == [0, 10, 20]
    ds = CountingDataset(10)
    it = iter(dp.from_sequence(ds))
    assert next(it) == 0
    assert ds.calls == [0]


@pytest.mark.parametrize(
    "bad",
    [{"a": 1}, {}, (i for i in range(3)), iter([1, 2]), 3, None],
    ids=["dict", "empty-dict", "generator", "iterator", "int", "none"],
)
def test_from_sequence_rejects_non_sequences(bad):
    with pytest.raises(TypeError, match=r"^from_sequence: "):
        dp.from_sequence(bad)


def test_from_sequence_rejection_points_to_from_iterable():
    with pytest.raises(TypeError, match="from_iterable"):
        dp.from_sequence(x for x in range(3))


def test_from_sequence_is_reiterable():
    pipe = dp.from_sequence([1, 2, 3])
    assert list(pipe) == list(pipe) == [1, 2, 3]


# -- from_arrays ---------------------------------------------------------------------------


def test_from_arrays_numpy_columns_give_dict_rows():
    x = np.arange(6).reshape(3, 2)
    y = np.array([0.5, 1.5, 2.5])
    rows = list(dp.from_arrays(x=x, y=y))
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert list(row) == ["x", "y"]
        np.testing.assert_array_equal(row["x"], x[i])
        assert row["y"] == y[i]


def test_from_arrays_tensor_columns():
    x = torch.arange(8).reshape(4, 2)
    labels = torch.tensor([1, 0, 1, 0])
    pipe = dp.from_arrays(image=x, label=labels)
    assert len(pipe) == 4
    rows = list(pipe)
    for i, row in enumerate(rows):
        assert torch.equal(row["image"], x[i])
        assert int(row["label"]) == int(labels[i])


def test_from_arrays_mixed_numpy_and_tensor():
    pipe = dp.from_arrays(a=np.arange(3), b=torch.arange(3) * 2)
    assert [(int(r["a"]), int(r["b"])) for r in pipe] == [(0, 0), (1, 2), (2, 4)]


def test_from_arrays_unequal_lengths_names_columns_and_lengths():
    with pytest.raises(ValueError, match=r"^from_arrays: ") as info:
        dp.from_arrays(image=np.zeros((5, 2)), label=np.zeros(4))
    message = str(info.value)
    assert "image" in message and "label" in message
    assert "5" in message and "4" in message


def test_from_arrays_rejects_non_array_column():
    with pytest.raises(TypeError, match=r"^from_arrays: .*'label'"):
        dp.from_arrays(image=np.zeros((2, 2)), label=[0, 1])


def test_from_arrays_needs_a_column():
    with pytest.raises(ValueError, match=r"^from_arrays: "):
        dp.from_arrays()


def test_from_arrays_rejects_zero_dimensional_column():
    with pytest.raises(ValueError, match=r"^from_arrays: "):
        dp.from_arrays(x=np.array(3))


def test_from_arrays_shuffles_by_index():
    pipe = dp.from_arrays(x=np.arange(10)) | dp.shuffle()
    out = [int(r["x"]) for r in pipe]
    assert sorted(out) == list(range(10))
    assert out == [int(r["x"]) for r in pipe]


# -- from_iterable -------------------------------------------------------------------------


def test_from_iterable_reiterable_object():
    pipe = dp.from_iterable([5, 6, 7])
    assert list(pipe) == [5, 6, 7]
    assert list(pipe.iter(epoch=1)) == [5, 6, 7]
    assert len(pipe) == 3


def test_from_iterable_generator_function_called_each_epoch():
    calls = []

    def gen():
        calls.append(1)
        yield from range(3)

    pipe = dp.from_iterable(gen)
    assert list(pipe.iter(epoch=0)) == [0, 1, 2]
    assert list(pipe.iter(epoch=1)) == [0, 1, 2]
    assert len(calls) == 2


def test_from_iterable_module_level_generator_function():
    assert list(dp.from_iterable(numbers) | dp.map(double)) == [0, 2, 4, 6]


def test_from_iterable_rejects_generator_object_with_explanation():
    with pytest.raises(TypeError, match=r"^from_iterable: ") as info:
        dp.from_iterable(numbers())
    message = str(info.value)
    assert "epoch" in message  # says why: it cannot run again
    assert "function" in message  # and what to do instead


def test_from_iterable_rejects_non_iterable():
    with pytest.raises(TypeError, match=r"^from_iterable: "):
        dp.from_iterable(3)


def test_from_iterable_len_only_when_object_has_one():
    assert len(dp.from_iterable((1, 2))) == 2
    assert len(dp.from_iterable(range(4)) | dp.map(double)) == 4
    with pytest.raises(TypeError):
        len(dp.from_iterable(numbers))


def test_from_iterable_callable_must_return_iterable():
    pipe = dp.from_iterable(lambda: 3)
    with pytest.raises(TypeError, match=r"^from_iterable: "):
        list(pipe)


# -- composition -----------------------------------------------------------------------------


def test_fragment_then_source_is_refused():
    with pytest.raises(TypeError, match="source") as info:
        dp.map(double) | dp.from_sequence([1, 2])
    assert "source | " in str(info.value)  # says what to write instead


def test_runnable_then_source_is_refused():
    with pytest.raises(TypeError, match="source") as info:
        dp.from_sequence([1]) | dp.from_sequence([2])
    assert "source | " in str(info.value)


def test_identity_then_source_is_the_source():
    assert dp.Pipe() | dp.from_sequence([1, 2]) == dp.from_sequence([1, 2])


def test_iterating_a_fragment_is_refused():
    fragment = dp.map(double) | dp.batch(2)
    with pytest.raises(TypeError, match="source"):
        iter(fragment)
    with pytest.raises(TypeError, match="source"):
        list(fragment)


def test_full_shuffle_after_filter_is_refused_at_composition():
    with pytest.raises(TypeError, match="buffer"):
        dp.filter(keep_even) | dp.shuffle()
    with pytest.raises(TypeError, match="buffer"):
        dp.from_sequence(range(5)) | dp.filter(keep_even) | dp.shuffle()


@pytest.mark.parametrize(
    "breaker",
    [
        dp.filter(keep_even),
        dp.flat_map(lambda x: [x]),
        dp.batch(2),
        dp.batch(2) | dp.unbatch(),
        dp.take(3),
        dp.skip(1),
    ],
    ids=["filter", "flat_map", "batch", "unbatch", "take", "skip"],
)
def test_full_shuffle_after_stream_stage_is_refused(breaker):
    with pytest.raises(TypeError, match="buffer"):
        dp.from_sequence(range(5)) | breaker | dp.shuffle()
    # a buffer shuffle is fine there
    dp.from_sequence(range(5)) | breaker | dp.shuffle(buffer=3)


def test_full_shuffle_of_a_stream_source_is_refused():
    with pytest.raises(TypeError, match="buffer"):
        dp.from_iterable([1, 2, 3]) | dp.shuffle()
    with pytest.raises(TypeError, match="buffer"):
        dp.from_iterable(numbers) | dp.map(double) | dp.shuffle()
    out = list(dp.from_iterable(numbers) | dp.shuffle(buffer=2))
    assert sorted(out) == [0, 1, 2, 3]


def test_full_shuffle_through_one_to_one_stages_is_fine():
    pipe = dp.from_sequence(range(6)) | dp.map(double) | dp.shuffle()
    assert sorted(pipe) == [0, 2, 4, 6, 8, 10]
    pipe = (
        dp.from_sequence(range(6)) | dp.enumerate() | dp.shuffle() | dp.map(double) | dp.shuffle()
    )
    assert len(list(pipe)) == 6


def test_fragments_compose_before_a_source():
    fragment = dp.map(double) | dp.shuffle()  # random access is assumed until a source says
    pipe = dp.from_sequence(range(4)) | fragment
    assert sorted(pipe) == [0, 2, 4, 6]
    with pytest.raises(TypeError, match="buffer"):
        dp.from_iterable([1, 2]) | fragment


def test_composition_is_associative():
    a, b, c = dp.from_sequence(range(9)), dp.map(double), dp.batch(2)
    assert (a | b) | c == a | (b | c)
    assert list((a | b) | c) == list(a | (b | c))


# -- len -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipe", "n"),
    [
        (dp.from_sequence(range(10)), 10),
        (dp.from_arrays(x=np.zeros(7)), 7),
        (dp.from_sequence(range(10)) | dp.map(double), 10),
        (dp.from_sequence(range(10)) | dp.batch(3), 4),
        (dp.from_sequence(range(10)) | dp.batch(3, drop_last=True), 3),
        (dp.from_sequence(range(10)) | dp.take(4), 4),
        (dp.from_sequence(range(10)) | dp.take(40), 10),
        (dp.from_sequence(range(10)) | dp.skip(4), 6),
        (dp.from_sequence(range(10)) | dp.skip(40), 0),
        (dp.from_sequence(range(10)) | dp.shuffle(), 10),
        (dp.from_sequence(range(10)) | dp.shuffle(buffer=3), 10),
        (dp.from_sequence(range(10)) | dp.enumerate(), 10),
        (dp.from_sequence(range(10)) | dp.batch(4) | dp.collate(), 3),
        (dp.from_iterable([1, 2, 3]) | dp.shuffle(buffer=2) | dp.take(2), 2),
    ],
)
def test_len_when_knowable(pipe, n):
    assert len(pipe) == n
    assert len(list(pipe)) == n


@pytest.mark.parametrize(
    "pipe",
    [
        dp.from_sequence(range(10)) | dp.filter(keep_even),
        dp.from_sequence(range(10)) | dp.flat_map(lambda x: [x]),
        dp.from_sequence(range(10)) | dp.batch(3) | dp.unbatch(),
        dp.from_sequence(range(10)) | dp.filter(keep_even) | dp.map(double) | dp.batch(2),
        dp.from_iterable(numbers),
    ],
)
def test_len_unknown_raises_type_error(pipe):
    with pytest.raises(TypeError):
        len(pipe)


def test_len_of_a_fragment_raises_type_error():
    with pytest.raises(TypeError, match="source"):
        len(dp.map(double) | dp.batch(2))
