"""batch and unbatch by example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import datapipes as dp
from datapipes.stages.batch import batch_iter, unbatch_value


def keep_even(x):
    return x % 2 == 0


def test_batch():
    assert list(dp.from_sequence(range(7)) | dp.batch(3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_batch_drop_last():
    pipe = dp.from_sequence(range(7)) | dp.batch(3, drop_last=True)
    assert list(pipe) == [[0, 1, 2], [3, 4, 5]]
    assert len(pipe) == 2


def test_batch_exact_multiple():
    pipe = dp.from_sequence(range(6)) | dp.batch(3)
    assert list(pipe) == [[0, 1, 2], [3, 4, 5]]
    assert len(pipe) == 2
    assert list(dp.from_sequence(range(6)) | dp.batch(3, drop_last=True)) == list(pipe)


def test_batch_larger_than_data():
    assert list(dp.from_sequence(range(3)) | dp.batch(10)) == [[0, 1, 2]]
    assert list(dp.from_sequence(range(3)) | dp.batch(10, drop_last=True)) == []


def test_batch_of_one():
    assert list(dp.from_sequence("ab") | dp.batch(1)) == [["a"], ["b"]]


def test_batch_of_empty_source():
    assert list(dp.from_sequence([]) | dp.batch(2)) == []
    assert len(dp.from_sequence([]) | dp.batch(2)) == 0


def test_batches_are_lists():
    for b in dp.from_sequence(range(5)) | dp.batch(2):
        assert type(b) is list


def test_batch_len():
    assert [len(dp.from_sequence(range(n)) | dp.batch(4)) for n in range(9)] == [
        0,
        1,
        1,
        1,
        1,
        2,
        2,
        2,
        2,
    ]
    assert [len(dp.from_sequence(range(n)) | dp.batch(4, drop_last=True)) for n in range(9)] == [
        0,
        0,
        0,
        0,
        1,
        1,
        1,
        1,
        2,
    ]


def test_batch_after_filter_and_on_streams():
    pipe = dp.from_sequence(range(10)) | dp.filter(keep_even) | dp.batch(2)
    assert list(pipe) == [[0, 2], [4, 6], [8]]
    assert list(dp.from_iterable(range(5)) | dp.batch(2)) == [[0, 1], [2, 3], [4]]


def test_batch_after_shuffle_batches_the_shuffled_order():
    order = list(dp.from_sequence(range(10)) | dp.shuffle())
    batches = list(dp.from_sequence(range(10)) | dp.shuffle() | dp.batch(4))
    assert batches == [order[0:4], order[4:8], order[8:10]]


def test_batch_of_batches():
    pipe = dp.from_sequence(range(8)) | dp.batch(2) | dp.batch(2)
    assert list(pipe) == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]


@pytest.mark.parametrize("size", [0, -1])
def test_batch_bad_size_value(size):
    with pytest.raises(ValueError, match=r"^batch: size must be "):
        dp.batch(size)


@pytest.mark.parametrize("size", [2.5, True, "4", None])
def test_batch_bad_size_type(size):
    with pytest.raises(TypeError, match=r"^batch: size must be "):
        dp.batch(size)


def test_batch_bad_drop_last():
    with pytest.raises(TypeError, match=r"^batch: drop_last"):
        dp.batch(2, drop_last=1)


def test_batch_iter_helper():
    assert list(batch_iter([], 3)) == []
    assert list(batch_iter(iter(range(4)), 3)) == [[0, 1, 2], [3]]
    assert list(batch_iter(range(4), 3, drop_last=True)) == [[0, 1, 2]]


# -- unbatch -----------------------------------------------------------------------------------


def test_unbatch_inverts_batch():
    for n in range(8):
        pipe = dp.from_sequence(range(n)) | dp.batch(3) | dp.unbatch()
        assert list(pipe) == list(range(n))


def test_unbatch_lists_and_tuples():
    assert list(dp.from_sequence([[1, 2], (3,), []]) | dp.unbatch()) == [1, 2, 3]


def test_unbatch_numpy_and_tensor_rows():
    arrays = list(dp.from_sequence([np.arange(6).reshape(2, 3)]) | dp.unbatch())
    assert len(arrays) == 2
    np.testing.assert_array_equal(arrays[1], [3, 4, 5])
    tensors = list(dp.from_sequence([torch.arange(4)]) | dp.unbatch())
    assert [int(t) for t in tensors] == [0, 1, 2, 3]


def test_unbatch_of_a_collated_dict_batch_gives_dict_rows():
    pipe = (
        dp.from_arrays(x=np.arange(5), y=np.arange(5) * 1.5)
        | dp.batch(2)
        | dp.collate()
        | dp.unbatch()
    )
    rows = list(pipe)
    assert len(rows) == 5
    assert all(isinstance(r, dict) and list(r) == ["x", "y"] for r in rows)
    assert [(int(r["x"]), float(r["y"])) for r in rows] == [(i, i * 1.5) for i in range(5)]


def test_unbatch_of_a_plain_dict_batch():
    assert list(dp.from_sequence([{"a": [1, 2], "b": ("x", "y")}]) | dp.unbatch()) == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
    ]


def test_unbatch_dict_with_unequal_columns_raises():
    with pytest.raises(ValueError, match=r"^unbatch: "):
        list(dp.from_sequence([{"a": [1, 2], "b": [1]}]) | dp.unbatch())


@pytest.mark.parametrize("bad", ["ab", b"ab", 3, np.array(3)], ids=["str", "bytes", "int", "0d"])
def test_unbatch_refuses_non_batches(bad):
    with pytest.raises(TypeError, match=r"^unbatch: "):
        list(dp.from_sequence([bad]) | dp.unbatch())


def test_unbatch_value_helper():
    assert list(unbatch_value([1, 2])) == [1, 2]
    assert unbatch_value({}) == []


def test_unbatch_has_no_len():
    with pytest.raises(TypeError):
        len(dp.from_sequence(range(4)) | dp.batch(2) | dp.unbatch())
