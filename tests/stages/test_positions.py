"""take, skip and enumerate by example."""

from __future__ import annotations

import pytest

import datapipes as dp
from datapipes import _seeds


def keep_even(x):
    return x % 2 == 0


def draw(x, rng):
    return int(rng.integers(1 << 30))


def numbers():
    yield from range(10)


# -- take ------------------------------------------------------------------------------------


def test_take():
    assert list(dp.from_sequence(range(10)) | dp.take(3)) == [0, 1, 2]
    assert list(dp.from_sequence(range(2)) | dp.take(3)) == [0, 1]
    assert list(dp.from_sequence(range(2)) | dp.take(0)) == []


def test_take_on_a_stream_stops_reading():
    read = []

    def gen():
        for i in range(100):
            read.append(i)
            yield i

    assert list(dp.from_iterable(gen) | dp.take(3)) == [0, 1, 2]
    assert len(read) <= 4


def test_take_after_filter_and_shuffle():
    assert list(dp.from_sequence(range(10)) | dp.filter(keep_even) | dp.take(2)) == [0, 2]
    order = list(dp.from_sequence(range(10)) | dp.shuffle())
    assert list(dp.from_sequence(range(10)) | dp.shuffle() | dp.take(4)) == order[:4]


def test_take_keeps_keys():
    pipe = dp.from_sequence(range(10)) | dp.skip(2) | dp.take(3) | dp.map(draw, rng=True)
    assert list(pipe) == [int(_seeds.element_rng(0, 0, 3, i).integers(1 << 30)) for i in (2, 3, 4)]


def test_take_len():
    assert len(dp.from_sequence(range(10)) | dp.take(3)) == 3
    assert len(dp.from_sequence(range(2)) | dp.take(3)) == 2


# -- skip ------------------------------------------------------------------------------------


def test_skip():
    assert list(dp.from_sequence(range(5)) | dp.skip(3)) == [3, 4]
    assert list(dp.from_sequence(range(5)) | dp.skip(0)) == [0, 1, 2, 3, 4]
    assert list(dp.from_sequence(range(5)) | dp.skip(9)) == []


def test_skip_on_a_stream_and_after_filter():
    assert list(dp.from_iterable(numbers) | dp.skip(8)) == [8, 9]
    assert list(dp.from_sequence(range(10)) | dp.filter(keep_even) | dp.skip(3)) == [6, 8]


def test_skip_then_take_is_a_window():
    assert list(dp.from_sequence(range(10)) | dp.skip(2) | dp.take(3)) == [2, 3, 4]
    assert list(dp.from_sequence(range(10)) | dp.take(3) | dp.skip(2)) == [2]


def test_skip_len():
    assert len(dp.from_sequence(range(10)) | dp.skip(3)) == 7
    assert len(dp.from_sequence(range(2)) | dp.skip(3)) == 0


@pytest.mark.parametrize("stage", [dp.take, dp.skip])
def test_bad_counts(stage):
    name = stage.__name__
    with pytest.raises(ValueError, match=rf"^{name}: n"):
        stage(-1)
    for bad in ["3", 2.0, True, None]:
        with pytest.raises(TypeError, match=rf"^{name}: n"):
            stage(bad)


# -- enumerate -------------------------------------------------------------------------------


def test_enumerate():
    assert list(dp.from_sequence("abc") | dp.enumerate()) == [(0, "a"), (1, "b"), (2, "c")]


def test_enumerate_counts_positions_after_shuffle():
    pipe = dp.from_sequence(list("abcdef")) | dp.shuffle() | dp.enumerate()
    out = list(pipe)
    assert [p for p, _ in out] == list(range(6))
    assert [x for _, x in out] == list(dp.from_sequence(list("abcdef")) | dp.shuffle())


def test_enumerate_before_shuffle_keeps_source_positions():
    out = list(dp.from_sequence(list("abcdef")) | dp.enumerate() | dp.shuffle())
    assert sorted(out) == list(enumerate("abcdef"))


def test_enumerate_after_filter_and_on_streams():
    pipe = dp.from_sequence(range(10)) | dp.filter(keep_even) | dp.enumerate()
    assert list(pipe) == [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)]
    assert list(dp.from_iterable("xy") | dp.enumerate()) == [(0, "x"), (1, "y")]


def test_enumerate_restarts_each_epoch():
    pipe = dp.from_sequence("ab") | dp.enumerate()
    assert list(pipe.iter(epoch=0)) == list(pipe.iter(epoch=1)) == [(0, "a"), (1, "b")]


def test_enumerate_twice_and_with_take_skip():
    pipe = dp.from_sequence("abcd") | dp.enumerate() | dp.skip(1) | dp.enumerate() | dp.take(2)
    assert list(pipe) == [(0, (1, "b")), (1, (2, "c"))]


def test_enumerate_keeps_keys_and_len():
    pipe = (
        dp.from_sequence(range(4))
        | dp.shuffle()
        | dp.enumerate()
        | dp.map(lambda t, rng: (t[1], draw(t, rng)), rng=True)
    )
    for i, value in pipe:
        assert value == int(_seeds.element_rng(0, 0, 3, i).integers(1 << 30))
    assert len(pipe) == 4
