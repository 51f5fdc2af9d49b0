"""The laws of the pipe algebra and of its randomness, as property tests over drawn pipes.

Pipes come from :func:`datapipes.testing.pipes`: random runnable pipes over small int data,
built from every public stage. The reference is ``pipe.iter(epoch=, seed=)``.
"""

import pickle
from collections.abc import Sized
from typing import Any

import numpy as np
import pytest
import toolz
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes import Pipe
from datapipes._graph import EpochContext
from datapipes._graph import stage_by_stage as run_naive
from datapipes._seeds import name_key
from datapipes.testing import (
    assert_deterministic,
    assert_equal_outputs,
    fragments,
    pipes,
    reference,
)
from datapipes.testing.functions import (
    add_noise,
    add_one,
    double,
    drop_position,
    is_even,
    is_odd,
    negate,
    not_multiple_of_3,
    range_of,
    repeat_twice,
    sum_batch,
)

INT_FNS = [add_one, double, negate]
PREDICATES = [is_even, is_odd, not_multiple_of_3]
FANOUTS = [repeat_twice, range_of]
SEEDS = st.sampled_from([0, 1, 12345, 2**40 + 3])
EPOCHS = st.integers(0, 5)
#: (seed, epoch) pairs every drawn pipe is run under when comparing two ways of running it
SEED_EPOCHS = [(0, 0), (0, 1), (7, 0), (2**40 + 3, 12)]

int_pipes = pipes(terminal=False)


# -- the algebra -------------------------------------------------------------------------------
@given(p=int_pipes, b=fragments(terminal=False), c=fragments())
def test_composition_is_associative_on_pipes(p: Pipe[Any], b: Pipe[Any], c: Pipe[Any]) -> None:
    left, right = (p | b) | c, p | (b | c)
    assert left == right
    assert hash(left) == hash(right)
    assert left.stages == p.stages + b.stages + c.stages
    assert_equal_outputs(reference(left, 1), reference(right, 1))


@given(a=fragments(terminal=False), b=fragments(terminal=False), c=fragments())
def test_composition_is_associative_on_fragments(
    a: Pipe[Any], b: Pipe[Any], c: Pipe[Any]
) -> None:
    assert (a | b) | c == a | (b | c)
    assert ((a | b) | c).stages == a.stages + b.stages + c.stages


@given(p=pipes() | fragments())
def test_the_empty_pipe_is_the_identity(p: Pipe[Any]) -> None:
    assert Pipe() | p == p
    assert p | Pipe() == p
    assert Pipe() | Pipe() == Pipe()
    if p.is_runnable:
        assert_equal_outputs(reference(p), reference(Pipe() | p | Pipe()))


@given(p=int_pipes, size=st.integers(1, 10), epoch=EPOCHS)
def test_unbatch_after_batch_is_the_identity(p: Pipe[Any], size: int, epoch: int) -> None:
    flat = reference(p, epoch)
    assert_equal_outputs(flat, reference(p | dp.batch(size) | dp.unbatch(), epoch))
    kept = len(flat) - len(flat) % size
    assert_equal_outputs(
        flat[:kept], reference(p | dp.batch(size, drop_last=True) | dp.unbatch(), epoch)
    )


@given(p=int_pipes, size=st.integers(1, 10), drop_last=st.booleans())
def test_batch_sizes_and_drop_last(p: Pipe[Any], size: int, drop_last: bool) -> None:
    flat = reference(p)
    batches = reference(p | dp.batch(size, drop_last=drop_last))
    assert all(type(b) is list for b in batches)
    assert all(len(b) == size for b in batches[:-1])
    if batches:
        assert 1 <= len(batches[-1]) <= size
        if drop_last:
            assert len(batches[-1]) == size
    expected_count = len(flat) // size if drop_last else -(-len(flat) // size)
    assert len(batches) == expected_count
    concatenated = [x for b in batches for x in b]
    assert concatenated == (flat[: len(flat) - len(flat) % size] if drop_last else flat)


@given(p=pipes(terminal=False, random_access=True), epoch=EPOCHS, seed=SEEDS)
def test_shuffle_is_a_permutation(p: Pipe[Any], epoch: int, seed: int) -> None:
    assert sorted(reference(p | dp.shuffle(), epoch, seed)) == sorted(reference(p, epoch, seed))


@given(p=pipes(terminal=False, random_access=True), seed=SEEDS)
def test_shuffle_differs_across_epochs(p: Pipe[Any], seed: int) -> None:
    # With k >= 8 distinct values there are at least 8! equally likely orders, so three later
    # epochs all repeating epoch 0 has probability at most (1/8!)**3, about 6e-14.
    assume(len(set(reference(p, 0, seed))) >= 8)
    shuffled = p | dp.shuffle()
    first = reference(shuffled, 0, seed)
    assert any(reference(shuffled, epoch, seed) != first for epoch in (1, 2, 3))


@given(data=st.lists(st.integers(), min_size=8, max_size=40, unique=True))
def test_shuffle_differs_across_seeds(data: list[int]) -> None:
    pipe = dp.from_sequence(data) | dp.shuffle()
    first = reference(pipe, 0, 0)
    assert any(reference(pipe, 0, seed) != first for seed in (1, 2, 3))


@given(p=int_pipes, buffer=st.integers(1, 50), epoch=EPOCHS, seed=SEEDS)
def test_buffer_shuffle_is_a_permutation(p: Pipe[Any], buffer: int, epoch: int, seed: int) -> None:
    got = reference(p | dp.shuffle(buffer=buffer), epoch, seed)
    assert sorted(got) == sorted(reference(p, epoch, seed))


@given(p=int_pipes, epoch=EPOCHS)
def test_buffer_of_one_is_the_identity(p: Pipe[Any], epoch: int) -> None:
    assert reference(p | dp.shuffle(buffer=1), epoch) == reference(p, epoch)


@given(p=int_pipes, fn=st.sampled_from([*INT_FNS, add_noise]), workers=st.integers(1, 4),
       name=st.none() | st.just("m"), epoch=EPOCHS, seed=SEEDS)
def test_parallel_map_equals_map(
    p: Pipe[Any], fn: Any, workers: int, name: str | None, epoch: int, seed: int
) -> None:
    rng = fn is add_noise
    expected = reference(p | dp.map(fn, rng=rng, name=name), epoch, seed)
    got = reference(p | dp.parallel_map(fn, workers=workers, rng=rng, name=name), epoch, seed)
    assert got == expected


@given(p=pipes(), at=st.integers(1, 10), n=st.integers(1, 5), epoch=EPOCHS, seed=SEEDS)
def test_prefetch_changes_nothing(p: Pipe[Any], at: int, n: int, epoch: int, seed: int) -> None:
    # prefetch is transparent: it takes no stage key, so even the draws of random stages
    # after it stay the same.
    at = min(at, len(p.stages))
    with_prefetch = Pipe(*p.stages[:at]) | dp.prefetch(n) | Pipe(*p.stages[at:])
    assert len(with_prefetch.stages) == len(p.stages) + 1
    assert_equal_outputs(reference(p, epoch, seed), reference(with_prefetch, epoch, seed))


@given(p=pipes(), n=st.integers(0, 50), epoch=EPOCHS, seed=SEEDS)
def test_take_and_skip_agree_with_slicing(p: Pipe[Any], n: int, epoch: int, seed: int) -> None:
    full = reference(p, epoch, seed)
    assert_equal_outputs(full[:n], reference(p | dp.take(n), epoch, seed), f"take({n})")
    assert_equal_outputs(full[n:], reference(p | dp.skip(n), epoch, seed), f"skip({n})")


@given(p=int_pipes, f=st.sampled_from(INT_FNS), g=st.sampled_from(INT_FNS), epoch=EPOCHS)
def test_map_then_map_is_map_of_the_composition(p: Pipe[Any], f: Any, g: Any, epoch: int) -> None:
    expected = [g(f(x)) for x in reference(p, epoch)]
    assert reference(p | dp.map(f) | dp.map(g), epoch) == expected
    assert reference(p | dp.map(toolz.compose(g, f)), epoch) == expected


@given(p=int_pipes, pred=st.sampled_from(PREDICATES), epoch=EPOCHS)
def test_filter_agrees_with_the_comprehension(p: Pipe[Any], pred: Any, epoch: int) -> None:
    expected = [x for x in reference(p, epoch) if pred(x)]
    assert reference(p | dp.filter(pred), epoch) == expected


@given(p=int_pipes, fn=st.sampled_from(FANOUTS), epoch=EPOCHS)
def test_flat_map_agrees_with_the_nested_comprehension(p: Pipe[Any], fn: Any, epoch: int) -> None:
    expected = [y for x in reference(p, epoch) for y in fn(x)]
    assert reference(p | dp.flat_map(fn), epoch) == expected


_SIZED_STAGES = {
    "map", "augment", "parallel_map", "batch", "take", "skip", "shuffle", "enumerate", "collate",
    "prefetch",
    "sample", "split", "cache",
}


def _length_is_known(pipe: Pipe[Any]) -> bool:
    """The contract: a sized source, then only stages whose output count follows from it."""
    source: Any = pipe.stages[0]
    if source.call_name == "from_iterable":
        sized = isinstance(source.obj, Sized)
    elif source.call_name in ("concat", "zip"):
        sized = all(_length_is_known(p) for p in source.inputs)
    elif source.call_name == "mix":  # known when every drawn input is read to its end
        drawn = [p for p, w in zip(source.inputs, source.weights or [1] * len(source.inputs),
                                   strict=True) if w > 0]
        ends_all = source.stop == "all" or len(drawn) == 1
        sized = ends_all and all(_length_is_known(p) for p in drawn)
    else:
        sized = source.call_name in ("from_sequence", "from_arrays")
    return sized and all(stage.call_name in _SIZED_STAGES for stage in pipe.stages[1:])


@given(p=pipes())
def test_len_is_the_number_of_elements_or_a_type_error(p: Pipe[Any]) -> None:
    counts = {len(reference(p, epoch)) for epoch in (0, 1)}
    if _length_is_known(p):
        assert counts == {len(p)}
        assert p.length() == len(p)
    else:
        with pytest.raises(TypeError, match="not known without iterating"):
            len(p)
        assert p.length() is None


# -- running -----------------------------------------------------------------------------------
@given(p=pipes(), seed=SEEDS)
def test_each_seed_and_epoch_is_deterministic(p: Pipe[Any], seed: int) -> None:
    assert_deterministic(p, epochs=4, seed=seed)


@settings(max_examples=3 * settings.default.max_examples)
@given(p=pipes(max_stages=8))
def test_the_plan_agrees_with_the_stage_by_stage_definition(p: Pipe[Any]) -> None:
    for seed, epoch in SEED_EPOCHS:
        naive = list(run_naive(p, EpochContext(seed, epoch)))
        assert_equal_outputs(
            naive, reference(p, epoch, seed),
            f"pipe.iter() differs from run_naive (seed {seed}, epoch {epoch})",
        )


@given(p=pipes() | fragments())
def test_pickling_round_trips(p: Pipe[Any]) -> None:
    q = pickle.loads(pickle.dumps(p))
    assert q == p
    assert hash(q) == hash(p)
    assert repr(q) == repr(p)
    if p.is_runnable:
        assert_equal_outputs(reference(p, 2, 5), reference(q, 2, 5))


_NAMESPACE: dict[str, Any] = {}
exec("from datapipes import *\nfrom datapipes.testing.functions import *", _NAMESPACE)


@given(p=pipes(sources=("sequence", "iterable"), max_size=8) | fragments())
def test_repr_evaluates_to_an_equal_pipe(p: Pipe[Any]) -> None:
    # Sources over lists and ranges only: from_arrays shows its columns as a summary,
    # e.g. from_arrays(x=<ndarray int64 (3,)>), and any list whose repr is longer than 60
    # characters shows as <list of n>. Neither evaluates back (never to a different pipe).
    assert eval(repr(p), _NAMESPACE) == p


def test_repr_summarises_arrays_and_long_lists() -> None:
    pipe = dp.from_arrays(x=np.arange(3))
    assert repr(pipe) == "from_arrays(x=<ndarray int64 (3,)>)"
    assert repr(dp.from_sequence(list(range(100)))) == "from_sequence(<list of 100>)"
    with pytest.raises(SyntaxError):
        eval(repr(dp.from_sequence(list(range(100)))), _NAMESPACE)


@given(
    p=pipes(),
    epochs=st.tuples(EPOCHS, EPOCHS),
    schedule=st.lists(st.sampled_from([0, 1]), max_size=120),
)
def test_iterators_over_one_pipe_are_independent(
    p: Pipe[Any], epochs: tuple[int, int], schedule: list[int]
) -> None:
    its = [p.iter(epoch=epochs[0]), p.iter(epoch=epochs[1])]
    got: list[list[Any]] = [[], []]
    done = object()
    for which in schedule:
        x = next(its[which], done)
        if x is not done:
            got[which].append(x)
    for which in (0, 1):
        got[which].extend(its[which])
        assert_equal_outputs(reference(p, epochs[which]), got[which], f"iterator {which}")


def test_a_pipe_iterates_like_its_reference() -> None:
    pipe = dp.from_sequence(range(10)) | dp.shuffle() | dp.batch(3)
    assert list(pipe) == list(pipe.iter()) == reference(pipe, 0, 0)


# -- randomness --------------------------------------------------------------------------------
_STEP = 1000  # elements are multiples of 1000, so x + noise (noise < 1000) decodes uniquely


def _noise(outputs: list[int]) -> dict[int, int]:
    """source index -> the noise add_noise drew for it (each output decoded once)."""
    table = {x // _STEP: x % _STEP for x in outputs}
    assert len(table) == len(outputs), "an element came out twice"
    return table


def _spread(n: int) -> Pipe[int]:
    return dp.from_sequence(range(0, n * _STEP, _STEP))


# Stages that keep values and keys: placed after a random map, they must not change its draws.
_AFTER = st.one_of(
    st.integers(0, 30).map(dp.take),
    st.integers(0, 30).map(dp.skip),
    st.sampled_from(PREDICATES).map(lambda pred: dp.filter(pred)),
    st.just(dp.shuffle()),
    st.integers(1, 10).map(lambda k: dp.shuffle(buffer=k)),
    st.just(dp.enumerate() | dp.map(drop_position)),
)


@given(n=st.integers(0, 30), after=st.lists(_AFTER, max_size=3), seed=SEEDS, epoch=EPOCHS)
def test_random_draws_do_not_depend_on_later_stages(
    n: int, after: list[Pipe[Any]], seed: int, epoch: int
) -> None:
    noisy = _spread(n) | dp.map(add_noise, rng=True)
    full = _noise(reference(noisy, epoch, seed))
    assert sorted(full) == list(range(n))
    random_access = True
    for stage in after:
        if stage == dp.shuffle() and not random_access:
            continue  # shuffle() needs random access, which a take, skip or filter ended
        noisy = noisy | stage
        random_access = random_access and stage.stages[0].call_name in ("shuffle", "enumerate")
    part = _noise(reference(noisy, epoch, seed))
    assert part.items() <= full.items()


@given(n=st.integers(4, 30), seed=SEEDS, epoch=EPOCHS)
def test_random_draws_differ_across_epochs_and_seeds(n: int, seed: int, epoch: int) -> None:
    # Each of n >= 4 elements draws from 1000 values: all equal by chance is at most 1e-12.
    noisy = _spread(n) | dp.map(add_noise, rng=True)
    here = _noise(reference(noisy, epoch, seed))
    assert here != _noise(reference(noisy, epoch + 1, seed))
    assert here != _noise(reference(noisy, epoch, seed + 1))


# Stages that keep values and keys, to insert before a random map.
_BEFORE = st.one_of(
    st.integers(0, 30).map(dp.take),
    st.integers(0, 30).map(dp.skip),
    st.sampled_from(PREDICATES).map(lambda pred: dp.filter(pred)),
    st.integers(1, 10).map(lambda k: dp.shuffle(buffer=k)),
    st.just(dp.enumerate() | dp.map(drop_position)),
    st.just(dp.map(toolz.identity)),
)


@given(
    n=st.integers(0, 30),
    full_shuffle=st.booleans(),
    before=st.lists(_BEFORE, min_size=1, max_size=3),
    seed=SEEDS,
    epoch=EPOCHS,
)
def test_a_named_map_keeps_its_draws_when_stages_are_inserted_before_it(
    n: int, full_shuffle: bool, before: list[Pipe[Any]], seed: int, epoch: int
) -> None:
    inserted = (dp.shuffle() if full_shuffle else Pipe()) | toolz.reduce(Pipe.__or__, before)
    named = dp.map(add_noise, rng=True, name="noise")
    full = _noise(reference(_spread(n) | named, epoch, seed))
    part = _noise(reference(_spread(n) | inserted | named, epoch, seed))
    assert part.items() <= full.items()

    # Unnamed, the same map is keyed by its position, which the inserted stages moved: its
    # draws change (all of k >= 4 repeating by chance is at most 1e-12).
    unnamed = dp.map(add_noise, rng=True)
    full = _noise(reference(_spread(n) | unnamed, epoch, seed))
    part = _noise(reference(_spread(n) | inserted | unnamed, epoch, seed))
    if len(part) >= 4:
        assert not part.items() <= full.items()


# -- the keys of the spec, computed from numpy directly --------------------------------------
def _generator(seed: int, *spawn_key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn_key)))


def _draw(seed: int, epoch: int, stage_key: int, key: int | tuple[int, ...]) -> int:
    """add_noise's draw for one element, from the spec: spawn key (epoch, stage, 1, *key)."""
    flat = (key,) if isinstance(key, int) else key
    return int(_generator(seed, epoch, stage_key, 1, *flat).integers(1000))


def _permutation(seed: int, epoch: int, stage_key: int, n: int) -> list[int]:
    return [int(i) for i in _generator(seed, epoch, stage_key, 0).permutation(n)]


def _keyed_cases(n: int, size: int, seed: int, epoch: int) -> list[tuple[Pipe[Any], list[int]]]:
    """(pipe, expected output) pairs, the expected side derived from the spec by hand."""
    d = _draw
    xs = list(range(n))
    perm = _permutation(seed, epoch, 1, n)
    batches = [xs[i : i + size] for i in range(0, n, size)]
    return [
        (dp.from_sequence(xs) | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 1, i) for i, x in enumerate(xs)]),
        (dp.from_iterable(xs) | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 1, i) for i, x in enumerate(xs)]),
        (dp.from_sequence(xs) | dp.map(add_noise, rng=True, name="n"),
         [x + d(seed, epoch, name_key("n"), i) for i, x in enumerate(xs)]),
        (dp.from_sequence(xs) | dp.shuffle(), [xs[j] for j in perm]),
        (dp.from_sequence(xs) | dp.shuffle() | dp.map(add_noise, rng=True),
         [xs[j] + d(seed, epoch, 2, j) for j in perm]),
        (dp.from_sequence(xs) | dp.filter(is_even) | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 2, i) for i, x in enumerate(xs) if is_even(x)]),
        (dp.from_sequence(xs) | dp.skip(2) | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 2, i) for i, x in enumerate(xs) if i >= 2]),
        (dp.from_sequence(xs) | dp.flat_map(repeat_twice) | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 2, (i, j)) for i, x in enumerate(xs) for j in (0, 1)]),
        (dp.from_sequence(xs) | dp.flat_map(repeat_twice) | dp.flat_map(repeat_twice)
         | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 3, (i, j, k))
          for i, x in enumerate(xs) for j in (0, 1) for k in (0, 1)]),
        (dp.from_sequence(xs) | dp.batch(size) | dp.map(sum_batch) | dp.map(add_noise, rng=True),
         [sum(b) + d(seed, epoch, 3, k) for k, b in enumerate(batches)]),
        (dp.from_sequence(xs) | dp.batch(size) | dp.unbatch() | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 3, (k, j)) for k, b in enumerate(batches) for j, x in enumerate(b)]),
        (dp.from_sequence(xs) | dp.enumerate() | dp.map(drop_position)
         | dp.map(add_noise, rng=True),
         [x + d(seed, epoch, 3, i) for i, x in enumerate(xs)]),
    ]


@given(n=st.integers(0, 20), size=st.integers(1, 5), seed=SEEDS, epoch=EPOCHS)
def test_element_and_stage_keys_follow_the_spec(n: int, size: int, seed: int, epoch: int) -> None:
    for pipe, expected in _keyed_cases(n, size, seed, epoch):
        assert_equal_outputs(expected, reference(pipe, epoch, seed), repr(pipe))
        naive = list(run_naive(pipe, EpochContext(seed, epoch)))
        assert_equal_outputs(expected, naive, f"run_naive: {pipe!r}")
