"""interleave by example: the cycle, blocks, keys, where it runs, errors, every executor and
a resumed run."""

from __future__ import annotations

import re
from typing import Any

import pytest

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes.testing import assert_matches_reference, assert_resumable
from datapipes.testing.functions import add_noise, double, records_of

pytestmark = pytest.mark.timeout(60)

SHARDS = {"a": ["a0", "a1", "a2"], "b": ["b0"], "c": ["c0", "c1"], "d": []}


def read(name: str) -> list[str]:
    return SHARDS[name]


def broken(name: str) -> Any:
    if name == "b":
        raise OSError("b is corrupt")
    return iter(SHARDS[name])


def fails_midway(name: str) -> Any:
    yield from SHARDS[name][:1]
    if name == "a":
        raise OSError("a is truncated")
    yield from SHARDS[name][1:]


NAMES = dp.from_sequence(["a", "b", "c", "d"])


@pytest.mark.parametrize(
    ("cycle", "block", "expected"),
    [
        (1, 1, ["a0", "a1", "a2", "b0", "c0", "c1"]),  # one at a time: flat_map
        (2, 1, ["a0", "b0", "a1", "a2", "c0", "c1"]),  # b ends: c takes its slot, next round
        (3, 1, ["a0", "b0", "c0", "a1", "c1", "a2"]),
        (4, 2, ["a0", "a1", "b0", "c0", "c1", "a2"]),
        (9, 9, ["a0", "a1", "a2", "b0", "c0", "c1"]),
    ],
)
def test_the_cycle_takes_blocks_in_turn(cycle: int, block: int, expected: list[str]) -> None:
    assert list(NAMES | dp.interleave(read, cycle_length=cycle, block_length=block)) == expected


def test_keys_are_the_input_key_and_the_position_in_its_stream() -> None:
    stage = dp.interleave(read, cycle_length=2).stages[0]
    items = list(stage.stream(enumerate(["a", "b", "c", "d"]), EpochContext(0, 0), 1))
    assert items == [((0, 0), "a0"), ((1, 0), "b0"), ((0, 1), "a1"), ((0, 2), "a2"),
                     ((2, 0), "c0"), ((2, 1), "c1")]
    # so draws after it follow the record, whatever the cycle
    noisy = [dp.interleave(read, cycle_length=c) | dp.map(lambda s: s) for c in (1, 3)]
    a, b = (sorted(NAMES | n | dp.map(len) | dp.map(add_noise, rng=True)) for n in noisy)
    assert a == b


def test_it_runs_in_the_head_right_after_the_source_and_index_stages() -> None:
    head = dp.from_sequence(range(8)) | dp.shuffle() | dp.interleave(records_of, cycle_length=3)
    text = (head | dp.map(double)).explain()
    assert re.search(r"from_sequence\(range\(0, 8\)\)\s+main\s+fetched here for interleave", text)
    assert re.search(r"interleave\(records_of, cycle_length=3\)\s+main\s+reads", text)
    assert re.search(r"map\(double\)\s+workers", text)
    tail = dp.from_sequence(range(8)) | dp.map(double) | dp.interleave(records_of, cycle_length=3)
    assert re.search(r"interleave\(records_of, cycle_length=3\)\s+tail\s+mixes", tail.explain())


def test_errors_name_the_stage_and_the_input_and_skip_drops_the_input() -> None:
    with pytest.raises(OSError, match="b is corrupt") as caught:
        list(NAMES | dp.interleave(broken, cycle_length=2))
    assert "interleave(broken, cycle_length=2)" in caught.value.__notes__[0]
    assert "key 1" in caught.value.__notes__[0]
    pipe = NAMES | dp.interleave(fails_midway, cycle_length=2)
    with pipe.compile(on_error="skip") as loader:
        out = list(loader)
        assert out == ["a0", "b0", "c0", "c1"]  # a's rest is lost, the others go on
        assert [(s.key, s.error) for s in loader.skipped] == [(0, "OSError")]


def test_refused_arguments_and_a_shuffle_after_it() -> None:
    with pytest.raises(TypeError, match="needs random access"):
        NAMES | dp.interleave(read, cycle_length=2) | dp.shuffle()
    assert len(list(dp.from_sequence([]) | dp.interleave(read, cycle_length=2))) == 0
    with pytest.raises(TypeError, match="not known without iterating"):
        len(NAMES | dp.interleave(read, cycle_length=2))


PIPES = [
    dp.from_sequence(range(30)) | dp.shuffle() | dp.interleave(records_of, cycle_length=3)
    | dp.map(add_noise, rng=True) | dp.batch(4),
    dp.from_iterable(range(30)) | dp.interleave(records_of, cycle_length=2, block_length=2)
    | dp.shuffle(buffer=5) | dp.map(double),
    dp.from_sequence(range(30)) | dp.map(double) | dp.interleave(records_of, cycle_length=4)
    | dp.batch(3),
    dp.from_sequence(range(30)) | dp.split([0.5, 0.5], 0)
    | dp.interleave(records_of, cycle_length=2) | dp.take(9) | dp.enumerate(),
]


@pytest.mark.parametrize("pipe", PIPES, ids=range(len(PIPES)))
@pytest.mark.parametrize(("workers", "backend"), [(0, "process"), (2, "process"), (2, "thread")])
def test_every_executor_and_a_resumed_run_match_the_reference(
    pipe: dp.Pipe, workers: int, backend: str
) -> None:
    assert_matches_reference(pipe, workers=workers, backend=backend)
    assert_resumable(pipe, workers=workers, backend=backend)


def test_two_interleaves_after_a_random_access_source_plan() -> None:
    # once: the second went to the index head, which cannot run it (AttributeError)
    from datapipes.testing import assert_matches_reference, reference
    from datapipes.testing.functions import records_of

    pipe = (dp.from_sequence([1, 2]) | dp.interleave(records_of, cycle_length=1)
            | dp.interleave(records_of, cycle_length=1))
    assert list(pipe) == reference(pipe)
    assert_matches_reference(pipe, workers=2, backend="thread")
