"""augment by example: a random map in training, the identity in evaluation (train=False),
drawing exactly as map(rng=True) and leaving later stages' randomness alone; every executor
and a resumed run agree with the reference in both modes; assert_disjoint."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes.stages.augment import EVAL_REASON
from datapipes.testing import (
    assert_disjoint,
    assert_equal_outputs,
    assert_matches_reference,
    assert_resumable,
    fragments,
    has_randomness,
    pipes,
    reference,
)
from datapipes.testing.functions import (
    Replay,
    add_noise,
    add_one,
    double,
    is_even,
    maybe_negate,
    records_of,
    sum_batch,
)

pytestmark = pytest.mark.timeout(120)

DATA = dp.from_sequence(range(100))
NUMBERS = list(range(100))


def fail_on_3(x: int, rng: np.random.Generator) -> int:
    """``add_noise``, but raises on 3 (module level: it ships to worker processes)."""
    if x == 3:
        raise ValueError("three")
    return add_noise(x, rng)


def identity(x: int) -> int:
    return x


# -- what it yields ----------------------------------------------------------------------------
def test_train_applies_fn_and_eval_passes_elements_through() -> None:
    pipe = DATA | dp.augment(add_noise)
    trained = list(pipe)
    assert trained != NUMBERS
    assert all(0 <= y - x < 1000 for x, y in zip(NUMBERS, trained, strict=True))
    assert list(pipe.iter(train=False)) == NUMBERS
    assert list(pipe.iter(epoch=3, seed=7, train=False)) == NUMBERS  # nothing random left
    assert reference(pipe, train=False) == NUMBERS
    assert reference(pipe) == trained == list(pipe.iter(train=True))


@pytest.mark.parametrize("epoch, seed", [(0, 0), (1, 0), (0, 5), (4, 123)])
def test_train_draws_exactly_as_map_with_rng(epoch: int, seed: int) -> None:
    for before, after in [
        (dp.Pipe(), dp.Pipe()),
        (dp.shuffle(), dp.batch(7)),
        (dp.filter(is_even), dp.shuffle(buffer=5) | dp.map(maybe_negate, rng=True)),
    ]:
        augmented = DATA | before | dp.augment(add_noise) | after
        mapped = DATA | before | dp.map(add_noise, rng=True) | after
        assert list(augmented.iter(epoch=epoch, seed=seed)) == list(
            mapped.iter(epoch=epoch, seed=seed)
        )
        assert reference(augmented, epoch, seed) == reference(mapped, epoch, seed)


def test_a_named_augment_draws_as_a_named_map() -> None:
    named = DATA | dp.map(double) | dp.augment(add_noise, name="noise")
    assert list(named) == list(DATA | dp.map(double) | dp.map(add_noise, rng=True, name="noise"))
    # its key is its name: stages inserted before it do not change its draws
    inserted = DATA | dp.map(identity) | dp.map(double) | dp.augment(add_noise, name="noise")
    assert list(inserted) == list(named)


def test_later_stages_draw_the_same_in_training_and_evaluation() -> None:
    after = dp.shuffle() | dp.map(maybe_negate, rng=True) | dp.sample(50)
    pipe = DATA | dp.augment(add_noise) | after
    # evaluation: as if the augment were a map that changes nothing (same stage keys)
    unchanged = DATA | dp.map(identity) | after
    for epoch in range(3):
        assert list(pipe.iter(epoch=epoch, train=False)) == list(unchanged.iter(epoch=epoch))
        assert reference(pipe, epoch, train=False) == reference(unchanged, epoch)
    # training: the same permutation, signs and sample, each element plus its noise
    scaled = dp.from_sequence(range(0, 100_000, 1000)) | dp.augment(add_noise) | after
    trained = list(scaled)
    evaluated = list(scaled.iter(train=False))
    assert [abs(y) // 1000 for y in trained] == [abs(x) // 1000 for x in evaluated]
    assert [y < 0 for y in trained] == [x < 0 for x in evaluated]
    assert trained != evaluated


def test_it_keeps_random_access_and_the_length() -> None:
    pipe = DATA | dp.augment(add_noise)
    assert len(pipe) == 100
    assert len(pipe | dp.shuffle() | dp.sample(10) | dp.batch(3)) == 4  # random access lasts
    assert sorted(x // 1000 for x in dp.from_sequence(range(0, 50_000, 1000))
                  | dp.augment(add_noise) | dp.shuffle()) == list(range(50))


def test_it_counts_as_randomness() -> None:
    pipe = DATA | dp.augment(add_noise)
    assert has_randomness(pipe)
    assert pipe.stages[1].draws_randomness()


def test_a_failing_fn_fails_only_in_training() -> None:
    pipe = DATA | dp.augment(fail_on_3)
    with pytest.raises(ValueError, match="three") as info:
        list(pipe)
    assert any("augment(fail_on_3)" in note for note in info.value.__notes__)
    assert list(pipe.iter(train=False)) == NUMBERS
    noisy = reference(DATA | dp.map(add_noise, rng=True))  # the same stage key: the same draws
    assert reference(pipe, on_error="skip") == noisy[:3] + noisy[4:]
    assert reference(pipe, on_error="skip", train=False) == NUMBERS


# -- planning and explain ----------------------------------------------------------------------
def test_explain_says_where_it_runs_in_each_mode() -> None:
    pipe = DATA | dp.shuffle() | dp.augment(add_noise) | dp.batch(4)
    trained = pipe.explain().splitlines()
    assert trained[3].split() == ["augment(add_noise)", "workers", "per", "element"]
    evaluated = pipe.explain(train=False).splitlines()
    assert evaluated[3].split()[:2] == ["augment(add_noise)", "workers"]
    assert evaluated[3].endswith(EVAL_REASON) and "train=False" in EVAL_REASON
    assert evaluated[:3] == trained[:3] and evaluated[4:] == trained[4:]


def test_in_evaluation_the_workers_get_no_op_for_it() -> None:
    from datapipes.plan import plan

    pipe = DATA | dp.map(add_one) | dp.augment(add_noise) | dp.map(double)
    assert [op[2] for op in plan(pipe).element_ops] == [s for s in pipe.stages[1:]]
    assert [op[2] for op in plan(pipe, train=False).element_ops] == [
        pipe.stages[1], pipe.stages[3]
    ]


def test_compile_explain_shows_the_mode() -> None:
    pipe = DATA | dp.augment(add_noise)
    with pipe.compile(workers=1, backend="thread", train=False) as loader:
        assert EVAL_REASON in loader.explain()
    with pipe.compile(workers=1, backend="thread") as loader:
        assert EVAL_REASON not in loader.explain()


# -- every executor equals the reference, in both modes ----------------------------------------
PIPES = {
    # random access: in the workers, between index stages
    "indexed": DATA | dp.shuffle() | dp.augment(add_noise) | dp.batch(4),
    # after a filter: in the workers, on a segment that is not 1:1
    "filtered": DATA | dp.filter(is_even) | dp.augment(add_noise) | dp.shuffle(buffer=8),
    # on whole batches, after a batch in the workers
    "batched": DATA | dp.batch(4) | dp.map(sum_batch) | dp.augment(add_noise),
    # in the tail: after a batch whose membership needs the stream
    "tail": DATA | dp.filter(is_even) | dp.batch(3) | dp.map(sum_batch)
    | dp.augment(add_noise) | dp.map(add_one),
    # a stream source, and randomness after it
    "stream": dp.from_iterable(Replay(tuple(range(40)))) | dp.augment(add_noise, name="a")
    | dp.map(maybe_negate, rng=True),
}


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", list(PIPES))
def test_threads_match_the_reference(name: str, train: bool) -> None:
    pipe = PIPES[name]
    for workers in (0, 1, 3):
        assert_matches_reference(pipe, workers=workers, backend="thread", train=train)
    assert_matches_reference(pipe, workers=2, backend="thread", train=train, seed=9, prefetch=1)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", ["indexed", "tail", "stream"])
def test_processes_match_the_reference(name: str, train: bool) -> None:
    assert_matches_reference(PIPES[name], workers=2, backend="process", train=train)


@pytest.mark.parametrize("train", [True, False])
def test_compiled_outputs_are_the_modes_outputs(train: bool) -> None:
    pipe = DATA | dp.shuffle() | dp.augment(add_noise)
    with pipe.compile(workers=2, backend="thread", train=train) as loader:
        got = list(loader)
    assert got == list(pipe.iter(train=train))
    assert (sorted(got) == NUMBERS) is (not train)


def test_skipping_in_both_modes() -> None:
    pipe = DATA | dp.shuffle() | dp.augment(fail_on_3)
    for train, count in ((True, 99), (False, 100)):
        assert_matches_reference(pipe, workers=2, backend="thread", on_error="skip",
                                 train=train)
        with pipe.compile(workers=2, backend="thread", on_error="skip", train=train) as loader:
            assert len(list(loader)) == count
            assert len(loader.skipped) == 100 - count


def test_pipe_iter_in_evaluation_through_the_loader_path() -> None:
    # a prefetch or a parallel_map makes pipe.iter run on a Loader
    pipe = DATA | dp.augment(add_noise) | dp.prefetch(4)
    assert list(pipe.iter(train=False)) == NUMBERS
    assert list(pipe.iter()) == reference(pipe)
    pooled = DATA | dp.parallel_map(add_one, workers=2) | dp.augment(add_noise)
    assert list(pooled.iter(train=False)) == [x + 1 for x in NUMBERS]


def test_mixed_inputs_follow_the_mode() -> None:
    mixed = dp.mix(DATA | dp.augment(add_noise), dp.from_sequence(range(100, 150)), stop="all")
    evaluated = list(mixed.iter(train=False))
    assert sorted(evaluated) == list(range(150))
    assert reference(mixed, train=False) == evaluated
    assert sorted(mixed) != list(range(150))
    assert_matches_reference(mixed, workers=2, backend="thread", train=False)


# -- drawn pipes: the laws, in both modes ------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(before=pipes(terminal=False, max_stages=3), after=fragments(max_stages=3),
       fn=st.sampled_from([add_noise, maybe_negate]), name=st.none() | st.just("aug"),
       epoch=st.integers(0, 3), seed=st.integers(0, 2**32))
def test_it_is_a_random_map_in_training_and_the_identity_in_evaluation(
    before: dp.Pipe[int], after: dp.Pipe[int], fn: object, name: str | None, epoch: int,
    seed: int,
) -> None:
    pipe = before | dp.augment(fn, name=name) | after  # type: ignore[arg-type]
    mapped = before | dp.map(fn, rng=True, name=name) | after  # type: ignore[arg-type]
    unchanged = before | dp.map(identity, name=name) | after  # the same stage keys
    # (outputs may be tensors, after a collate: compared by value)
    assert_equal_outputs(reference(mapped, epoch, seed), reference(pipe, epoch, seed))
    evaluated = reference(unchanged, epoch, seed, train=False)  # (other augments drawn too)
    assert_equal_outputs(evaluated, reference(pipe, epoch, seed, train=False))
    assert_equal_outputs(evaluated, list(pipe.iter(epoch=epoch, seed=seed, train=False)))


@settings(max_examples=20, deadline=None)
@given(before=pipes(terminal=False, max_stages=3), after=fragments(max_stages=3),
       train=st.booleans(), workers=st.integers(0, 2))
def test_drawn_pipes_match_the_reference_and_resume_in_both_modes(
    before: dp.Pipe[int], after: dp.Pipe[int], train: bool, workers: int
) -> None:
    pipe = before | dp.augment(add_noise) | after
    assert_matches_reference(pipe, workers=workers, backend="thread", train=train)
    assert_resumable(pipe, at=[0, -1], workers=workers, backend="thread", train=train,
                     resume_with={"workers": 2})


def test_interleaves_around_it_in_evaluation() -> None:
    # (two interleaves after a random-access source: once a planner bug, without augment too)
    # in evaluation the augment asks for no op, so the second interleave joins the first in
    # the head, as it would with nothing between them
    pipe = (dp.from_sequence([1, 2]) | dp.interleave(records_of, cycle_length=1)
            | dp.augment(add_noise) | dp.interleave(records_of, cycle_length=1))
    assert list(pipe.iter(train=False)) == reference(pipe, train=False)


# -- checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_resumable_in_both_modes(train: bool) -> None:
    for pipe in (PIPES["indexed"], PIPES["tail"], PIPES["stream"]):
        assert_resumable(pipe, at=[0, 3, -1], workers=2, backend="thread", train=train,
                         resume_with={"workers": 1})


def test_resumable_with_processes() -> None:
    assert_resumable(PIPES["indexed"], at=[1, -2], workers=2, backend="process", train=False,
                     resume_with={"workers": 0})


# -- assert_disjoint ---------------------------------------------------------------------------
def test_assert_disjoint_passes_on_the_parts_of_a_split() -> None:
    sizes = [0.7, 0.2, 0.1]
    parts = [DATA | dp.split(sizes, i) for i in range(3)]
    for i in range(3):
        for j in range(3):
            if i != j:
                assert_disjoint(parts[i], parts[j])
    # augmented parts too: both run for evaluation, the augmentation is not what is compared
    train = parts[0] | dp.shuffle() | dp.augment(add_noise)
    assert_disjoint(train, parts[1] | dp.augment(add_noise), epoch=2, seed=4)


def test_assert_disjoint_compares_arrays_by_value_and_type() -> None:
    rows = dp.from_arrays(x=np.arange(12).reshape(6, 2))
    assert_disjoint(rows | dp.split([3, 3], 0), rows | dp.split([3, 3], 1))
    assert_disjoint(dp.from_sequence([1, 2]), dp.from_sequence([1.5, 2.5]))
    assert_disjoint(dp.from_sequence([np.int64(1)]), dp.from_sequence([np.int32(1)]))
    with pytest.raises(AssertionError, match=r"share an element .*position 2 of a"):
        assert_disjoint(rows | dp.take(3), rows | dp.skip(2) | dp.take(1))


def test_assert_disjoint_names_a_shared_element_and_where_it_is() -> None:
    a = DATA | dp.take(60)
    b = dp.from_sequence([200, 59, 300, 58])
    with pytest.raises(AssertionError) as info:
        assert_disjoint(a, b)
    message = str(info.value)
    assert message.startswith("the pipes share 2 elements (epoch 0, seed 0); the first in b: 59")
    assert f"position 59 of a ({a!r})" in message
    assert f"position 1 of b ({b!r})" in message
    # the augmentation cannot hide an overlap
    with pytest.raises(AssertionError, match="share 2 elements"):
        assert_disjoint(a | dp.augment(add_noise), b | dp.augment(add_noise))
    # each shared element is counted once, however often it repeats
    with pytest.raises(AssertionError, match="share an element"):
        assert_disjoint(dp.from_sequence([1, 1, 2]), dp.from_sequence([1, 1, 1]))


def test_assert_disjoint_by_key() -> None:
    records = [{"id": i, "x": i * 10} for i in range(6)]
    relabelled = [{"id": i, "x": -i} for i in range(4, 8)]
    a, b = dp.from_sequence(records), dp.from_sequence(relabelled)
    assert_disjoint(a, b)  # by value: no record is equal

    def by_id(r: dict[str, int]) -> int:
        return r["id"]

    with pytest.raises(AssertionError) as info:
        assert_disjoint(a, b, key=by_id)
    message = str(info.value)
    assert "share 2 elements by key" in message and "key 4" in message
    assert "position 4 of a" in message and "{'id': 4, 'x': 40}" in message
    assert "position 0 of b" in message and "{'id': 4, 'x': -4}" in message
    assert_disjoint(a | dp.take(4), b, key=by_id)


def test_assert_disjoint_follows_the_epoch_and_seed() -> None:
    # two samples of one dataset: disjoint in no epoch, by chance never the same
    a, b = DATA | dp.sample(60), DATA | dp.sample(60)
    with pytest.raises(AssertionError, match=r"epoch 3, seed 8"):
        assert_disjoint(a, b, epoch=3, seed=8)


def test_assert_disjoint_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="assert_disjoint: key must be callable or None"):
        assert_disjoint(DATA, DATA, key="id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="assert_disjoint: b must be a runnable pipe"):
        assert_disjoint(DATA, dp.map(add_one))
    with pytest.raises(TypeError, match="assert_disjoint: a must be a runnable pipe"):
        assert_disjoint([1, 2], DATA)  # type: ignore[arg-type]


# -- a value like every stage ------------------------------------------------------------------
def test_arguments_are_checked_when_it_is_built() -> None:
    with pytest.raises(TypeError, match="augment: fn must be callable, got 3"):
        dp.augment(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="augment: name must be a non-empty str or None"):
        dp.augment(add_noise, name="")
    with pytest.raises(TypeError, match="augment: name must be a non-empty str or None"):
        dp.augment(add_noise, name=1)  # type: ignore[arg-type]


def test_the_mode_is_checked() -> None:
    pipe = DATA | dp.augment(add_noise)
    with pytest.raises(TypeError, match="iter: train must be a bool, got 0"):
        pipe.iter(train=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="explain: train must be a bool"):
        pipe.explain(train="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="compile: train must be a bool, got 'eval'"):
        pipe.compile(train="eval")
    with pytest.raises(TypeError, match="reference: train must be a bool"):
        reference(pipe, train=None)  # type: ignore[arg-type]


def test_repr_equality_hash_and_pickle() -> None:
    plain, named = dp.augment(add_noise), dp.augment(add_noise, name="noise")
    assert repr(plain) == "augment(add_noise)"
    assert repr(named) == "augment(add_noise, name='noise')"
    namespace = {**vars(dp), "add_noise": add_noise}
    for pipe in (plain, named, DATA | dp.shuffle() | named):
        assert eval(repr(pipe), namespace) == pipe
        assert pickle.loads(pickle.dumps(pipe)) == pipe
        assert hash(pickle.loads(pickle.dumps(pipe))) == hash(pipe)
    assert plain == dp.augment(add_noise) and hash(plain) == hash(dp.augment(add_noise))
    assert plain != named != dp.augment(add_noise, name="other")
    assert plain != dp.augment(maybe_negate)
    assert plain != dp.map(add_noise, rng=True)
    restored = pickle.loads(pickle.dumps(DATA | named))
    assert list(restored) == list(DATA | named)
    assert list(restored.iter(train=False)) == NUMBERS
