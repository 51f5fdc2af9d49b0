"""mix, concat and zip by example: the draws and their weights, the stop modes, each input's
own randomness, lengths, keys, errors, values (repr, equality, pickling), and the central
laws: every executor equals the reference, a resumed run the uninterrupted one, shards
partition the epoch."""

from __future__ import annotations

import bisect
import pickle
import re
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes._seeds import stage_rng
from datapipes.stages.mix import concat, input_seed, mix, zip
from datapipes.testing import (
    assert_deterministic,
    assert_matches_reference,
    assert_partitioned,
    assert_resumable,
    fragments,
    pipes,
    reference,
)
from datapipes.testing.functions import Replay, add_noise, double, is_even, records_of

pytestmark = pytest.mark.timeout(120)

SHUFFLED = dp.from_sequence(range(20)) | dp.shuffle() | dp.map(add_noise, rng=True)
STREAM = dp.from_iterable(Replay(range(100, 130))) | dp.filter(is_even)  # 15, length unknown


def lines() -> Any:
    yield from ["x0", "x1", "x2"]


def check(x: int) -> int:
    if x == 3:
        raise ValueError("bad 3")
    return x


def never_read() -> Any:
    raise AssertionError("an input of weight 0 was read")


class Counted:
    """A sequence that counts the elements fetched from it (in this process)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fetched = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.fetched += 1
        return i


def keyed(pipe: dp.Pipe, seed: int = 0, epoch: int = 0) -> list[tuple[Any, Any]]:
    """The source's ``(key, value)`` items, as the reference runs it."""
    ((stage_key, source),) = pipe.keyed_stages()
    return list(source.stream(iter(()), EpochContext(seed, epoch), stage_key))


# -- the draws -------------------------------------------------------------------------------


def documented_mix(inputs: list[dp.Pipe], weights: list[float], seed: int, epoch: int
                   ) -> list[Any]:
    """``mix(*inputs, weights=weights)`` (stop="first") as its docstring defines it, with
    each input run by the stage-by-stage reference under its own seed."""
    streams = [iter(reference(p, epoch, input_seed(seed, 0, i))) for i, p in enumerate(inputs)]
    sums = np.cumsum(weights).tolist()
    rng = stage_rng(seed, epoch, 0)
    out: list[Any] = []
    while True:
        for u in rng.random(1024).tolist():
            i = min(bisect.bisect_right(sums, u * sums[-1]), len(inputs) - 1)
            x = next(streams[i], None)
            if x is None:
                return out
            out.append(x)


@pytest.mark.parametrize(("seed", "epoch"), [(0, 0), (0, 1), (7, 3)])
def test_the_draws_and_each_inputs_seed_are_the_documented_ones(seed: int, epoch: int) -> None:
    inputs = [dp.from_sequence(range(3000)) | dp.shuffle() | dp.map(add_noise, rng=True),
              dp.from_iterable(range(10_000, 16_000)) | dp.filter(is_even),
              dp.from_sequence(range(500, 2000)) | dp.shuffle()]
    got = list(mix(*inputs, weights=[1, 2, 0.5]).iter(epoch=epoch, seed=seed))
    assert got == documented_mix(inputs, [1, 2, 0.5], seed, epoch)
    assert len(got) > 1024  # past the first block of draws


def test_counts_follow_the_weights() -> None:
    inputs = [dp.from_sequence([k]) for k in range(3)]
    pipe = mix(*inputs, weights=[1, 2, 5], stop="never", length=8000)
    counts = Counter(pipe)  # seed 0, epoch 0: a fixed sample
    for k, share in enumerate([1 / 8, 2 / 8, 5 / 8]):
        sd = (8000 * share * (1 - share)) ** 0.5
        assert abs(counts[k] - 8000 * share) < 4 * sd, counts
    equal = Counter(mix(*inputs, stop="never", length=9000).iter(epoch=1))
    assert all(abs(equal[k] - 3000) < 4 * (9000 * 2 / 9) ** 0.5 for k in range(3)), equal


def test_each_seed_and_epoch_gives_the_same_output_and_epochs_differ() -> None:
    pipe = mix(SHUFFLED, STREAM, stop="all")
    assert_deterministic(pipe, epochs=3, expect_change=True)
    assert list(pipe.iter(seed=1)) != list(pipe.iter(seed=0))
    # the draws alone change too: constant inputs, so only the order of inputs varies
    flags = mix(dp.from_sequence("a" * 10), dp.from_sequence("b" * 10), stop="all")
    assert_deterministic(flags, epochs=3, expect_change=True)


def test_equal_inputs_draw_their_own_shuffles() -> None:
    shuffled = dp.from_sequence(range(10)) | dp.shuffle()
    both = list(concat(shuffled, shuffled))
    first, second = both[:10], both[10:]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second
    for i, part in enumerate([first, second]):
        assert part == reference(shuffled, 0, input_seed(0, 0, i))
    pairs = list(zip(shuffled, shuffled))
    assert any(a != b for a, b in pairs)


# -- stop modes ------------------------------------------------------------------------------


def test_stop_first_ends_at_the_first_exhausted_draw_and_all_goes_on() -> None:
    small, large = dp.from_sequence(range(5)), dp.from_sequence(range(100, 200))
    first = list(mix(small, large))
    every = list(mix(small, large, stop="all"))
    assert first == every[: len(first)]  # the same draws up to the end of "first"
    assert [x for x in first if x < 100] == [0, 1, 2, 3, 4]  # small was used up
    assert len(first) < 105
    assert sorted(every) == [*range(5), *range(100, 200)]  # everything, once
    assert [x for x in every if x < 100] == [0, 1, 2, 3, 4]  # each input in its own order


def test_stop_never_restarts_inputs_with_a_new_pass_and_ends_at_length() -> None:
    small = dp.from_sequence(range(5)) | dp.shuffle()
    pipe = mix(small, dp.from_iterable(lines), stop="never", length=60)
    out = list(pipe)
    assert len(out) == len(pipe) == 60
    numbers = [x for x in out if isinstance(x, int)]
    passes = [numbers[i : i + 5] for i in range(0, len(numbers) - 4, 5)]
    assert len(passes) >= 3
    assert all(sorted(p) == list(range(5)) for p in passes)  # each pass is a permutation
    assert len({tuple(p) for p in passes}) > 1  # a new pass reshuffles
    for cycle, p in enumerate(passes):
        assert p == reference(small, 0, input_seed(0, 0, 0, cycle))
    texts = [x for x in out if isinstance(x, str)]
    assert texts[:6] == ["x0", "x1", "x2"] * 2  # a stream input starts over too
    assert list(mix(small, stop="never", length=0)) == []


def test_stop_never_refuses_an_input_with_an_empty_pass() -> None:
    pipe = mix(dp.from_sequence([1]), dp.from_sequence([]), stop="never", length=50)
    with pytest.raises(ValueError, match=r"mix: input 1 \(from_sequence\(\[\]\)\) yielded no"):
        list(pipe)
    with pipe.compile(workers=2, backend="thread") as loader, \
            pytest.raises(ValueError, match="yielded no element"):
        list(loader)


def test_an_input_of_weight_0_is_never_read() -> None:
    silent = dp.from_iterable(never_read)
    for stop in ("first", "all"):
        out = list(mix(dp.from_sequence(range(5)), silent, weights=[1, 0], stop=stop))
        assert out == [0, 1, 2, 3, 4]
    assert list(mix(silent, dp.from_sequence([7]), weights=[0, 1], stop="never", length=3)) == [
        7, 7, 7]


# -- concat and zip --------------------------------------------------------------------------


def test_concat_yields_the_inputs_in_turn() -> None:
    pipe = concat(dp.from_sequence([1, 2]), dp.from_iterable(lines), dp.from_sequence([]),
                  dp.from_sequence([3]))
    assert list(pipe) == [1, 2, "x0", "x1", "x2", 3]
    assert len(concat(dp.from_sequence(range(4)), dp.from_sequence(range(3)))) == 7
    assert list(concat(dp.from_sequence([5]))) == [5]


def test_zip_ends_with_the_shortest() -> None:
    pipe = zip(dp.from_sequence("abcd"), dp.from_iterable(lines), dp.from_sequence(range(9)))
    assert list(pipe) == [("a", "x0", 0), ("b", "x1", 1), ("c", "x2", 2)]
    assert len(zip(dp.from_sequence(range(4)), dp.from_sequence(range(3)))) == 3
    assert list(zip(dp.from_sequence([]), dp.from_sequence([1]))) == []


@pytest.mark.parametrize(
    ("pipe", "length"),
    [
        (concat(dp.from_sequence(range(4)), dp.from_iterable([1, 2])), 6),
        (concat(dp.from_sequence(range(4)), STREAM), None),
        (zip(dp.from_sequence(range(4)), dp.from_sequence(range(6)) | dp.take(2)), 2),
        (zip(dp.from_sequence(range(4)), STREAM), None),
        (mix(dp.from_sequence(range(4)), dp.from_sequence(range(6)), stop="all"), 10),
        (mix(dp.from_sequence(range(4)), dp.from_sequence(range(6))), None),  # "first"
        (mix(dp.from_sequence(range(4)), dp.from_sequence(range(6)), weights=[0, 1]), 6),
        (mix(dp.from_sequence(range(4)), STREAM, stop="all"), None),
        (mix(dp.from_sequence(range(4)), STREAM, weights=[1, 0], stop="all"), 4),
        (mix(STREAM, stop="never", length=17), 17),
    ],
    ids=repr,
)
def test_length_where_it_is_known_without_iterating(pipe: dp.Pipe, length: int | None) -> None:
    assert pipe.length() == length
    if length is not None:
        assert len(list(pipe)) == length
        assert len(pipe | dp.batch(4)) == -(-length // 4)
    else:
        with pytest.raises(TypeError, match="not known without iterating"):
            len(pipe)


def test_keys_are_positions_in_the_output() -> None:
    for pipe in (mix(SHUFFLED, STREAM, stop="all"), concat(SHUFFLED, STREAM),
                 zip(SHUFFLED, STREAM)):
        items = keyed(pipe)
        assert [k for k, _ in items] == list(range(len(items)))
        assert [x for _, x in items] == list(pipe)


# -- several kinds of inputs -----------------------------------------------------------------


def test_a_random_access_input_keeps_its_index_arithmetic() -> None:
    data = Counted(10_000)
    pipe = mix(dp.from_sequence(data) | dp.shuffle(), dp.from_iterable(lines), stop="all")
    out = list(pipe | dp.take(5))
    assert len(out) == 5
    assert data.fetched <= 5  # not the whole dataset before the first element


def test_inputs_keep_their_own_stages() -> None:
    shards = dp.from_sequence(range(8)) | dp.shuffle() | dp.interleave(records_of, cycle_length=2)
    arrays = dp.from_arrays(x=np.arange(4)) | dp.map(lambda row: int(row["x"]))
    pipe = concat(shards, arrays, STREAM | dp.batch(2) | dp.map(sum))
    assert list(pipe) == [*reference(shards, 0, input_seed(0, 0, 0)), 0, 1, 2, 3,
                          *reference(STREAM | dp.batch(2) | dp.map(sum))]
    nested = mix(pipe, zip(STREAM, SHUFFLED), stop="all")
    assert len(list(nested)) == len(list(pipe)) + 15


def test_errors_in_an_input_name_its_stage_and_the_input_and_skip_drops_the_element() -> None:
    pipe = concat(dp.from_sequence([10]), dp.from_sequence(range(6)) | dp.map(check))
    with pytest.raises(ValueError, match="bad 3") as caught:
        list(pipe)
    assert caught.value.__notes__ == [
        "datapipes: raised in stage map(check) on the element with key 3",
        "datapipes: in input 1 of concat(...)",
    ]
    with pipe.compile(on_error="skip", workers=2, backend="thread") as loader:
        assert list(loader) == [10, 0, 1, 2, 4, 5]
        assert [(s.stage, s.key) for s in loader.skipped] == [("map(check)", 3)]
    assert reference(pipe, on_error="skip") == [10, 0, 1, 2, 4, 5]


def test_it_is_a_stream_source_read_in_the_main_process() -> None:
    pipe = mix(SHUFFLED, STREAM) | dp.map(double) | dp.batch(3)
    text = pipe.explain()
    assert re.search(r"^  mix\(.*\)\s+main\s+reads the stream in order$", text, re.M)
    assert re.search(r"map\(double\)\s+workers", text)
    with pytest.raises(TypeError, match="needs random access"):
        concat(SHUFFLED) | dp.shuffle()
    assert list(concat(SHUFFLED) | dp.shuffle(buffer=4))  # a buffer shuffle is fine


# -- arguments and values --------------------------------------------------------------------

A, B = dp.from_sequence(range(3)), dp.from_sequence(range(5))

BAD_ARGUMENTS = [
    ("mix: give at least one input", ValueError, lambda: mix()),
    ("concat: give at least one input", ValueError, lambda: concat()),
    ("zip: give at least one input", ValueError, lambda: zip()),
    ("mix: input 1 must be a pipe", TypeError, lambda: mix(A, [1, 2])),  # type: ignore[arg-type]
    ("concat: input 0 must be a pipe", TypeError, lambda: concat(A.stages[0])),  # type: ignore[arg-type]
    ("zip: input 1 is a fragment", TypeError, lambda: zip(A, dp.map(double))),
    ("mix: input 0 is a fragment", TypeError, lambda: mix(dp.Pipe(), A)),
    ("mix: weights must have one weight per input", ValueError, lambda: mix(A, B, weights=[1])),
    ("mix: weights must be finite and not negative", ValueError,
     lambda: mix(A, B, weights=[1, -1])),
    ("mix: weights must be finite and not negative", ValueError,
     lambda: mix(A, B, weights=[1, float("nan")])),
    ("mix: weights must not all be 0", ValueError, lambda: mix(A, B, weights=[0, 0.0])),
    ("mix: weights must be a sequence", TypeError, lambda: mix(A, B, weights=3)),  # type: ignore[arg-type]
    ("mix: weights must be numbers", TypeError, lambda: mix(A, B, weights=["a", 1])),  # type: ignore[list-item]
    ("mix: weights must be numbers", TypeError, lambda: mix(A, B, weights=[True, 1])),
    ("mix: stop must be 'first', 'all' or 'never'", ValueError, lambda: mix(A, stop="last")),
    ("mix: stop='never' starts exhausted inputs over", ValueError, lambda: mix(A, stop="never")),
    ("mix: length must be an int >= 0", ValueError, lambda: mix(A, stop="never", length=-1)),
    ("mix: length must be an int >= 0", TypeError, lambda: mix(A, stop="never", length=2.0)),  # type: ignore[arg-type]
    ("mix: length is only for stop='never'", ValueError, lambda: mix(A, length=3)),
]


@pytest.mark.parametrize(("message", "error", "build"), BAD_ARGUMENTS,
                         ids=[m for m, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_naming_the_stage_and_parameter(
    message: str, error: type[Exception], build: Any
) -> None:
    with pytest.raises(error, match="^" + re.escape(message)):
        build()


VALUES = [
    (lambda: mix(A, B), "mix(from_sequence(range(0, 3)), from_sequence(range(0, 5)))"),
    (lambda: mix(A, B, weights=[1, 3]),
     "mix(from_sequence(range(0, 3)), from_sequence(range(0, 5)), weights=(1.0, 3.0))"),
    (lambda: mix(A, B, stop="all"),
     "mix(from_sequence(range(0, 3)), from_sequence(range(0, 5)), stop='all')"),
    (lambda: mix(A | dp.shuffle(), B, weights=np.array([2, 1]), stop="never", length=10),
     "mix(from_sequence(range(0, 3)) | shuffle(), from_sequence(range(0, 5)), "
     "weights=(2.0, 1.0), stop='never', length=10)"),
    (lambda: concat(A, B), "concat(from_sequence(range(0, 3)), from_sequence(range(0, 5)))"),
    (lambda: concat(B, A), "concat(from_sequence(range(0, 5)), from_sequence(range(0, 3)))"),
    (lambda: zip(A, B), "zip(from_sequence(range(0, 3)), from_sequence(range(0, 5)))"),
    (lambda: zip(A, B) | dp.map(sum) | dp.batch(2),
     "zip(from_sequence(range(0, 3)), from_sequence(range(0, 5))) | map(sum) | batch(2)"),
    (lambda: zip(mix(A, dp.from_iterable([1, 2])), concat(B)),
     "zip(mix(from_sequence(range(0, 3)), from_iterable([1, 2])), "
     "concat(from_sequence(range(0, 5))))"),
]


@pytest.mark.parametrize(("build", "text"), VALUES, ids=[t for _, t in VALUES])
def test_repr_reads_like_the_expression_and_values_compare_hash_and_pickle(
    build: Any, text: str
) -> None:
    pipe = build()
    assert repr(pipe) == text
    namespace = {"mix": mix, "concat": concat, "zip": zip, "sum": sum, **vars(dp)}
    namespace["zip"] = zip
    assert eval(text, namespace) == pipe
    again = build()
    assert again == pipe and hash(again) == hash(pipe) and again is not pipe
    copy = pickle.loads(pickle.dumps(pipe))
    assert copy == pipe and hash(copy) == hash(pipe)
    assert list(copy) == list(pipe)


def test_different_parameters_are_unequal() -> None:
    pipes_ = [build() for build, _ in VALUES] + [
        mix(A, B, weights=[1, 2]), mix(A, B, stop="never", length=11), zip(A), concat(A),
        mix(A, B | dp.take(2)),
    ]
    for i, a in enumerate(pipes_):
        for b in pipes_[i + 1 :]:
            assert a != b, (a, b)


# -- every executor, resuming, sharding ------------------------------------------------------

PIPES = [
    mix(SHUFFLED, STREAM, weights=[2, 1]) | dp.map(double) | dp.batch(3),
    mix(SHUFFLED, SHUFFLED, stop="all") | dp.map(add_noise, rng=True),
    mix(SHUFFLED, STREAM, stop="never", length=50) | dp.shuffle(buffer=4) | dp.batch(4),
    concat(STREAM, SHUFFLED) | dp.map(add_noise, rng=True) | dp.batch(5, drop_last=True),
    zip(SHUFFLED, STREAM) | dp.map(sum) | dp.filter(is_even) | dp.enumerate(),
]


@pytest.mark.parametrize("pipe", PIPES, ids=range(len(PIPES)))
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_every_executor_matches_the_reference(pipe: dp.Pipe, backend: str) -> None:
    assert_matches_reference(pipe, workers=2, backend=backend)


@pytest.mark.parametrize("pipe", PIPES, ids=range(len(PIPES)))
def test_a_resumed_run_equals_the_uninterrupted_one(pipe: dp.Pipe) -> None:
    assert_resumable(pipe, at=[0, 3, 11, -1], workers=2, backend="thread")
    assert_resumable(pipe, at=[5], workers=2, backend="thread", resume_with={"workers": 0})


def test_spawned_workers_match_the_reference() -> None:
    pipe = mix(SHUFFLED, STREAM, stop="all") | dp.map(add_noise, rng=True) | dp.batch(4)
    assert_matches_reference(pipe, workers=2, backend="process", start_method="spawn",
                             epochs=1)


@pytest.mark.parametrize("pipe", [mix(SHUFFLED, STREAM, stop="all") | dp.map(double),
                                  concat(SHUFFLED, STREAM), zip(STREAM, SHUFFLED)],
                         ids=range(3))
def test_shards_partition_the_epoch(pipe: dp.Pipe) -> None:
    assert_partitioned(pipe, 3)
    assert_partitioned(pipe, 2, workers=2, backend="thread")
    share = list(pipe | dp.shard_by_rank(rank=1, world_size=3))
    assert share == list(pipe)[1 : 3 * (len(list(pipe)) // 3) : 3]


# -- drawn pipes -----------------------------------------------------------------------------

INPUTS = pipes(terminal=False, max_stages=3, max_size=12)


@st.composite
def several(draw: st.DrawFn) -> dp.Pipe:
    inputs = draw(st.lists(INPUTS, min_size=1, max_size=3))
    kind = draw(st.sampled_from(["mix", "concat", "zip"]))
    if kind == "concat":
        source = concat(*inputs)
    elif kind == "zip":
        source = zip(*inputs) | dp.map(sum)
    else:
        some = st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=len(inputs),
                        max_size=len(inputs)).map(lambda w: w if sum(w) else [1.0, *w[1:]])
        weights = draw(st.none() | some)
        stop = draw(st.sampled_from(["first", "all", "never"]))
        length = draw(st.integers(0, 40)) if stop == "never" else None
        source = mix(*inputs, weights=weights, stop=stop, length=length)
    return source | draw(fragments(max_stages=2))


def runs(pipe: dp.Pipe) -> bool:
    """Whether the pipe runs (a drawn input may be empty, which stop="never" refuses)."""
    try:
        reference(pipe, 0)
        reference(pipe, 1)
    except ValueError as exc:
        if "yielded no element" in str(exc):
            return False
        raise
    return True


@pytest.mark.timeout(600)
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pipe=several())
def test_drawn_pipes_match_the_reference_with_threads(pipe: dp.Pipe) -> None:
    assume(runs(pipe))
    assert_matches_reference(pipe, workers=2, backend="thread")


@pytest.mark.timeout(600)
@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.filter_too_much])
@given(pipe=several(), at=st.lists(st.integers(-30, 30), min_size=1, max_size=3))
def test_drawn_pipes_resume(pipe: dp.Pipe, at: list[int]) -> None:
    assume(runs(pipe))
    n = max(1, sum(len(reference(pipe, e)) for e in (0, 1)))
    assert_resumable(pipe, at=[k % n for k in at], workers=2, backend="thread")
