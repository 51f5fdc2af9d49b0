"""sample and split by example: what they select, epochs and seeds, weights (by position,
by source index, from a function of the element, class_weights), errors, and that every
executor and a resumed run agree with the reference."""

from __future__ import annotations

import collections
import os
import pickle
from typing import Any

import numpy as np
import pytest
import torch

import datapipes as dp
from datapipes._seeds import stage_rng
from datapipes.stages.sampling import _DRAW_CHUNK, _TABLE_FROM, by_source_index, class_weights
from datapipes.testing import assert_matches_reference, assert_resumable
from datapipes.testing.functions import add_noise, double, is_even

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


# -- weights by source index, from a function, class_weights -----------------------------------
W = [0.0] * 50 + [1.0] * 49 + [49.0]  # the last as likely as the 49 before it; the first 50 never


def weight_of(x: int) -> float:
    """A weights function: 0 for multiples of 5, else the remainder (shares 0, .1, ... .4)."""
    return float(x % 5)


def weights_of(weights: Any, i: int) -> float:
    """Source element ``i``'s weight under ``weights`` (``W`` by source index, or ``weight_of``)."""
    return weight_of(i) if weights is weight_of else W[i]


class CountingWeight:
    """``weight_of`` that counts its calls, and fails if it runs outside the process that
    made it (the head, which weighs, runs in the main process)."""

    def __init__(self) -> None:
        self.calls = 0
        self.pid = os.getpid()

    def __call__(self, x: int) -> float:
        if os.getpid() != self.pid:
            raise RuntimeError("a weights function ran in a worker process")
        self.calls += 1
        return weight_of(x)


def residue_shares(out: list[int]) -> list[float]:
    counts = collections.Counter(x % 5 for x in out)
    return [counts[r] / len(out) for r in range(5)]


@pytest.mark.parametrize("weights", [by_source_index(W), weight_of], ids=["source", "function"])
def test_new_weights_are_deterministic_per_seed_and_epoch(weights: Any) -> None:
    pipe = DATA | dp.split([0.5, 0.5], 0) | dp.sample(30, weights=weights, replace=True)
    assert list(pipe.iter(epoch=3, seed=5)) == list(pipe.iter(epoch=3, seed=5))
    assert list(pipe.iter(epoch=3, seed=5)) != list(pipe.iter(epoch=4, seed=5))
    assert list(pipe.iter(epoch=3, seed=5)) != list(pipe.iter(epoch=3, seed=6))


def test_draws_follow_weights_by_source_index_and_from_a_function() -> None:
    out = list(DATA | dp.sample(20_000, weights=by_source_index(W), replace=True))
    counts = collections.Counter(out)
    assert not any(counts[i] for i in range(50))
    assert 0.45 < counts[99] / len(out) < 0.55  # seed 0: the same each run
    shares = residue_shares(list(DATA | dp.sample(20_000, weights=weight_of, replace=True)))
    assert shares[0] == 0
    assert all(abs(share - r / 10) < 0.015 for r, share in enumerate(shares)), shares
    distinct = list(DATA | dp.sample(80, weights=weight_of))  # without replacement
    assert sorted(distinct) == [x for x in range(100) if x % 5]


def test_draws_with_replacement_are_generator_choice_for_large_weights() -> None:
    # above _TABLE_FROM the draws go through a table of slices, in chunks: the same draws
    n = _TABLE_FROM + 4_464
    rng = np.random.default_rng(1)
    w = rng.pareto(1.0, n) * (rng.random(n) < 0.8)
    m = _DRAW_CHUNK + 1_000
    got = list(dp.from_sequence(range(n)) | dp.sample(m, weights=w, replace=True))
    expected = stage_rng(0, 0, 1).choice(n, size=m, replace=True, p=w / w.sum())
    assert got == expected.tolist()
    by_source = dp.from_sequence(range(n)) | dp.sample(m, weights=by_source_index(w),
                                                       replace=True)
    assert list(by_source.iter(epoch=2)) == stage_rng(0, 2, 1).choice(
        n, size=m, replace=True, p=w / w.sum()).tolist()


def test_the_same_weights_work_before_and_after_split() -> None:
    # right after the source, weights by source index are weights by position
    assert list(DATA | dp.sample(40, weights=by_source_index(W), replace=True)) == list(
        DATA | dp.sample(40, weights=W, replace=True))
    # after a split, each element of the part keeps its source index's weight
    part = DATA | dp.split([0.6, 0.4], 1)
    rows = list(part)  # the part's source indices (the data is range(100))
    weights: Any
    for weights, aligned in [(by_source_index(W), [W[i] for i in rows]),
                             (weight_of, [weight_of(i) for i in rows])]:
        pipe = part | dp.sample(60, weights=weights, replace=True)
        expected = part | dp.sample(60, weights=aligned, replace=True)
        for epoch in range(3):
            assert list(pipe.iter(epoch=epoch)) == list(expected.iter(epoch=epoch))
    # and after a shuffle, whatever the order the elements reach the sample in
    order = list(DATA | dp.shuffle())
    for weights in (by_source_index(W), weight_of):
        assert list(DATA | dp.shuffle() | dp.sample(50, weights=weights, replace=True)) == list(
            DATA | dp.shuffle() | dp.sample(50, weights=[weights_of(weights, i) for i in order],
                                            replace=True))


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_weights_function_runs_once_per_source_element(backend: str) -> None:
    fn = CountingWeight()
    pipe = dp.from_sequence(list(range(100))) | dp.split([0.5, 0.5], 0) | dp.sample(
        200, weights=fn, replace=True)
    pipe.explain()
    assert len(pipe) == 200 and fn.calls == 0  # planning reads nothing
    with pipe.compile(workers=2, backend=backend) as loader:
        epochs = [list(loader) for _ in range(3)]
    # the part's 50 elements, once each: not once per epoch, never in a worker
    assert fn.calls == 50
    assert epochs[0] != epochs[1] and len(epochs[2]) == 200
    assert {x % 5 for e in epochs for x in e} == {1, 2, 3, 4}


def test_a_weights_function_is_kept_per_function_and_source_object() -> None:
    fn = CountingWeight()
    source = dp.from_sequence(range(100))
    train = source | dp.split([0.5, 0.5], 0) | dp.sample(50, weights=fn, replace=True)
    val = source | dp.split([0.5, 0.5], 1) | dp.sample(50, weights=fn, replace=True)
    for epoch in range(3):
        list(train.iter(epoch=epoch))
    assert fn.calls == 50
    for epoch in range(3):
        list(val.iter(epoch=epoch))
    assert fn.calls == 100  # the other half, once; the first half is known already
    list((source | dp.sample(50, weights=fn)).iter(epoch=7))
    assert fn.calls == 100


def test_class_weights_are_inverse_frequencies() -> None:
    expected = [0.5, 1.0, 0.5, 1 / 3, 1 / 3, 1 / 3]
    assert class_weights(["a", "b", "a", "c", "c", "c"]).tolist() == expected
    assert class_weights(np.array([4, 7, 4, 2, 2, 2])).tolist() == expected
    assert class_weights(torch.tensor([4, 7, 4, 2, 2, 2])).tolist() == expected
    assert class_weights((("x", 1), ("y", 1), ("x", 1))).tolist() == [0.5, 1.0, 0.5]
    assert class_weights([]).tolist() == [] == class_weights(np.zeros(0)).tolist()
    assert class_weights(np.array(["cat", "dog", "cat"])).dtype == np.float64
    with pytest.raises(ValueError, match=r"class_weights: labels must be one label per "
                                         r"element \(one-dimensional\), got shape \(2, 2\)"):
        class_weights(np.eye(2))
    with pytest.raises(TypeError, match="class_weights: labels must be a sequence"):
        class_weights(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="class_weights: labels must be a sequence"):
        class_weights("abc")
    with pytest.raises(TypeError, match="class_weights: labels must be hashable"):
        class_weights([[1], [2]])


def test_class_weights_draw_each_class_about_equally() -> None:
    labels = [0] * 900 + [1] * 90 + [2] * 10
    data = dp.from_sequence(labels)
    out = list(data | dp.sample(30_000, weights=class_weights(labels), replace=True))
    shares = [out.count(c) / len(out) for c in range(3)]
    assert all(abs(share - 1 / 3) < 0.02 for share in shares), shares
    # the same weights by source index after a split: a class's share follows the fraction
    # of it that the part holds (count in the part / count in the whole)
    part = data | dp.split([0.5, 0.5], 0)
    out = list(part | dp.sample(30_000, weights=by_source_index(class_weights(labels)),
                                replace=True))
    held = [list(part).count(c) / labels.count(c) for c in range(3)]
    shares = [out.count(c) / len(out) for c in range(3)]
    assert all(abs(share - h / sum(held)) < 0.02 for share, h in zip(shares, held, strict=True))


def test_new_weights_arguments_are_checked_when_built_or_composed() -> None:
    for bad, error in [([1, -1], ValueError), ([0, 0], ValueError), ([1, float("inf")],
                       ValueError), ([[1, 2]], ValueError), (3, TypeError), ("ab", TypeError),
                       (["a"], TypeError)]:
        with pytest.raises(error, match=r"^by_source_index: weights"):
            by_source_index(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^sample: weights must be a sequence of numbers, "
                                        r"by_source_index"):
        dp.sample(weights=3)  # type: ignore[arg-type]
    # one weight per source element, checked when composed after the source
    with pytest.raises(ValueError, match="sample: by_source_index has 3 weights for a source of "
                                         "100 elements"):
        DATA | dp.sample(weights=by_source_index([1, 2, 3]))
    fragment = dp.split([0.5, 0.5], 0) | dp.sample(weights=by_source_index([1, 2, 3]))
    with pytest.raises(ValueError, match="by_source_index has 3 weights"):
        DATA | fragment
    # a weights function is given source elements: nothing that changes them before it
    with pytest.raises(TypeError, match=r"sample\(weights=weight_of\): a weights function is "
                                        r"given the source's elements, so only stages that "
                                        r"select or reorder them"):
        DATA | dp.map(double) | dp.sample(weights=weight_of)
    with pytest.raises(TypeError, match=r"not enumerate\(\)"):
        dp.enumerate() | dp.sample(weights=weight_of)
    ok = DATA | dp.split([0.5, 0.5], 0) | dp.shuffle() | dp.prefetch(2) | dp.sample(
        weights=weight_of) | dp.map(double)
    assert len(ok) == 50


def negative_13(x: int) -> float:
    return -1.0 if x == 13 else 1.0


def raising_13(x: int) -> float:
    if x == 13:
        raise KeyError(x)
    return 1.0


def test_weights_a_function_gives_are_checked_when_the_epoch_starts() -> None:
    for run in (list, dp.testing.reference):
        with pytest.raises(ValueError, match=r"sample: the weights function gave -1\.0 for the "
                                             r"element with key 13"):
            run(DATA | dp.sample(weights=negative_13))
        with pytest.raises(KeyError) as info:
            run(DATA | dp.shuffle() | dp.sample(weights=raising_13))
        assert info.value.__notes__ == [
            "datapipes: raised in stage sample(weights=raising_13) on the element with key 13"]
        with pytest.raises(ValueError, match="sample: the weights of the 20 elements that "
                                             "reach it are all 0"):
            run(DATA | dp.split([80, 20], 1, shuffle=False) | dp.sample(
                weights=by_source_index([1.0] * 80 + [0.0] * 20), replace=True))


def test_new_weights_repr_eq_and_pickle() -> None:
    a = dp.sample(weights=by_source_index([1, 2]))
    assert repr(a) == "sample(weights=by_source_index((1.0, 2.0)))"
    assert a == dp.sample(weights=by_source_index(np.array([1.0, 2.0])))
    assert hash(a) == hash(dp.sample(weights=by_source_index(np.array([1.0, 2.0]))))
    assert a != dp.sample(weights=[1, 2]) and a != dp.sample(weights=by_source_index([1, 3]))
    long = dp.sample(weights=by_source_index(np.ones(1000)), replace=True)
    assert repr(long) == "sample(weights=by_source_index(<weights of 1000>), replace=True)"
    f = dp.sample(10, weights=weight_of, replace=True)
    assert repr(f) == "sample(10, weights=weight_of, replace=True)"
    assert f == dp.sample(10, weights=weight_of, replace=True) != dp.sample(10, weights=double)
    namespace = {"sample": dp.sample, "by_source_index": by_source_index,
                 "weight_of": weight_of}
    for stage in (a, f, dp.sample(weights=class_weights([1, 1, 2]))):
        assert eval(repr(stage), namespace) == stage
        copy = pickle.loads(pickle.dumps(stage))
        assert copy == stage and hash(copy) == hash(stage) and repr(copy) == repr(stage)
    pipe = DATA | dp.sample(weights=by_source_index(W), replace=True)
    assert list(pickle.loads(pickle.dumps(pipe))) == list(pipe)
    # the stage holds a copy: changing the array afterwards changes nothing
    w = np.ones(3)
    kept = by_source_index(w)
    w[0] = 5.0
    assert kept == by_source_index([1, 1, 1])


LABELS = [i % 3 if i % 10 else 3 for i in range(100)]  # class 3 is rare
NEW_FORMS = [
    DATA | dp.split([0.7, 0.3], 0) | dp.sample(50, weights=by_source_index(W), replace=True)
    | dp.map(add_noise, rng=True) | dp.batch(8),
    DATA | dp.shuffle() | dp.sample(40, weights=weight_of) | dp.enumerate(),
    DATA | dp.split([0.5, 0.5], 1) | dp.sample(60, weights=weight_of, replace=True) | dp.batch(4),
    dp.from_sequence(LABELS) | dp.sample(weights=class_weights(LABELS), replace=True)
    | dp.batch(5),
]


@pytest.mark.parametrize("pipe", NEW_FORMS, ids=["source", "function", "function-split",
                                                 "class_weights"])
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_new_weights_match_the_reference_and_resume(pipe: dp.Pipe, backend: str) -> None:
    assert_matches_reference(pipe, workers=2, backend=backend)
    if backend == "thread":
        assert_resumable(pipe, at=[0, 3], workers=2, backend="thread")
