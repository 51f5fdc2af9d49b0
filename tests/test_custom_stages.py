"""Stages written outside the library (examples/custom_stages.py) are first-class: planned,
run by every executor, resumed from checkpoints and property-tested like built-in ones."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes.testing import (
    StageBuilder,
    assert_matches_reference,
    assert_resumable,
    pipes,
    reference,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from custom_stages import clip_scale, sliding_window

EXECUTORS = [
    {"workers": 0},
    {"workers": 2, "backend": "thread"},
    {"workers": 2, "backend": "process", "start_method": "fork"},
    {"workers": 2, "backend": "process", "start_method": "spawn"},
    {"workers": 3, "backend": "process", "prefetch": 1},
]
EXECUTOR_IDS = ["inline", "threads", "fork", "spawn", "3-processes"]

PIPES = {
    "element": dp.from_sequence(range(40)) | dp.shuffle() | clip_scale(5, 30, scale=2)
    | dp.batch(4),
    "window": dp.from_sequence(range(30)) | dp.shuffle() | clip_scale(0, 20)
    | sliding_window(4, step=3),
    "window-stream": dp.from_iterable(list(range(25))) | sliding_window(3) | dp.take(9),
}


def test_the_stages_work_as_written() -> None:
    assert list(dp.from_sequence([-5, 3, 50]) | clip_scale(0, 10, scale=2)) == [0, 6, 20]
    assert list(dp.from_sequence(range(6)) | sliding_window(3, step=2)) == [(0, 1, 2), (2, 3, 4)]
    assert repr(clip_scale(0, 10)) == "clip_scale(low=0, high=10)"
    with pytest.raises(ValueError, match="clip_scale: low must be"):
        clip_scale(3, 1)


def test_they_are_planned_where_their_kind_runs() -> None:
    plan = PIPES["window"].explain().splitlines()
    assert "clip_scale(low=0, high=20)" in plan[3] and "workers" in plan[3]
    assert "sliding_window(size=4, step=3)" in plan[4] and "tail" in plan[4]
    # the map stage keeps random access: a full shuffle may follow it
    assert list(dp.from_sequence(range(5)) | clip_scale(0, 9) | dp.shuffle())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", PIPES)
@pytest.mark.parametrize("executor", EXECUTORS, ids=EXECUTOR_IDS)
def test_every_executor_equals_the_reference(name: str, executor: dict[str, Any]) -> None:
    assert_matches_reference(PIPES[name], epochs=2, **executor)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", PIPES)
def test_they_resume_from_any_checkpoint(name: str) -> None:
    assert_resumable(PIPES[name], at=[0, 2, 5], workers=2, backend="thread",
                     resume_with={"workers": 0})


def _clip(draw: Any) -> dp.Pipe[Any]:
    low = draw(st.integers(-100, 100))
    return clip_scale(low, low + draw(st.integers(0, 200)), scale=draw(st.integers(-3, 3)))


def _window(draw: Any) -> dp.Pipe[Any]:
    size, step = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    return sliding_window(size, step=step) | dp.map(sum)  # back to ints for what follows


MINE = (
    StageBuilder("clip_scale", _clip, keeps_random_access=True),
    StageBuilder("sliding_window", _window, cost=2),
)


@pytest.mark.timeout(300)
@settings(max_examples=30)
@given(pipe=pipes(extra=MINE, max_stages=5), workers=st.integers(1, 3))
def test_drawn_pipes_with_them_match_the_reference(pipe: dp.Pipe[Any], workers: int) -> None:
    assert_matches_reference(pipe, epochs=1, workers=workers, backend="thread")


def test_the_strategies_draw_them() -> None:
    from hypothesis import find

    found = find(pipes(extra=MINE, stages=["clip_scale", "sliding_window"]),
                 lambda p: "sliding_window" in repr(p) and "clip_scale" in repr(p))
    assert reference(found) == list(found)
