"""shard_by_rank by example: positions, even counts, partitions, draws, ranks from the
environment, arguments, and where ``compile(rank=, world_size=)`` puts the shard."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes._graph import stage_by_stage as run_naive
from datapipes.stages.shard import shard_positions
from datapipes.testing import assert_partitioned, assert_resumable
from datapipes.testing.functions import (
    Replay,
    add_noise,
    double,
    is_even,
    repeat_twice,
)

EVENS = ["drop", "pad", None]


def tag_noise(x, rng):
    """``(x, a draw)``: each element carries its own draw, so shares can be matched by key."""
    return (x, int(rng.integers(1 << 30)))


def ra(n):
    return dp.from_sequence(range(n))


def stream(n):
    return dp.from_iterable(Replay(range(n)))


def shard(rank, world_size, even="drop"):
    return dp.shard_by_rank(rank=rank, world_size=world_size, even=even)


def after_source(pipe, stage):
    """``pipe`` with ``stage`` (a one-stage pipe) right after its source."""
    return dp.Pipe(pipe.stages[0], *stage.stages, *pipe.stages[1:])


def naive(pipe, epoch=0, seed=0):
    return list(run_naive(pipe, EpochContext(seed, epoch)))


def shares(pipe, world_size, *, epoch=0, **compile_kwargs):
    """Each rank's epoch, from ``pipe.compile(rank=r, world_size=world_size)``."""
    out = []
    for rank in range(world_size):
        with pipe.compile(rank=rank, world_size=world_size, **compile_kwargs) as loader:
            loader.set_epoch(epoch)
            out.append(list(loader))
    return out


# -- positions ---------------------------------------------------------------------------------
def test_positions_by_hand():
    take = {even: [list(ra(10) | shard(r, 4, even)) for r in range(4)] for even in EVENS}
    assert take["drop"] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert take["pad"] == [[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]
    assert take[None] == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]


def test_positions_with_fewer_elements_than_ranks():
    assert [list(ra(2) | shard(r, 4)) for r in range(4)] == [[], [], [], []]
    assert [list(ra(2) | shard(r, 4, "pad")) for r in range(4)] == [[0], [1], [0], [1]]
    assert [list(ra(2) | shard(r, 4, None)) for r in range(4)] == [[0], [1], [], []]
    for even in EVENS:
        assert list(ra(0) | shard(1, 3, even)) == []
        assert list(stream(0) | shard(1, 3, even)) == []


@pytest.mark.parametrize("even", EVENS)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 3, 10, 11, 12])
def test_random_access_and_stream_sources_give_the_same_shares(n, world_size, even):
    for rank in range(world_size):
        expected = shard_positions(n, rank, world_size, even).tolist()
        assert list(ra(n) | shard(rank, world_size, even)) == expected
        assert list(stream(n) | shard(rank, world_size, even)) == expected
        assert naive(ra(n) | shard(rank, world_size, even)) == expected
        assert naive(stream(n) | shard(rank, world_size, even)) == expected


@given(n=st.integers(0, 60), world_size=st.integers(1, 7), even=st.sampled_from(EVENS))
def test_shares_are_strided_positions(n, world_size, even):
    got = [list(stream(n) | shard(r, world_size, even)) for r in range(world_size)]
    assert got == [list(ra(n) | shard(r, world_size, even)) for r in range(world_size)]
    taken = Counter(x for share in got for x in share)
    if even == "pad":
        assert set(taken) == set(range(n))
        assert sum(taken.values()) == (-(-n // world_size) * world_size if n else 0)
    else:
        kept = n - n % world_size if even == "drop" else n
        assert taken == Counter(range(kept))
    for rank, share in enumerate(got):
        assert share[: n // world_size] == list(range(rank, n - n % world_size, world_size))


@pytest.mark.parametrize("even", ["drop", "pad"])
@pytest.mark.parametrize("n", [0, 1, 7, 10, 23])
def test_every_rank_gets_as_many(n, even):
    for world_size in (2, 3, 4):
        counts = [len(list(ra(n) | shard(r, world_size, even))) for r in range(world_size)]
        lengths = [len(ra(n) | shard(r, world_size, even)) for r in range(world_size)]
        expected = n // world_size if even == "drop" else -(-n // world_size)
        assert counts == lengths == [expected] * world_size
        batches = [list(ra(n) | dp.shuffle() | shard(r, world_size, even) | dp.batch(3))
                   for r in range(world_size)]
        assert len({len(b) for b in batches}) == 1


def test_even_none_keeps_the_shares_as_they_fall():
    counts = [len(list(ra(11) | shard(r, 4, None))) for r in range(4)]
    assert counts == [3, 3, 3, 2]
    assert sum(counts) == 11


# -- partitions --------------------------------------------------------------------------------
PARTITIONED = {
    "source": ra(23),
    "shuffle": ra(23) | dp.shuffle(),
    "shuffle_map_rng": ra(23) | dp.shuffle() | dp.map(add_noise, rng=True),
    "map_rng_shuffle": ra(23) | dp.map(tag_noise, rng=True) | dp.shuffle(),
    "named_shuffle": ra(23) | dp.map(double) | dp.shuffle(name="order") | dp.map(add_noise,
                                                                                 rng=True),
    "stream_buffer_shuffle": stream(23) | dp.shuffle(buffer=5) | dp.map(add_noise, rng=True),
    "take_skip": ra(30) | dp.shuffle() | dp.skip(3) | dp.take(20) | dp.map(tag_noise, rng=True),
    "arrays": dp.from_arrays(a=np.arange(23), b=np.arange(23) * 2.0) | dp.shuffle(),
}


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("name", sorted(PARTITIONED))
def test_shares_partition_the_epoch(name, world_size):
    assert_partitioned(PARTITIONED[name], world_size, epochs=3)


def test_shares_partition_the_epoch_in_workers():
    pipe = PARTITIONED["shuffle_map_rng"]
    assert_partitioned(pipe, 3, workers=2, backend="thread")
    assert_partitioned(pipe, 2, workers=2, backend="process")


def test_a_filter_after_the_shard_keeps_shares_disjoint_and_covering():
    # compile puts the shard before the filter (after the last index stage): the shares
    # stay disjoint and cover the epoch, but a filter decides per element, so the counts
    # may differ, which assert_partitioned would report
    pipe = ra(40) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.filter(is_even)
    for epoch in range(3):
        got = shares(pipe, 3, epoch=epoch)
        union = Counter(x for share in got for x in share)
        whole = Counter(pipe.iter(epoch=epoch))
        assert not union - whole
        dropped = whole - union  # only what even="drop" dropped before the filter
        assert sum(dropped.values()) <= 2
    assert len({len(share) for share in shares(pipe, 3)}) > 1  # why DDP needs care here


def test_a_filter_after_the_shard_by_hand_in_the_stream():
    # by hand after the filter, the shard works on the stream: even counts again, at the
    # price of every rank running the map and the filter on every element
    pipe = ra(40) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.filter(is_even)
    for epoch in range(2):
        got = [list((pipe | shard(r, 3)).iter(epoch=epoch)) for r in range(3)]
        whole = list(pipe.iter(epoch=epoch))
        assert [len(s) for s in got] == [len(whole) // 3] * 3
        assert got == [whole[r : len(whole) - len(whole) % 3 : 3] for r in range(3)]


def test_a_shuffle_drops_different_elements_in_different_epochs():
    pipe = ra(11) | dp.shuffle()
    dropped = set()
    for epoch in range(12):
        got = shares(pipe, 2, epoch=epoch)
        (missing,) = set(range(11)) - set(got[0]) - set(got[1])
        dropped.add(missing)
    assert len(dropped) > 1
    # without a shuffle the same element is dropped every epoch
    assert all(set(range(11)) - {*s[0], *s[1]} == {10} for s in
               (shares(ra(11), 2, epoch=e) for e in range(3)))


# -- draws -------------------------------------------------------------------------------------
DRAWN = {
    "map_after_shuffle": ra(31) | dp.shuffle() | dp.map(tag_noise, rng=True),
    "map_before_shuffle": ra(31) | dp.map(tag_noise, rng=True) | dp.shuffle(),
    "two_maps": ra(31) | dp.shuffle() | dp.map(double) | dp.map(tag_noise, rng=True),
    "stream": stream(31) | dp.shuffle(buffer=4) | dp.map(tag_noise, rng=True),
    "flat_map": ra(31) | dp.shuffle() | dp.flat_map(repeat_twice) | dp.map(tag_noise, rng=True),
}


@pytest.mark.parametrize("name", sorted(DRAWN))
def test_sharding_never_changes_an_elements_draws(name):
    pipe = DRAWN[name]
    for epoch in range(2):
        whole = list(pipe.iter(epoch=epoch, seed=5))
        by_hand = []
        for rank in range(3):
            for placed in (after_source(pipe, shard(rank, 3)), pipe | shard(rank, 3)):
                by_hand.append(list(placed.iter(epoch=epoch, seed=5)))
        compiled = shares(pipe, 3, epoch=epoch, seed=5)
        for share in [*by_hand, *compiled]:
            assert share
            # each (x, draw) of a share is one the unsharded epoch made
            assert not Counter(share) - Counter(whole)


def test_draws_in_the_shard_equal_the_unsharded_draws_by_key():
    pipe = ra(50) | dp.shuffle() | dp.map(tag_noise, rng=True)
    whole = dict(pipe.iter(epoch=1))
    assert len(whole) == 50
    for rank, share in enumerate(shares(pipe, 4, epoch=1, workers=2, backend="thread")):
        assert len(share) == 12
        for x, draw in share:
            assert draw == whole[x], (rank, x)


def test_a_stage_after_the_shard_keeps_its_stage_key():
    # the shard takes no stage key: the map is stage 2 with or without it
    sharded = ra(8) | dp.shuffle() | shard(0, 1) | dp.map(tag_noise, rng=True)
    assert list(sharded) == list(ra(8) | dp.shuffle() | dp.map(tag_noise, rng=True))
    assert sharded.keyed_stages()[3][0] == 2


@pytest.mark.parametrize("even", EVENS)
def test_naive_and_planned_agree_on_sharded_pipes(even):
    pipes = [
        ra(17) | dp.shuffle() | shard(1, 3, even) | dp.map(tag_noise, rng=True) | dp.batch(2),
        ra(17) | dp.map(tag_noise, rng=True) | dp.filter(lambda p: p[1] % 2) | shard(2, 3, even),
        stream(17) | shard(0, 3, even) | dp.shuffle(buffer=3) | dp.enumerate(),
        ra(17) | dp.shuffle() | dp.batch(2) | shard(1, 2, even) | dp.collate(),
    ]
    for pipe in pipes:
        for epoch in range(2):
            expected = naive(pipe, epoch)
            got = list(pipe.iter(epoch=epoch))
            assert json.dumps(got, default=lambda t: t.tolist()) == json.dumps(
                expected, default=lambda t: t.tolist())


# -- rank and world size from the environment -----------------------------------------------
@pytest.fixture
def no_rank_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.is_initialized()
    return monkeypatch


def test_rank_and_world_size_from_the_environment(no_rank_env):
    pipe = ra(10) | dp.shard_by_rank()
    assert list(pipe) == list(range(10))  # rank 0 of 1
    no_rank_env.setenv("RANK", "1")
    no_rank_env.setenv("WORLD_SIZE", "3")
    assert list(pipe) == [1, 4, 7]
    assert len(pipe) == 3
    assert list(ra(10) | dp.shard_by_rank(rank=0)) == [0, 3, 6]
    assert list(ra(10) | dp.shard_by_rank(world_size=2)) == [1, 3, 5, 7, 9]
    with ra(10).compile(world_size=5) as loader:
        assert repr(loader.pipe) == "from_sequence(range(0, 10)) | shard_by_rank(world_size=5)"
        assert list(loader) == [1, 6]


def test_the_environment_is_read_when_the_pipe_runs(no_rank_env):
    pipe = ra(10) | dp.shuffle() | dp.shard_by_rank()  # built before the variables are set
    whole = list(pipe)
    no_rank_env.setenv("RANK", "2")
    no_rank_env.setenv("WORLD_SIZE", "4")
    assert list(pipe) == whole[2:8:4]
    no_rank_env.setenv("RANK", "4")
    with pytest.raises(ValueError, match=r"^shard_by_rank: rank must be in \[0, world_size\)"):
        list(pipe)


def test_no_compile_rank_means_no_shard(no_rank_env):
    no_rank_env.setenv("RANK", "1")
    no_rank_env.setenv("WORLD_SIZE", "2")
    pipe = ra(6) | dp.shuffle()
    with pipe.compile() as loader:
        assert loader.pipe == pipe
        assert sorted(loader) == list(range(6))


def test_torch_distributed_wins_over_the_environment(no_rank_env):
    no_rank_env.setenv("RANK", "1")
    no_rank_env.setenv("WORLD_SIZE", "3")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1,
                            timeout=timedelta(seconds=30))
    try:
        assert list(ra(5) | dp.shard_by_rank()) == [0, 1, 2, 3, 4]  # rank 0 of 1
        assert list(ra(5) | dp.shard_by_rank(world_size=2)) == [0, 2]
    finally:
        dist.destroy_process_group()


# -- arguments, repr, pickle -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rank": 2, "world_size": 2}, ValueError, "rank must be in [0, world_size), got 2 of 2"),
        ({"rank": 5, "world_size": 3}, ValueError, "rank must be in"),
        ({"rank": -1}, ValueError, "rank must be in"),
        ({"world_size": 0}, ValueError, "world_size must be >= 1, got 0"),
        ({"rank": 0, "world_size": -2}, ValueError, "world_size must be >= 1"),
        ({"even": "x"}, ValueError, "even must be 'drop', 'pad' or None, got 'x'"),
        ({"even": True}, ValueError, "even must be"),
        ({"rank": True}, TypeError, "rank must be an int or None, got True"),
        ({"world_size": 2.0}, TypeError, "world_size must be an int or None, got 2.0"),
        ({"rank": "0"}, TypeError, "rank must be an int or None"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, message):
    with pytest.raises(error) as info:
        dp.shard_by_rank(**kwargs)
    assert str(info.value).startswith("shard_by_rank: ")
    assert message in str(info.value)


def test_bad_compile_ranks_raise_when_compiling():
    pipe = ra(4) | dp.shuffle()
    with pytest.raises(ValueError, match=r"^shard_by_rank: rank must be in"):
        pipe.compile(rank=2, world_size=2)
    with pytest.raises(TypeError, match=r"^shard_by_rank: rank must be an int"):
        pipe.compile(rank=True, world_size=2)


@pytest.mark.parametrize(
    "text",
    [
        "shard_by_rank()",
        "shard_by_rank(rank=1)",
        "shard_by_rank(world_size=4)",
        "shard_by_rank(rank=1, world_size=4)",
        "shard_by_rank(rank=0, world_size=2, even='pad')",
        "shard_by_rank(even=None)",
    ],
)
def test_repr_evaluates_pickles_and_compares(text):
    stage = eval(text, {"shard_by_rank": dp.shard_by_rank})
    assert repr(stage) == text
    assert eval(repr(stage), {"shard_by_rank": dp.shard_by_rank}) == stage
    assert pickle.loads(pickle.dumps(stage)) == stage
    assert hash(pickle.loads(pickle.dumps(stage))) == hash(stage)
    pipe = ra(9) | dp.shuffle() | stage
    assert pickle.loads(pickle.dumps(pipe)) == pipe
    assert repr(pipe) == f"from_sequence(range(0, 9)) | shuffle() | {text}"


def test_equality_by_value():
    assert dp.shard_by_rank(rank=1, world_size=2) == dp.shard_by_rank(rank=1, world_size=2)
    assert dp.shard_by_rank(rank=1, world_size=2) != dp.shard_by_rank(rank=0, world_size=2)
    assert dp.shard_by_rank(rank=1, world_size=2) != dp.shard_by_rank(rank=1, world_size=3)
    assert dp.shard_by_rank() != dp.shard_by_rank(even="pad")
    assert dp.shard_by_rank(even="drop") == dp.shard_by_rank()


def test_len_of_a_sharded_pipe():
    assert len(ra(10) | shard(1, 4)) == 2
    assert len(ra(10) | shard(1, 4, "pad")) == 3
    assert [len(ra(10) | shard(r, 4, None)) for r in range(4)] == [3, 3, 2, 2]
    assert len(ra(10) | dp.shuffle() | shard(0, 3) | dp.map(double) | dp.batch(2)) == 2
    with ra(10).compile(rank=1, world_size=3) as loader:
        assert len(loader) == 3
    with pytest.raises(TypeError, match="not known"):
        len(stream(10) | shard(0, 2))
    with pytest.raises(TypeError, match="not known"):
        len(ra(10) | dp.filter(is_even) | shard(0, 2))


# -- compile(rank=, world_size=) ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("pipe", "expected"),
    [
        (ra(9), "from_sequence(range(0, 9)) | shard_by_rank(rank=1, world_size=3)"),
        (ra(9) | dp.map(double) | dp.batch(2),
         "from_sequence(range(0, 9)) | shard_by_rank(rank=1, world_size=3) | map(double) "
         "| batch(2)"),
        (ra(9) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.batch(2) | dp.collate(),
         "from_sequence(range(0, 9)) | shuffle() | shard_by_rank(rank=1, world_size=3) "
         "| map(add_noise, rng=True) | batch(2) | collate()"),
        (ra(9) | dp.map(double) | dp.shuffle() | dp.take(5) | dp.filter(is_even),
         "from_sequence(range(0, 9)) | map(double) | shuffle() | take(5) "
         "| shard_by_rank(rank=1, world_size=3) | filter(is_even)"),
        (stream(9) | dp.shuffle(buffer=3) | dp.map(double),
         "from_iterable(Replay(items=(0, 1, 2, 3, 4, 5, 6, 7, 8))) | shuffle(buffer=3) "
         "| shard_by_rank(rank=1, world_size=3) | map(double)"),
        (ra(9) | dp.filter(is_even) | dp.shuffle(buffer=2),
         "from_sequence(range(0, 9)) | shard_by_rank(rank=1, world_size=3) | filter(is_even) "
         "| shuffle(buffer=2)"),
    ],
)
def test_compile_puts_the_shard_after_the_last_index_stage(pipe, expected):
    with pipe.compile(rank=1, world_size=3) as loader:
        assert repr(loader.pipe) == expected
        explained = loader.explain()
    lines = [line.strip() for line in explained.splitlines()[1:]]
    lines = lines[: next(i for i, line in enumerate(lines) if line.startswith("run:"))]
    names = [line.split("  ")[0] for line in lines]
    assert names == [repr(s) for s in loader.pipe.stages]
    (line,) = [line for line in lines if line.startswith("shard_by_rank(")]
    assert "main" in line.split()  # decided in the head, before any element is read


def test_compile_puts_the_shard_after_the_last_of_two_equal_index_stages():
    # the first skip(1) equals the last one: the shard belongs after the last
    pipe = ra(10) | dp.skip(1) | dp.shuffle(buffer=4) | dp.skip(1)
    with pipe.compile(rank=0, world_size=2) as loader:
        assert repr(loader.pipe) == (
            "from_sequence(range(0, 10)) | skip(1) | shuffle(buffer=4) | skip(1) "
            "| shard_by_rank(rank=0, world_size=2)"
        )
    assert_partitioned(pipe, 2)


@pytest.mark.parametrize("world_size", [2, 3])
def test_compile_equals_the_shard_placed_by_hand(world_size):
    head = ra(29) | dp.shuffle()
    rest = dp.map(add_noise, rng=True) | dp.batch(4)
    for rank in range(world_size):
        by_hand = head | shard(rank, world_size) | rest
        kwargs = {"rank": rank, "world_size": world_size, "seed": 3}
        with (head | rest).compile(workers=2, backend="thread", **kwargs) as loader:
            assert loader.pipe == by_hand
            for epoch in range(3):
                assert list(loader) == list(by_hand.iter(epoch=epoch, seed=3))


def test_shard_stage_with_defaults_equals_compile_with_ranks(no_rank_env):
    pipe = ra(29) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.batch(4)
    by_hand = (ra(29) | dp.shuffle() | dp.shard_by_rank() | dp.map(add_noise, rng=True)
               | dp.batch(4))
    no_rank_env.setenv("WORLD_SIZE", "3")
    for rank in range(3):
        no_rank_env.setenv("RANK", str(rank))
        with pipe.compile(rank=rank, world_size=3) as loader:
            assert list(loader) == list(by_hand)


# -- checkpoints per rank ----------------------------------------------------------------------
def test_each_rank_resumes_its_own_share_sharded_by_hand():
    for rank in range(3):
        pipe = ra(40) | dp.shuffle() | shard(rank, 3) | dp.map(add_noise, rng=True) | dp.batch(3)
        assert_resumable(pipe, at=[0, 2, 4, 6], workers=2, backend="thread",
                         resume_with={"workers": 0})


def test_each_rank_resumes_its_own_share():
    pipe = ra(40) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.batch(3)
    for rank in range(3):
        assert_resumable(pipe, at=[0, 2, 4, 6], rank=rank, world_size=3, workers=2,
                         backend="thread", resume_with={"workers": 0})


def test_a_state_names_its_rank():
    pipe = ra(20) | dp.shuffle() | dp.batch(2)
    with pipe.compile(rank=0, world_size=2) as loader:
        next(iter(loader))
        state = json.loads(json.dumps(loader.state_dict()))
    assert "shard_by_rank(rank=0, world_size=2)" in state["pipe"]
    with pipe.compile(rank=1, world_size=2) as other, pytest.raises(
        ValueError, match="taken from a different pipe"
    ):
        other.load_state_dict(state)
    with pipe.compile(rank=0, world_size=3) as other, pytest.raises(
        ValueError, match="taken from a different pipe"
    ):
        other.load_state_dict(state)
