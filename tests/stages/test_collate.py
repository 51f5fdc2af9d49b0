"""collate by example: what each kind of element stacks into, and the errors."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

import datapipes as dp

Point = collections.namedtuple("Point", "x y")


def batches(elements, size=None, **kwargs):
    """The collated batches of ``elements``: one batch of all of them unless ``size``."""
    pipe = dp.from_sequence(elements) | dp.batch(size or max(1, len(elements)))
    return list(pipe | dp.collate(**kwargs))


def one(elements, **kwargs):
    (out,) = batches(elements, **kwargs)
    return out


def test_ints_become_int64_tensor():
    out = one([1, 2, 3])
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.int64
    assert out.tolist() == [1, 2, 3]


def test_floats_become_float64_tensor():
    out = one([0.5, 1.5])
    assert out.dtype == torch.float64
    assert out.tolist() == [0.5, 1.5]


def test_bools_become_bool_tensor():
    out = one([True, False, True])
    assert out.dtype == torch.bool
    assert out.tolist() == [True, False, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8, np.bool_])
def test_numpy_arrays_stack_into_a_tensor_keeping_dtype(dtype):
    arrays = [np.full((2, 3), i, dtype=dtype) for i in range(4)]
    out = one(arrays)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (4, 2, 3)
    assert out.dtype == torch.from_numpy(arrays[0]).dtype
    np.testing.assert_array_equal(out.numpy(), np.stack(arrays))


def test_numpy_scalars_keep_dtype():
    out = one([np.float32(1.0), np.float32(2.0)])
    assert out.dtype == torch.float32
    assert out.tolist() == [1.0, 2.0]


def test_tensors_are_stacked():
    tensors = [torch.full((3,), float(i)) for i in range(2)]
    out = one(tensors)
    assert out.shape == (2, 3)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.stack(tensors))


def test_dicts_of_arrays():
    elements = [{"image": np.zeros((2, 2), np.float32) + i, "label": i} for i in range(3)]
    out = one(elements)
    assert list(out) == ["image", "label"]
    assert out["image"].shape == (3, 2, 2)
    assert out["image"].dtype == torch.float32
    assert out["label"].tolist() == [0, 1, 2]


def test_dicts_with_the_same_keys_in_another_order():
    # like torch's default_collate: keys are matched by name, not by order
    out = one([{"a": 1, "b": 2.0}, {"b": 4.0, "a": 3}])
    assert out["a"].tolist() == [1, 3]
    assert out["b"].tolist() == [2.0, 4.0]


def test_nested_tuples_and_lists():
    out = one([(1, [2, (3.0, "s")]), (4, [5, (6.0, "t")])])
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].tolist() == [1, 4]
    assert isinstance(out[1], list)
    assert out[1][0].tolist() == [2, 5]
    assert isinstance(out[1][1], tuple)
    assert out[1][1][0].dtype == torch.float64
    assert out[1][1][1] == ["s", "t"]


def test_namedtuples_keep_their_type():
    out = one([Point(1, 2.0), Point(3, 4.0)])
    assert type(out) is Point
    assert out.x.tolist() == [1, 3]
    assert out.y.tolist() == [2.0, 4.0]


def test_strings_stay_lists():
    assert one(["a", "bb", "c"]) == ["a", "bb", "c"]
    assert one([{"name": "x"}, {"name": "y"}]) == {"name": ["x", "y"]}


def test_to_numpy_gives_numpy_arrays():
    out = one([{"x": 1, "y": np.ones(2, np.float32), "t": torch.zeros(2)}] * 2, to="numpy")
    assert isinstance(out["x"], np.ndarray) and out["x"].dtype == np.int64
    assert isinstance(out["y"], np.ndarray) and out["y"].dtype == np.float32
    assert isinstance(out["t"], np.ndarray) and out["t"].shape == (2, 2)
    floats = one([0.5, 1.0], to="numpy")
    assert isinstance(floats, np.ndarray) and floats.dtype == np.float64


def test_several_batches():
    out = batches(list(range(5)), size=2)
    assert [b.tolist() for b in out] == [[0, 1], [2, 3], [4]]


def test_collate_keeps_len_and_random_access():
    pipe = dp.from_sequence(range(10)) | dp.map(lambda x: [x]) | dp.collate() | dp.shuffle()
    assert len(pipe) == 10
    assert sorted(int(t) for (t,) in pipe) == list(range(10))


def test_mismatched_shapes_name_field_positions_and_shapes():
    elements = [
        {"image": np.zeros((3, 4)), "label": 0},
        {"image": np.zeros((3, 5)), "label": 1},
        {"image": np.zeros((3, 4)), "label": 2},
    ]
    with pytest.raises(ValueError) as info:
        one(elements)
    message = str(info.value)
    assert message.startswith("collate: ")
    assert "['image']" in message
    assert "(3, 4)" in message and "(3, 5)" in message
    assert "[0, 2]" in message and "[1]" in message
    assert "pad" in message.lower()


def test_mismatched_tensor_shapes():
    with pytest.raises(ValueError, match=r"(?i)pad") as info:
        one([torch.zeros(2), torch.zeros(3)])
    assert "(2,)" in str(info.value) and "(3,)" in str(info.value)


def test_mismatched_shapes_in_a_nested_field():
    elements = [{"a": (np.zeros(2), 0)}, {"a": (np.zeros(3), 1)}]
    with pytest.raises(ValueError, match=r"\['a'\]\[0\]"):
        one(elements)


def test_mismatched_dict_keys():
    with pytest.raises(ValueError, match=r"^collate: ") as info:
        one([{"a": 1, "b": 2}, {"a": 1, "c": 2}])
    assert "keys" in str(info.value)
    assert "[0]" in str(info.value) and "[1]" in str(info.value)


def test_mismatched_types_and_lengths():
    with pytest.raises(ValueError, match=r"^collate: "):
        one([1, "a"])
    with pytest.raises(ValueError, match=r"^collate: "):
        one([(1, 2), (1, 2, 3)])


def test_collate_error_gets_a_note_with_the_batch_key():
    pipe = dp.from_sequence([[1], [2], [3], [4, 5]]) | dp.batch(2) | dp.collate()
    with pytest.raises(ValueError) as info:
        list(pipe)
    assert info.value.__notes__ == [
        "datapipes: raised in stage collate() on the element with key 1"
    ]


def test_custom_fn_gets_the_list():
    seen = []

    def fn(batch):
        seen.append(batch)
        return sum(batch)

    pipe = dp.from_sequence(range(5)) | dp.batch(2) | dp.collate(fn)
    assert list(pipe) == [1, 5, 4]
    assert seen == [[0, 1], [2, 3], [4]]
    assert all(type(b) is list for b in seen)


def test_custom_fn_by_keyword():
    pipe = dp.from_sequence(range(4)) | dp.batch(2) | dp.collate(fn=len)
    assert list(pipe) == [2, 2]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^collate: to"):
        dp.collate(to="jax")
    with pytest.raises(TypeError, match=r"^collate: fn"):
        dp.collate(3)


def test_collate_needs_a_batch():
    with pytest.raises(TypeError, match=r"^collate: "):
        list(dp.from_sequence([1, 2]) | dp.collate())


# -- bad data: clear errors (issue 10) ------------------------------------------------------------
def nested(depth, leaf=0):
    """``leaf`` inside ``depth`` lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize(
    ("elements", "where"),
    [
        ([None, None], "the elements themselves"),
        ([{"image": None, "label": 0}, {"image": None, "label": 1}], "['image']"),
        ([{"image": np.zeros(2)}, {"image": None}], "['image']"),  # some None: a miss too
        ([None, 1], "the elements themselves"),
        ([(torch.zeros(2), 0), (None, 1)], "[0]"),
    ],
    ids=["all", "field", "some", "first", "tuple-field"],
)
def test_none_values_name_the_field_and_suggest_a_missing_return(elements, where):
    with pytest.raises(ValueError, match=r"^collate: ") as info:
        one(elements)
    message = str(info.value)
    assert where in message and "None" in message, message
    assert "return" in message, message  # the likely cause: a map that forgot to return
    positions = [i for i, x in enumerate(elements)
                 if x is None or (isinstance(x, dict) and x["image"] is None)
                 or (isinstance(x, tuple) and x[0] is None)]
    assert f"batch positions {positions}" in message, message


def test_a_map_without_return_fails_in_collate_not_later():
    def forgot(x):
        {"image": np.zeros(2) + x}  # the bug: no return

    pipe = dp.from_sequence(range(4)) | dp.map(forgot) | dp.batch(2) | dp.collate()
    with pytest.raises(ValueError, match=r"None.*return") as info:
        list(pipe)
    assert "collate()" in info.value.__notes__[0]


@pytest.mark.parametrize("to", ["torch", "numpy"])
@pytest.mark.parametrize(
    ("values", "bad"),
    [([0, 2**63], 2**63), ([2**63, 2**63], 2**63), ([-(2**63) - 1, 0], -(2**63) - 1),
     ([1, 2**64], 2**64), ([True, 2**70], 2**70)],
)
def test_ints_beyond_int64_are_an_error_naming_field_and_value(values, bad, to):
    with pytest.raises(ValueError, match=r"^collate: ") as info:
        one([{"id": v} for v in values], to=to)
    message = str(info.value)
    assert "['id']" in message and str(bad) in message and "int64" in message, message


def test_ints_at_the_int64_bounds_and_big_floats_still_stack():
    out = one([2**63 - 1, -(2**63)])
    assert out.dtype == torch.int64 and out.tolist() == [2**63 - 1, -(2**63)]
    floats = one([1.5, 2**70])  # a float among them: a float batch, as in torch
    assert floats.dtype == torch.float64


def test_deeply_nested_elements_are_a_clear_error():
    with pytest.raises(ValueError, match=r"^collate: .*nested") as info:
        one([nested(500), nested(500, 1)])
    message = str(info.value)
    assert "500" in message and "[0][0][0]" in message, message
    out = one([nested(50), nested(50, 1)])  # not too deep
    for _ in range(50):
        out = out[0]
    assert out.tolist() == [0, 1]


def test_different_keys_name_the_missing_and_extra_keys():
    with pytest.raises(ValueError, match=r"^collate: ") as info:
        one([{"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 1, "c": 2}, {"a": 1}])
    message = str(info.value)
    assert "keys" in message
    assert "batch positions [2]" in message and "'b'" in message and "'c'" in message
    assert "batch positions [3]" in message
    assert "same keys" in message and "pad" not in message.lower(), message


def test_different_types_name_the_types_without_advising_padding():
    with pytest.raises(ValueError, match=r"^collate: ") as info:
        one([1, "a"])
    message = str(info.value)
    assert "int" in message and "str" in message and "pad" not in message.lower(), message
    with pytest.raises(ValueError, match=r"^collate: .*type") as info:
        one([{"a": 1}, [1]])
    assert "dict" in str(info.value) and "list" in str(info.value)
    with pytest.raises(ValueError, match=r"^collate: .*(?i:pad)"):
        one([(1, 2), (1, 2, 3)])  # lengths: padding is the advice
