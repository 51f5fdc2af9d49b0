"""collate(pad=...): ragged arrays padded into one batch, against plain models (torch's
pad_sequence for 1-D, a NumPy model for N-D), under every executor, resumed, and written
once into the output buffer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence

import datapipes as dp
from datapipes.executors import transport
from datapipes.executors.transport import collating_into
from datapipes.stages.collate import pad_batch
from datapipes.testing import assert_matches_reference, assert_resumable

# -- models --------------------------------------------------------------------------------


def model(arrays, value, multiple=None):
    """The padded batch and its mask, by hand: the longest size per axis, rounded up to
    ``multiple`` on the axes whose sizes differ."""
    shapes = [a.shape for a in arrays]
    full = []
    for axis in range(arrays[0].ndim):
        sizes = [s[axis] for s in shapes]
        length = max(sizes)
        if multiple and min(sizes) != length:
            length = -(-length // multiple) * multiple
        full.append(length)
    out = np.full((len(arrays), *full), value, dtype=np.result_type(*arrays))
    where = np.zeros((len(arrays), *full), dtype=bool)
    for i, a in enumerate(arrays):
        out[(i, *(slice(n) for n in a.shape))] = a
        where[(i, *(slice(n) for n in a.shape))] = True
    return out, where


def one(elements, **kwargs):
    (out,) = dp.from_sequence(elements) | dp.batch(len(elements)) | dp.collate(**kwargs)
    return out


DTYPES = [np.int64, np.int32, np.uint8, np.float32, np.float64]


@st.composite
def ragged_1d(draw, dtype=None):
    dtype = dtype or draw(st.sampled_from(DTYPES))
    lengths = draw(st.lists(st.integers(0, 12), min_size=1, max_size=6))
    return [np.arange(n).astype(dtype) + i for i, n in enumerate(lengths)]


@st.composite
def ragged_nd(draw):
    ndim = draw(st.integers(0, 3))
    dtype = draw(st.sampled_from(DTYPES))
    shapes = draw(st.lists(st.tuples(*[st.integers(0, 4)] * ndim), min_size=1, max_size=5))
    return [np.arange(int(np.prod(s))).reshape(s).astype(dtype) + 1 for s in shapes]


pad_values = st.integers(0, 100)  # a value every dtype drawn holds
multiples = st.none() | st.integers(1, 8)


# -- against the models --------------------------------------------------------------------


@given(ragged_1d(), pad_values)
def test_1d_equals_pad_sequence(arrays, value):
    padded, where = one(arrays, pad=value, mask=True)
    expected = pad_sequence([torch.from_numpy(a) for a in arrays], batch_first=True,
                            padding_value=value)
    assert padded.dtype == expected.dtype == torch.from_numpy(arrays[0]).dtype
    assert torch.equal(padded, expected)
    lengths = torch.tensor([len(a) for a in arrays])
    assert where.dtype == torch.bool
    assert torch.equal(where, torch.arange(padded.shape[1])[None, :] < lengths[:, None])


@given(ragged_1d(), pad_values)
def test_1d_tensors_equal_pad_sequence(arrays, value):
    tensors = [torch.from_numpy(a) for a in arrays]
    padded = one(tensors, pad=value)
    assert torch.equal(padded, pad_sequence(tensors, batch_first=True, padding_value=value))


@given(ragged_nd(), pad_values, multiples, st.sampled_from(["torch", "numpy"]))
def test_nd_equals_the_numpy_model(arrays, value, multiple, to):
    padded, where = one(arrays, pad=value, mask=True, pad_to_multiple_of=multiple, to=to)
    expected, expected_mask = model(arrays, value, multiple)
    if to == "torch":
        padded, where = padded.numpy(), where.numpy()
    assert isinstance(padded, np.ndarray) and isinstance(where, np.ndarray)
    assert padded.dtype == arrays[0].dtype and where.dtype == np.bool_
    np.testing.assert_array_equal(padded, expected)
    np.testing.assert_array_equal(where, expected_mask)


@given(ragged_1d(np.int64), st.integers(1, 8))
def test_pad_to_multiple_of_rounds_the_ragged_length_up(arrays, multiple):
    padded = one(arrays, pad=-1, pad_to_multiple_of=multiple, to="numpy")
    lengths = {len(a) for a in arrays}
    longest = max(lengths)
    assert padded.shape == (len(arrays), longest if len(lengths) == 1 else
                            -(-longest // multiple) * multiple)
    assert padded.shape[1] % multiple == 0 or len(lengths) == 1
    np.testing.assert_array_equal(padded, model(arrays, -1, multiple)[0])


@given(st.lists(st.lists(st.integers(-(2**40), 2**40), max_size=8), min_size=1, max_size=5),
       pad_values)
def test_lists_of_numbers_pad_like_arrays(lists, value):
    padded = one(lists, pad=value)
    dtype = torch.int64 if any(lists) else torch.float64  # no number: as np.asarray([])
    assert padded.dtype == dtype
    expected = pad_sequence([torch.tensor(x, dtype=dtype) for x in lists],
                            batch_first=True, padding_value=value)
    assert torch.equal(padded, expected)


@given(st.lists(st.tuples(ragged_1d(np.int64), st.integers(0, 9)), min_size=1, max_size=5))
def test_per_field_pad_values_and_masks(rows):
    elements = [{"tokens": t[0], "labels": t[0] * 2, "label": y, "name": str(y)}
                for t, y in rows if t]
    if not elements:
        return
    out = one(elements, pad={"tokens": 0, "labels": -100}, mask=True)
    assert list(out) == ["tokens", "labels", "label", "name", "tokens_mask", "labels_mask"]
    tokens, where = model([e["tokens"] for e in elements], 0)
    labels, _ = model([e["labels"] for e in elements], -100)
    np.testing.assert_array_equal(out["tokens"].numpy(), tokens)
    np.testing.assert_array_equal(out["labels"].numpy(), labels)
    np.testing.assert_array_equal(out["tokens_mask"].numpy(), where)
    np.testing.assert_array_equal(out["labels_mask"].numpy(), where)
    assert out["label"].tolist() == [e["label"] for e in elements]  # as collate stacks it
    assert out["name"] == [e["name"] for e in elements]


# -- by example ----------------------------------------------------------------------------


def test_bare_arrays_with_mask_are_a_pair():
    out = one([np.array([1, 2, 3]), np.array([4])], pad=0, mask=True)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert out[1].tolist() == [[True, True, True], [True, False, False]]


def test_a_number_pads_every_array_field_and_leaves_the_others():
    elements = [
        {"ids": [1, 2, 3], "x": np.ones((2, 3), np.float32), "y": 1, "s": "a",
         "scalar": np.float32(1), "words": ["a", "b"]},
        {"ids": [4], "x": np.ones((3, 1), np.float32), "y": 2, "s": "b",
         "scalar": np.float32(2), "words": ["c", "d"]},
    ]
    out = one(elements, pad=0, mask=True)
    assert list(out) == ["ids", "x", "y", "s", "scalar", "words", "ids_mask", "x_mask"]
    assert out["ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert out["x"].shape == (2, 3, 3) and out["x"].dtype == torch.float32
    assert out["x_mask"].sum().item() == 6 + 3
    assert out["y"].tolist() == [1, 2] and out["s"] == ["a", "b"]
    assert out["scalar"].dtype == torch.float32
    assert out["words"] == [["a", "c"], ["b", "d"]]  # lists of strings collate as usual


def test_fields_that_happen_to_agree_are_stacked_and_masked_all_true():
    out = one([{"t": np.arange(3)}, {"t": np.arange(3) + 1}], pad=0, mask=True,
              pad_to_multiple_of=8)
    assert out["t"].shape == (2, 3)  # no axis differs: nothing to pad, nothing to round
    assert out["t_mask"].all()


def test_padding_keeps_dtype_and_mixed_dtypes_promote_as_collate_does():
    out = one([np.zeros(2, np.int16), np.zeros(3, np.int16)], pad=-7, to="numpy")
    assert out.dtype == np.int16 and out.tolist() == [[0, 0, -7], [0, 0, 0]]
    mixed = one([np.zeros(2, np.int32), np.zeros(3, np.float32)], pad=1, to="numpy")
    assert mixed.dtype == np.result_type(np.int32, np.float32)
    assert one([[1, 2], [0.5]], pad=0).dtype == torch.float64


def test_empty_lists_and_empty_arrays():
    assert one([[], [1, 2]], pad=0).tolist() == [[0, 0], [1, 2]]
    assert one([[], [1, 2]], pad=0).dtype == torch.int64
    assert one([[], []], pad=0).shape == (2, 0)
    assert one([[], []], pad=0).dtype == torch.float64  # no number to tell: as np.asarray([])
    out = one([np.zeros(0, np.uint8), np.zeros(0, np.uint8)], pad=0, mask=True, to="numpy")
    assert out[0].shape == (2, 0) and out[0].dtype == np.uint8 and out[1].shape == (2, 0)


def test_tensors_numpy_cannot_hold_are_padded_by_torch():
    tensors = [torch.ones(2, dtype=torch.bfloat16), torch.ones(3, dtype=torch.bfloat16)]
    padded, where = one(tensors, pad=0, mask=True)
    assert padded.dtype == torch.bfloat16
    assert torch.equal(padded, pad_sequence(tensors, batch_first=True))
    assert where.tolist() == [[True, True, False], [True, True, True]]


def test_tensors_requiring_grad_keep_their_graph():
    a, b = torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)
    padded = pad_batch([a, b], 0.0)
    assert padded.requires_grad
    padded.sum().backward()
    assert a.grad.tolist() == [1.0, 1.0] and b.grad.tolist() == [1.0]


def test_dict_subclasses_keep_their_type():
    class Record(dict):
        pass

    out = one([Record(t=[1]), Record(t=[2, 3])], pad=0)
    assert type(out) is Record and out["t"].tolist() == [[1, 0], [2, 3]]


# -- errors at run time --------------------------------------------------------------------


def test_a_ragged_field_not_named_is_the_usual_shape_error():
    elements = [{"tokens": np.zeros(2), "image": np.zeros((3, 4))},
                {"tokens": np.zeros(3), "image": np.zeros((3, 5))}]
    with pytest.raises(ValueError, match=r"^collate: cannot stack \['image'\]: .*shape") as info:
        one(elements, pad={"tokens": 0})
    assert "(3, 4)" in str(info.value) and "(3, 5)" in str(info.value)


def test_padding_a_string_field_names_the_field_and_the_types():
    with pytest.raises(ValueError, match=r"^collate: cannot pad \['name'\]") as info:
        one([{"name": "a"}, {"name": "bb"}], pad={"name": 0})
    assert "str at batch positions [0, 1]" in str(info.value)
    with pytest.raises(ValueError, match=r"^collate: cannot pad \['n'\]") as info:
        one([{"n": np.array(["a"])}, {"n": np.array([1])}], pad={"n": 0})
    assert "<U1" in str(info.value) and "[0]" in str(info.value)
    with pytest.raises(ValueError, match=r"^collate: cannot pad the elements themselves"):
        one([1, 2], pad=0)


def test_different_numbers_of_dimensions_name_the_field_and_the_shapes():
    with pytest.raises(ValueError, match=r"^collate: cannot pad \['x'\]: .*dimensions") as info:
        one([{"x": np.zeros(3)}, {"x": np.zeros((3, 2))}, {"x": np.zeros(1)}], pad=0)
    message = str(info.value)
    assert "(3,) at batch positions [0]" in message and "(1,) at batch positions [2]" in message
    assert "(3, 2) at batch positions [1]" in message


def test_a_pad_value_the_dtype_cannot_hold():
    with pytest.raises(ValueError, match=r"^collate: cannot pad \['labels'\] with -100: .*uint8"):
        one([{"labels": np.zeros(1, np.uint8)}, {"labels": np.zeros(2, np.uint8)}],
            pad={"labels": -100})
    with pytest.raises(ValueError, match=r"with 0\.5: .*int64"):
        one([[1], [1, 2]], pad=0.5)
    with pytest.raises(ValueError, match=r"with nan"):
        one([[1], [1, 2]], pad=float("nan"))
    assert torch.isnan(one([[1.0], [1.0, 2.0]], pad=float("nan"))[0, 1])


def test_fields_named_but_missing_or_elements_not_dicts():
    with pytest.raises(ValueError, match=r"^collate: pad names fields the elements lack: "
                                         r"\['labels'\]"):
        one([{"tokens": [1]}, {"tokens": [1, 2]}], pad={"tokens": 0, "labels": -100})
    with pytest.raises(ValueError, match=r"^collate: pad=\{'tokens': 0\} pads fields of dict"):
        one([[1], [1, 2]], pad={"tokens": 0})


def test_a_mask_field_that_exists_already():
    with pytest.raises(ValueError, match=r"^collate: mask=True adds the fields \['t_mask'\]"):
        one([{"t": [1], "t_mask": [1]}, {"t": [1, 2], "t_mask": [1, 1]}], pad=0, mask=True)


def test_errors_get_the_note_with_the_batch_key():
    pipe = dp.from_sequence([[1], [2], ["a"], [4]]) | dp.map(lambda x: x[0]) | dp.batch(2)
    with pytest.raises(ValueError) as info:
        list(pipe | dp.collate(pad=0))
    assert info.value.__notes__ == [
        "datapipes: raised in stage collate(pad=0) on the element with key 0"
    ]


# -- the stage: arguments, repr, value semantics -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"pad": "0"}, TypeError, r"^collate: pad must be a number"),
        ({"pad": True}, TypeError, r"^collate: pad must be a number"),
        ({"pad": [0]}, TypeError, r"^collate: pad must be a number"),
        ({"pad": {"t": "x"}}, TypeError, r"^collate: pad must be .*'t': 'x'"),
        ({"pad": {1: 0}}, TypeError, r"^collate: pad must be .*the field 1"),
        ({"pad": {}}, ValueError, r"^collate: pad must name at least one field"),
        ({"pad": 0, "mask": 1}, TypeError, r"^collate: mask must be a bool"),
        ({"pad": 0, "pad_to_multiple_of": 0}, ValueError, r"^collate: pad_to_multiple_of"),
        ({"pad": 0, "pad_to_multiple_of": 2.0}, TypeError, r"^collate: pad_to_multiple_of"),
        ({"pad": 0, "pad_to_multiple_of": True}, TypeError, r"^collate: pad_to_multiple_of"),
        ({"mask": True}, ValueError, r"^collate: mask and pad_to_multiple_of need pad="),
        ({"pad_to_multiple_of": 8}, ValueError, r"^collate: mask and pad_to_multiple_of need"),
        ({"fn": len, "pad": 0}, ValueError, r"^collate: pad pads what collate builds without"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        dp.collate(**kwargs)


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda: dp.collate(pad=0), "collate(pad=0)"),
        (lambda: dp.collate(pad=np.int64(-1)), "collate(pad=-1)"),
        (lambda: dp.collate(pad={"tokens": 0, "labels": -100}, mask=True),
         "collate(pad={'tokens': 0, 'labels': -100}, mask=True)"),
        (lambda: dp.collate(to="numpy", pad=0.5, pad_to_multiple_of=8),
         "collate(to='numpy', pad=0.5, pad_to_multiple_of=8)"),
        (lambda: dp.collate(pad=0, mask=False, pad_to_multiple_of=None), "collate(pad=0)"),
        (lambda: dp.collate(), "collate()"),
    ],
)
def test_repr_evaluates_pickles_and_compares_by_value(make, text):
    pipe = make()
    assert repr(pipe) == text
    assert eval(text, {"dp": dp, "collate": dp.collate}) == pipe
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy == pipe and hash(copy) == hash(pipe) and hash(make()) == hash(pipe)


def test_stages_differ_by_their_padding():
    assert dp.collate(pad={"a": 0, "b": 1}) == dp.collate(pad={"b": 1, "a": 0})
    assert dp.collate(pad=0) != dp.collate(pad=1) != dp.collate()
    assert dp.collate(pad={"a": 0}) != dp.collate(pad={"a": 1})
    assert dp.collate(pad=0, mask=True) != dp.collate(pad=0)
    assert dp.collate(pad=0, pad_to_multiple_of=8) != dp.collate(pad=0)


def test_the_pad_dict_given_is_copied():
    pads = {"t": 0}
    pipe = dp.from_sequence([{"t": [1]}, {"t": [1, 2]}]) | dp.batch(2) | dp.collate(pad=pads)
    pads["t"] = 9
    assert next(iter(pipe))["t"].tolist() == [[1, 0], [1, 2]]


def test_padding_keeps_len_and_random_access():
    pipe = (dp.from_sequence(range(8)) | dp.map(list_upto) | dp.batch(3) | dp.collate(pad=0))
    assert len(pipe) == 3
    assert [b.shape for b in pipe] == [(3, 2), (3, 5), (2, 7)]


# -- the output buffer: written once, in shared memory in a worker -------------------------


@pytest.mark.parametrize("tensors_as_arrays", [False, True])
@pytest.mark.parametrize("to", ["torch", "numpy"])
def test_in_a_worker_the_padded_batch_is_written_into_shared_memory(to, tensors_as_arrays):
    arena = transport.Arena()
    batch = [{"tokens": np.arange(n, dtype=np.int32), "labels": torch.arange(n), "y": n}
             for n in (5000, 3000, 7000)]
    try:
        with collating_into(arena, tensors_as_arrays=tensors_as_arrays):
            out = pad_batch(batch, 0, mask=True, multiple=8, to=to)
        for field in ("tokens", "labels", "tokens_mask", "labels_mask"):
            value = out[field]
            array = value.array if isinstance(value, transport.TensorOf) else (
                value.numpy() if isinstance(value, torch.Tensor) else value)
            assert arena.locate(array) is not None, field  # no copy of a padded copy
            assert array.shape == (3, 7000)
        assert dp.output_array(3, "int16").dtype == np.int16  # outside: ordinary memory
    finally:
        arena.release()


# -- under every executor, and resumed -----------------------------------------------------


def list_upto(i):
    return list(range(1, i + 1))


TOKENS = [np.arange(1, 1 + (7 * i) % 13, dtype=np.int64) * (i + 1) for i in range(30)]
RECORDS = [{"tokens": t, "labels": -t, "id": i} for i, t in enumerate(TOKENS)]


def padded_pipe():
    return (dp.from_sequence(TOKENS) | dp.shuffle() | dp.batch(4)
            | dp.collate(pad=0, mask=True))


def fields_pipe():
    return (dp.from_sequence(RECORDS) | dp.shuffle() | dp.batch(4)
            | dp.collate(pad={"tokens": 0, "labels": -100}, mask=True, pad_to_multiple_of=8))


PIPES = {"bare": padded_pipe, "fields": fields_pipe}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(PIPES))
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_matches_the_reference_under_every_executor(name, backend):
    assert_matches_reference(PIPES[name](), workers=2, backend=backend)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(PIPES))
def test_resumable(name):
    assert_resumable(PIPES[name](), at=[0, 2], workers=2, backend="thread")


@pytest.mark.timeout(120)
def test_through_process_workers_the_batch_arrives_in_shared_memory():
    big = [np.arange(2000 + 100 * (i % 3), dtype=np.int64) for i in range(16)]
    pipe = dp.from_sequence(big) | dp.batch(4) | dp.collate(pad=0, mask=True)
    with pipe.compile(workers=2) as loader:
        got = list(loader)
        assert loader.stats().shared_bytes >= 4 * 4 * 2200 * 8  # the padded batches
    assert [tuple(p.shape) for p, _ in got] == [(4, 2200)] * 4
    assert all(torch.equal(p[0, :2000], torch.arange(2000)) for p, _ in got)
