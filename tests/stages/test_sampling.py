"""sample and split by example: what they select, epochs and seeds, weights, errors, and
that every executor and a resumed run agree with the reference."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import datapipes as dp
from datapipes.testing import assert_matches_reference, assert_resumable
from datapipes.testing.functions import add_noise, is_even

pytestmark = pytest.mark.timeout(60)

DATA = dp.from_sequence(range(100))


# -- sample ------------------------------------------------------------------------------------
def test_sample_without_replacement_draws_distinct_elements() -> None:
    out = list(DATA | dp.sample(30))
    assert len(out) == 30 == len(DATA | dp.sample(30))
    assert len(set(out)) == 30 and set(out) <= set(range(100))
    everything = list(DATA | dp.sample())  # n=None: every element once, in a random order
    assert sorted(everything) == list(range(100)) and everything != list(range(100))


def test_sample_differs_by_epoch_and_seed_and_repeats_for_the_same_pair() -> None:
    pipe = DATA | dp.sample(20, replace=True)
    assert list(pipe.iter(epoch=3, seed=5)) == list(pipe.iter(epoch=3, seed=5))
    assert list(pipe.iter(epoch=3, seed=5)) != list(pipe.iter(epoch=4, seed=5))
    assert list(pipe.iter(epoch=3, seed=5)) != list(pipe.iter(epoch=3, seed=6))
    # a named stage keeps its draws when stages are added before it (its key is its name)
    assert list(DATA | dp.sample(20, name="draws")) == list(
        DATA | dp.enumerate() | dp.map(lambda px: px[1]) | dp.sample(20, name="draws")
    )
    assert list(DATA | dp.sample(20)) != list(
        DATA | dp.enumerate() | dp.map(lambda px: px[1]) | dp.sample(20)
    )


def test_sample_with_replacement_can_draw_more_than_there_are() -> None:
    out = list(dp.from_sequence(range(5)) | dp.sample(40, replace=True))
    assert len(out) == 40 and set(out) <= set(range(5))
    assert max(collections.Counter(out).values()) > 1


def test_weights_set_the_odds() -> None:
    weights = [0.0] * 50 + [1.0] * 49 + [49.0]  # the last as likely as the 49 before it
    out = list(DATA | dp.sample(20_000, weights=weights, replace=True))
    counts = collections.Counter(out)
    assert not any(counts[i] for i in range(50))  # weight 0: never
    share = counts[99] / len(out)
    assert 0.45 < share < 0.55, share  # 20,000 draws: the spread is about 0.0035
    distinct = list(DATA | dp.sample(50, weights=weights))  # without replacement
    assert sorted(distinct) == list(range(50, 100))


def test_sample_refuses_what_it_cannot_draw_when_it_runs() -> None:
    with pytest.raises(ValueError, match="sample: cannot draw 101 distinct elements from 100"):
        list(DATA | dp.sample(101))
    with pytest.raises(ValueError, match="sample: 3 weights for 100 elements"):
        list(DATA | dp.sample(5, weights=[1, 2, 3]))
    with pytest.raises(ValueError, match="only 1 have a weight above 0"):
        list(dp.from_sequence(range(3)) | dp.sample(2, weights=[0, 1, 0]))
    assert list(dp.from_sequence([]) | dp.sample()) == []


# -- split -------------------------------------------------------------------------------------
def test_split_parts_are_disjoint_cover_everything_and_keep_source_order() -> None:
    sizes = [0.6, 0.3, 0.1]
    parts = [list(DATA | dp.split(sizes, i)) for i in range(3)]
    assert [len(p) for p in parts] == [60, 30, 10]
    assert sorted(x for p in parts for x in p) == list(range(100))
    assert all(p == sorted(p) for p in parts)
    assert parts[0] != list(range(60))  # random, by default


def test_split_never_changes_with_epoch_or_loader_seed_but_with_its_own() -> None:
    part = DATA | dp.split([0.5, 0.5], 0)
    first = list(part.iter(epoch=0, seed=0))
    assert all(list(part.iter(epoch=e, seed=s)) == first for e in (1, 7) for s in (1, 99))
    assert list(DATA | dp.split([0.5, 0.5], 0, seed=1)) != first


def test_split_by_counts_rounding_and_in_order() -> None:
    assert list(DATA | dp.split([90, 10], 1, shuffle=False)) == list(range(90, 100))
    tens = dp.from_sequence(range(10))
    # a third each of 10: 3 each, and the one left over goes to the first part
    assert [len(tens | dp.split([1 / 3] * 3, i)) for i in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError, match=r"split: the sizes \[5, 4\] add up to 9, but there "
                                         r"are 10 elements"):
        list(tens | dp.split([5, 4], 0))


def test_split_then_shuffle_reshuffles_the_part_each_epoch() -> None:
    train = DATA | dp.split([0.8, 0.2], 0) | dp.shuffle()
    e0, e1 = list(train.iter(epoch=0)), list(train.iter(epoch=1))
    assert sorted(e0) == sorted(e1) == list(DATA | dp.split([0.8, 0.2], 0)) and e0 != e1


# -- both ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [dp.sample(30), dp.split([0.5, 0.5], 1)], ids=repr)
def test_refused_once_random_access_has_ended(stage: dp.Pipe) -> None:
    with pytest.raises(TypeError, match="needs random access, which ended before it; put it "
                                        "right after the source"):
        DATA | dp.filter(is_even) | stage
    with pytest.raises(TypeError, match="needs random access"):
        dp.from_iterable([1, 2, 3]) | stage


PIPES = [
    DATA | dp.split([0.7, 0.3], 0) | dp.sample(50, replace=True) | dp.map(add_noise, rng=True)
    | dp.batch(8),
    DATA | dp.sample(weights=[i % 5 for i in range(100)], replace=True) | dp.filter(is_even)
    | dp.batch(4),
    DATA | dp.split([0.5, 0.5], 1) | dp.shuffle() | dp.enumerate(),
]


@pytest.mark.parametrize("pipe", PIPES, ids=range(len(PIPES)))
@pytest.mark.parametrize("workers", [0, 2])
def test_every_executor_and_a_resumed_run_match_the_reference(
    pipe: dp.Pipe, workers: int
) -> None:
    assert_matches_reference(pipe, workers=workers)
    assert_resumable(pipe, workers=workers)


def test_weights_may_be_an_array_and_compare_by_value() -> None:
    assert dp.sample(weights=np.ones(3)) == dp.sample(weights=[1, 1, 1])
    assert dp.sample(weights=np.ones(3)) != dp.sample(weights=[1, 1, 2])
    assert repr(dp.sample(weights=np.ones(3))) == "sample(weights=(1.0, 1.0, 1.0))"
    assert repr(dp.sample(weights=np.ones(1000))) == "sample(weights=<tuple of 1000>)"
