"""map, flat_map and filter by example, and how user errors are reported (PEP 678 notes)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import datapipes as dp
from datapipes import _seeds
from datapipes._graph import EpochContext
from datapipes._graph import stage_by_stage as run_naive

LETTERS = [10, 11, 12, 13, 14, 15]  # values differ from their indices, so keys are visible


def double(x):
    return 2 * x


def add(x, y):
    return x + y


def twice(x):
    return [x, x]


def keep_even(x):
    return x % 2 == 0


def draw(x, rng):
    return int(rng.integers(1 << 30))


def fail_on_13(x):
    if x == 13:
        raise ValueError(f"bad element {x}")
    return x


def fail_on_13_rng(x, rng):
    return fail_on_13(x)


def fail_on_13_list(x):
    return [fail_on_13(x)]


def fail_on_batch_with_13(b):
    if 13 in b:
        raise ValueError("bad batch")
    return b


class Adder:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        if x == 13:
            raise ValueError("bad element")
        return x + self.n


class FailingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == 3:
            raise ValueError("cannot read element 3")
        return LETTERS[i]


def naive(pipe, seed=0, epoch=0):
    return list(run_naive(pipe, EpochContext(seed, epoch)))


RUNNERS = {"reference": lambda pipe: list(pipe), "naive": naive}


def raised(pipe, runner, exc_type=ValueError):
    """Run ``pipe`` expecting ``exc_type``; return the exception."""
    with pytest.raises(exc_type) as info:
        RUNNERS[runner](pipe)
    return info.value


def note(exc):
    notes = getattr(exc, "__notes__", [])
    assert len(notes) == 1, notes
    return notes[0]


# -- map -------------------------------------------------------------------------------------


def test_map():
    assert list(dp.from_sequence(range(4)) | dp.map(double)) == [0, 2, 4, 6]


def test_maps_chain_in_order():
    pipe = dp.from_sequence(range(3)) | dp.map(double) | dp.map(functools.partial(add, 1))
    assert list(pipe) == [1, 3, 5]


def test_map_with_callable_object_and_builtin():
    assert list(dp.from_sequence([1, 2]) | dp.map(Adder(5))) == [6, 7]
    assert list(dp.from_sequence(["1", "22"]) | dp.map(int)) == [1, 22]


def test_map_keeps_len():
    assert len(dp.from_sequence(range(7)) | dp.map(double)) == 7


def test_map_rng_draws_are_keyed_by_seed_epoch_stage_and_element():
    pipe = dp.from_sequence(range(4)) | dp.map(draw, rng=True)
    expected = [int(_seeds.element_rng(0, 0, 1, i).integers(1 << 30)) for i in range(4)]
    assert list(pipe) == expected
    assert list(pipe) == list(pipe)
    assert list(pipe.iter(epoch=1)) != expected
    assert list(pipe.iter(seed=1)) != expected


def test_map_rng_gets_a_numpy_generator():
    seen = []

    def check(x, rng):
        seen.append(type(rng))
        return x

    list(dp.from_sequence(range(2)) | dp.map(check, rng=True))
    assert seen == [np.random.Generator, np.random.Generator]


def test_map_rng_follows_the_element_through_a_shuffle():
    plain = list(dp.from_sequence(range(8)) | dp.map(draw, rng=True))
    pipe = (
        dp.from_sequence(range(8))
        | dp.shuffle()
        | dp.map(lambda x: (x, x))
        | dp.map(lambda t, rng: (t[0], draw(t[1], rng)), rng=True)
    )
    # the stage key is the map's position (3); the element key is the source index
    for i, value in pipe:
        assert value == int(_seeds.element_rng(0, 0, 3, i).integers(1 << 30))
    assert len(plain) == 8


def test_named_map_is_keyed_by_name():
    pipe = dp.from_sequence(range(3)) | dp.map(draw, rng=True, name="augment")
    key = _seeds.name_key("augment")
    assert list(pipe) == [int(_seeds.element_rng(0, 0, key, i).integers(1 << 30)) for i in range(3)]
    # inserting a stage before a named map does not change its draws
    longer = (
        dp.from_sequence(range(3))
        | dp.map(double)
        | dp.map(lambda x, rng: draw(x // 2, rng), rng=True, name="augment")
    )
    assert list(longer) == list(pipe)


def test_map_rng_after_flat_map_uses_sub_keys():
    pipe = dp.from_sequence(range(2)) | dp.flat_map(twice) | dp.map(draw, rng=True)
    keys = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(pipe) == [int(_seeds.element_rng(0, 0, 2, k).integers(1 << 30)) for k in keys]


def test_map_rng_after_batch_uses_batch_number():
    pipe = dp.from_sequence(range(5)) | dp.batch(2) | dp.map(draw, rng=True)
    assert list(pipe) == [int(_seeds.element_rng(0, 0, 2, b).integers(1 << 30)) for b in range(3)]


# -- flat_map ------------------------------------------------------------------------------


def test_flat_map():
    assert list(dp.from_sequence([1, 2, 3]) | dp.flat_map(lambda n: [n] * n)) == [
        1,
        2,
        2,
        3,
        3,
        3,
    ]


def test_flat_map_may_yield_nothing_and_take_generators():
    def up_to(n):
        yield from range(n)

    assert list(dp.from_sequence([0, 2, 0, 3]) | dp.flat_map(up_to)) == [0, 1, 0, 1, 2]


def test_flat_map_on_a_stream():
    assert list(dp.from_iterable([[1, 2], [3]]) | dp.flat_map(list)) == [1, 2, 3]


# -- filter ----------------------------------------------------------------------------------


def test_filter():
    assert list(dp.from_sequence(range(10)) | dp.filter(keep_even)) == [0, 2, 4, 6, 8]


def test_filter_uses_truthiness():
    assert list(dp.from_sequence([0, 1, "", "a", None, [0]]) | dp.filter(bool)) == [1, "a", [0]]


def test_filter_keeps_keys():
    pipe = dp.from_sequence(range(6)) | dp.filter(keep_even) | dp.map(draw, rng=True)
    assert list(pipe) == [int(_seeds.element_rng(0, 0, 2, i).integers(1 << 30)) for i in (0, 2, 4)]


def test_filter_then_map_then_batch():
    pipe = dp.from_sequence(range(10)) | dp.filter(keep_even) | dp.map(double) | dp.batch(2)
    assert list(pipe) == [[0, 4], [8, 12], [16]]


# -- user errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_map_error_propagates_with_note(runner):
    exc = raised(dp.from_sequence(LETTERS) | dp.map(fail_on_13), runner)
    assert str(exc) == "bad element 13"
    assert "map(fail_on_13)" in note(exc)
    assert "key 3" in note(exc)


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_note_key_is_the_source_index_after_a_shuffle(runner):
    pipe = dp.from_sequence(LETTERS) | dp.shuffle() | dp.map(fail_on_13)
    order = list(dp.from_sequence(LETTERS) | dp.shuffle())
    assert order.index(13) != 3  # so that the key and the position differ
    exc = raised(pipe, runner)
    assert note(exc) == "datapipes: raised in stage map(fail_on_13) on the element with key 3"


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_note_names_the_stage_that_raised(runner):
    pipe = (
        dp.from_sequence(LETTERS)
        | dp.map(double)
        | dp.map(lambda x: x // 2)
        | dp.map(fail_on_13)
        | dp.map(double)
    )
    exc = raised(pipe, runner)
    assert note(exc) == "datapipes: raised in stage map(fail_on_13) on the element with key 3"


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_note_for_a_builtin_function(runner):
    exc = raised(dp.from_sequence(["1", "2", "x"]) | dp.map(int), runner)
    assert "key 2" in note(exc)
    assert "stage map(" in note(exc)  # not the source: the source read "x" without trouble


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_note_for_a_partial(runner):
    exc = raised(dp.from_sequence(LETTERS) | dp.map(functools.partial(fail_on_13)), runner)
    assert "key 3" in note(exc)
    assert "stage map(" in note(exc)


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_note_for_a_callable_object(runner):
    exc = raised(dp.from_sequence(LETTERS) | dp.map(Adder(1)), runner)
    assert "key 3" in note(exc)
    assert "stage map(" in note(exc)


@pytest.mark.parametrize("runner", RUNNERS)
def test_filter_error_note(runner):
    exc = raised(dp.from_sequence(LETTERS) | dp.filter(fail_on_13), runner)
    assert note(exc) == "datapipes: raised in stage filter(fail_on_13) on the element with key 3"


@pytest.mark.parametrize("runner", RUNNERS)
def test_flat_map_error_note(runner):
    pipe = dp.from_sequence(LETTERS) | dp.flat_map(fail_on_13_list)
    exc = raised(pipe, runner)
    assert note(exc) == (
        "datapipes: raised in stage flat_map(fail_on_13_list) on the element with key 3"
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_after_flat_map_names_the_sub_key(runner):
    pipe = dp.from_sequence(LETTERS) | dp.flat_map(twice) | dp.map(fail_on_13)
    exc = raised(pipe, runner)
    assert note(exc) == "datapipes: raised in stage map(fail_on_13) on the element with key (3, 0)"


@pytest.mark.parametrize("runner", RUNNERS)
def test_rng_map_error_note(runner):
    exc = raised(dp.from_sequence(LETTERS) | dp.map(fail_on_13_rng, rng=True), runner)
    assert note(exc) == (
        "datapipes: raised in stage map(fail_on_13_rng, rng=True) on the element with key 3"
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_dataset_error_note_names_from_sequence(runner):
    exc = raised(dp.from_sequence(FailingDataset()), runner)
    assert str(exc) == "cannot read element 3"
    assert "from_sequence(" in note(exc)
    assert note(exc).endswith("on the element with key 3")


@pytest.mark.parametrize("runner", RUNNERS)
def test_dataset_error_note_with_maps_and_filters_after(runner):
    pipe = dp.from_sequence(FailingDataset()) | dp.map(double) | dp.filter(bool)
    exc = raised(pipe, runner)
    assert "from_sequence(" in note(exc)
    assert note(exc).endswith("on the element with key 3")


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_after_batch_names_the_batch_number(runner):
    pipe = dp.from_sequence(LETTERS) | dp.batch(2) | dp.map(fail_on_batch_with_13)
    exc = raised(pipe, runner)
    assert note(exc) == (
        "datapipes: raised in stage map(fail_on_batch_with_13) on the element with key 1"
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_after_filter_and_batch_names_the_batch_number(runner):
    pipe = (
        dp.from_sequence(LETTERS)
        | dp.filter(lambda x: x != 10)
        | dp.batch(2)
        | dp.map(fail_on_batch_with_13)
    )
    exc = raised(pipe, runner)
    assert note(exc).endswith("on the element with key 1")  # [11, 12], [13, 14]


@pytest.mark.parametrize("runner", RUNNERS)
def test_error_in_a_stream_pipe(runner):
    exc = raised(dp.from_iterable(LETTERS) | dp.map(fail_on_13), runner)
    assert note(exc) == "datapipes: raised in stage map(fail_on_13) on the element with key 3"


def test_error_keeps_its_type_and_traceback():
    class Custom(Exception):
        pass

    def boom(x):
        raise Custom(x)

    with pytest.raises(Custom) as info:
        list(dp.from_sequence([1]) | dp.map(boom))
    assert info.value.args == (1,)
    assert any(entry.name == "boom" for entry in info.traceback)


def test_error_note_is_added_once_per_exception():
    pipe = dp.from_sequence(LETTERS) | dp.map(fail_on_13) | dp.batch(2) | dp.map(double)
    with pytest.raises(ValueError) as info:
        list(pipe)
    assert len(info.value.__notes__) == 1


def test_elements_before_an_error_are_yielded():
    pipe = dp.from_sequence(LETTERS) | dp.map(fail_on_13)
    it = iter(pipe)
    assert [next(it), next(it), next(it)] == [10, 11, 12]
    with pytest.raises(ValueError):
        next(it)
