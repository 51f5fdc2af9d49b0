"""shuffle by example: full permutations, buffer shuffles, epochs, seeds and names."""

from __future__ import annotations

import numpy as np
import pytest

import datapipes as dp
from datapipes import _seeds
from datapipes._graph import EpochContext
from datapipes._graph import stage_by_stage as run_naive
from datapipes.stages.shuffle import buffer_shuffle


def double(x):
    return 2 * x


def keep_even(x):
    return x % 2 == 0


def numbers():
    yield from range(20)


def test_shuffle_is_a_permutation():
    out = list(dp.from_sequence(range(50)) | dp.shuffle())
    assert sorted(out) == list(range(50))
    assert out != list(range(50))


def test_shuffle_is_the_stage_rng_permutation():
    data = list("abcdefgh")
    out = list(dp.from_sequence(data) | dp.shuffle())
    perm = _seeds.stage_rng(0, 0, 1).permutation(len(data))
    assert out == [data[j] for j in perm]


def test_shuffle_stage_key_is_its_position():
    out = list(dp.from_sequence(range(10)) | dp.map(double) | dp.shuffle())
    perm = _seeds.stage_rng(0, 0, 2).permutation(10)
    assert out == [2 * j for j in perm]


def test_shuffle_is_deterministic_per_seed_and_epoch():
    pipe = dp.from_sequence(range(30)) | dp.shuffle()
    assert list(pipe) == list(pipe)
    assert list(pipe.iter(epoch=3, seed=7)) == list(pipe.iter(epoch=3, seed=7))
    assert list(pipe.iter(epoch=0)) != list(pipe.iter(epoch=1))
    assert list(pipe.iter(seed=0)) != list(pipe.iter(seed=1))


def test_named_shuffle_is_keyed_by_name():
    pipe = dp.from_sequence(range(10)) | dp.map(double) | dp.shuffle(name="order")
    perm = _seeds.stage_rng(0, 0, _seeds.name_key("order")).permutation(10)
    assert list(pipe) == [2 * j for j in perm]
    shorter = dp.from_sequence(range(0, 20, 2)) | dp.shuffle(name="order")
    assert list(shorter) == list(pipe)


def test_two_shuffles_compose():
    pipe = dp.from_sequence(range(10)) | dp.shuffle() | dp.shuffle()
    first = _seeds.stage_rng(0, 0, 1).permutation(10)
    second = _seeds.stage_rng(0, 0, 2).permutation(10)
    assert list(pipe) == [int(first[j]) for j in second]


def test_shuffle_keeps_len():
    assert len(dp.from_sequence(range(9)) | dp.shuffle()) == 9
    assert len(dp.from_sequence(range(9)) | dp.shuffle(buffer=4)) == 9


def test_shuffle_of_empty_and_single():
    assert list(dp.from_sequence([]) | dp.shuffle()) == []
    assert list(dp.from_sequence(["x"]) | dp.shuffle()) == ["x"]
    assert list(dp.from_iterable([]) | dp.shuffle(buffer=3)) == []


# -- buffer shuffle ----------------------------------------------------------------------------


def test_buffer_shuffle_on_a_stream():
    pipe = dp.from_iterable(numbers) | dp.shuffle(buffer=5)
    out = list(pipe)
    assert sorted(out) == list(range(20))
    assert out != list(range(20))
    assert out == list(pipe)
    assert out != list(pipe.iter(epoch=1))


def test_buffer_shuffle_is_buffer_shuffle_with_the_stage_rng():
    out = list(dp.from_iterable(numbers) | dp.shuffle(buffer=5))
    assert out == list(buffer_shuffle(range(20), 5, _seeds.stage_rng(0, 0, 1)))


def test_buffer_shuffle_after_filter():
    pipe = dp.from_sequence(range(20)) | dp.filter(keep_even) | dp.shuffle(buffer=4)
    out = list(pipe)
    assert sorted(out) == list(range(0, 20, 2))
    assert out == list(buffer_shuffle(range(0, 20, 2), 4, _seeds.stage_rng(0, 0, 2)))


def test_buffer_shuffle_on_a_random_access_pipe_equals_naive():
    pipe = dp.from_sequence(range(30)) | dp.shuffle(buffer=7) | dp.map(double)
    assert list(pipe) == list(run_naive(pipe, EpochContext(0, 0)))
    assert sorted(pipe) == list(range(0, 60, 2))


def test_buffer_of_one_is_the_identity():
    assert list(dp.from_iterable(numbers) | dp.shuffle(buffer=1)) == list(range(20))


def test_buffer_larger_than_the_data_is_a_full_shuffle():
    out = list(dp.from_iterable(numbers) | dp.shuffle(buffer=1000))
    assert sorted(out) == list(range(20))
    assert out == [int(j) for j in _seeds.stage_rng(0, 0, 1).permutation(20)]


def test_buffer_shuffle_keeps_elements_near_their_place():
    # an element can only move earlier by at most ``buffer`` places
    out = list(buffer_shuffle(range(1000), 10, np.random.default_rng(0)))
    assert all(x - i <= 10 for i, x in enumerate(out))


def test_buffer_shuffle_helper():
    rng = np.random.default_rng(5)
    out = list(buffer_shuffle("abcdef", 3, rng))
    assert sorted(out) == list("abcdef")


@pytest.mark.parametrize("buffer", [0, -2])
def test_bad_buffer_value(buffer):
    with pytest.raises(ValueError, match=r"^shuffle: buffer"):
        dp.shuffle(buffer=buffer)


@pytest.mark.parametrize("buffer", [2.0, "3", True])
def test_bad_buffer_type(buffer):
    with pytest.raises(TypeError, match=r"^shuffle: buffer"):
        dp.shuffle(buffer=buffer)


@pytest.mark.parametrize("name", ["", 3, b"x"])
def test_bad_name(name):
    with pytest.raises((TypeError, ValueError), match=r"^shuffle: name"):
        dp.shuffle(name=name)


def test_shuffle_takes_keywords_only():
    with pytest.raises(TypeError):
        dp.shuffle(10)  # type: ignore[misc]
