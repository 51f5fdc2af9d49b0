"""Checkpoints: ``state_dict()`` after any output, resumed by a new loader, yields exactly the
rest of the uninterrupted run, whatever the worker count, backend or prefetch on either side;
resuming an index plan recomputes nothing already delivered; bad states are refused.

Every test that starts workers has a timeout and closes its loaders; none asserts a duration.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes.executors.cursor import make_state
from datapipes.testing import assert_equal_outputs, assert_resumable, pipes
from datapipes.testing.functions import (
    Replay,
    add_noise,
    add_one,
    is_even,
    not_multiple_of_3,
    range_of,
    repeat_twice,
)

BACKENDS = ["process", "thread"]


# -- importable functions for the pipes below ---------------------------------------------------
class CountingMap:
    """``x * 10``, counting its calls (thread-safe): how many elements were computed."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, x: int) -> int:
        with self._lock:
            self.calls += 1
        return x * 10

    def __repr__(self) -> str:
        return "CountingMap()"


def fail_on_multiple_of_7(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"bad element {x}")
    return x


def rest_of_run(pipe: dp.Pipe[Any], state: dict[str, Any], epochs: int, **kwargs: Any) -> list[Any]:
    """What a new loader yields after loading ``state``, until epoch ``epochs`` starts."""
    out: list[Any] = []
    with pipe.compile(**kwargs) as loader:
        loader.load_state_dict(state)
        while loader.epoch < epochs:
            out.extend(loader)
    return out


def run_with_states(
    pipe: dp.Pipe[Any], epochs: int = 1, **kwargs: Any
) -> tuple[list[Any], list[Any]]:
    """An uninterrupted run's outputs, and the state after each."""
    outputs, states = [], []
    with pipe.compile(**kwargs) as loader:
        for _ in range(epochs):
            for x in loader:
                outputs.append(x)
                states.append(loader.state_dict())
    return outputs, states


def count_outputs(pipe: dp.Pipe[Any], epochs: int = 2) -> int:
    return sum(len(list(pipe.iter(epoch=e))) for e in range(epochs))


# -- the property: random pipes, positions, worker counts and backends -------------------------
@st.composite
def resume_cases(draw: st.DrawFn, workers: st.SearchStrategy[int]) -> tuple[Any, ...]:
    pipe = draw(pipes(max_size=30))
    n = count_outputs(pipe)
    at = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3)) if n else [0]
    return pipe, at, draw(workers), draw(st.integers(1, 3))


@pytest.mark.timeout(120)
@settings(max_examples=50)
@given(
    case=resume_cases(st.sampled_from([0, 1, 2, 3])),
    resume_workers=st.sampled_from([0, 1, 2, 3]),
    resume_prefetch=st.integers(1, 3),
)
def test_resume_equals_uninterrupted_threads(
    case: tuple[Any, ...], resume_workers: int, resume_prefetch: int
) -> None:
    pipe, at, workers, prefetch = case
    assert_resumable(
        pipe, at=at, workers=workers, backend="thread", prefetch=prefetch,
        resume_with={"workers": resume_workers, "prefetch": resume_prefetch},
    )


@pytest.mark.timeout(120)
@settings(max_examples=10)
@given(
    case=resume_cases(st.sampled_from([1, 2])),
    resume_workers=st.sampled_from([0, 1, 2, 3]),
    resume_backend=st.sampled_from(BACKENDS),
)
def test_resume_equals_uninterrupted_processes(
    case: tuple[Any, ...], resume_workers: int, resume_backend: str
) -> None:
    pipe, at, workers, prefetch = case
    assert_resumable(
        pipe, at=at, workers=workers, backend="process", prefetch=prefetch,
        resume_with={"workers": resume_workers, "backend": resume_backend},
    )


# -- what a state is: plain data ----------------------------------------------------------------
NOISY = dp.from_sequence(range(50)) | dp.shuffle() | dp.map(add_noise, rng=True) | dp.batch(4)


@pytest.mark.timeout(60)
def test_a_state_survives_json_and_torch_save() -> None:
    outputs, states = run_with_states(NOISY, epochs=2, workers=2, backend="thread")
    for k in (0, 5, 12, 20):
        state = states[k]
        via_json = json.loads(json.dumps(state))
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        via_torch = torch.load(buffer, weights_only=True)
        assert via_json == state == via_torch
        for loaded in (via_json, via_torch):
            assert_equal_outputs(outputs[k + 1 :], rest_of_run(NOISY, loaded, epochs=2),
                                 f"after output {k}")


def test_a_state_holds_only_plain_data() -> None:
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (int, str)

    pipes_ = [NOISY, FILTER_BATCH, REPLAY, dp.from_iterable(Replay(range(9))) | dp.batch(2)]
    for pipe in pipes_:
        _, states = run_with_states(pipe)
        assert all(plain(state) for state in states), pipe
        assert {"seed", "epoch", "position", "checksum"} <= set(states[0])


# -- elastic: the state does not depend on who computed the run ---------------------------------
@pytest.mark.timeout(60)
def test_a_state_from_four_threads_resumes_anywhere() -> None:
    pipe = dp.from_sequence(range(60)) | dp.shuffle() | dp.map(add_noise, rng=True) \
        | dp.filter(is_even) | dp.batch(3)
    outputs, states = run_with_states(pipe, epochs=2, workers=4, backend="thread", prefetch=3)
    n = len(outputs)
    for k in (0, n // 4, n // 2 - 1, n // 2, n - 2):
        for kwargs in (
            {"workers": 0},
            {"workers": 2, "backend": "thread"},
            {"workers": 3, "backend": "thread", "prefetch": 1},
            {"workers": 2, "backend": "process"},
        ):
            got = rest_of_run(pipe, states[k], epochs=2, **kwargs)
            assert_equal_outputs(outputs[k + 1 :], got, f"after output {k} with {kwargs}")


# -- cost: nothing delivered is computed again --------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_resuming_an_index_plan_recomputes_nothing(workers: int) -> None:
    counter = CountingMap()
    pipe = dp.from_sequence(range(200)) | dp.shuffle() | dp.map(counter) | dp.batch(8)
    epoch = list(pipe.iter())
    outputs, states = run_with_states(pipe, workers=workers, backend="thread")
    assert outputs == epoch
    for k in (0, 3, 12, 23):
        counter.calls = 0
        with pipe.compile(workers=workers, backend="thread") as loader:
            loader.load_state_dict(states[k])
            rest = list(loader)
        assert rest == epoch[k + 1 :]
        assert counter.calls == sum(len(b) for b in rest), f"after batch {k}"


def test_resuming_then_one_batch_computes_one_batch() -> None:
    counter = CountingMap()
    pipe = dp.from_sequence(range(200)) | dp.shuffle() | dp.map(counter) | dp.batch(8)
    outputs, states = run_with_states(pipe)
    counter.calls = 0
    with pipe.compile() as loader:
        loader.load_state_dict(states[17])
        batch = next(iter(loader))
        assert counter.calls == 8
    assert batch == outputs[18]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_head_with_a_buffer_shuffle_resumes_without_rerunning_the_map(
    workers: int,
) -> None:
    counter = CountingMap()
    pipe = dp.from_iterable(Replay(range(60))) | dp.shuffle(buffer=8) | dp.map(counter) \
        | dp.batch(4)
    epochs = [list(pipe.iter(epoch=e)) for e in range(2)]
    outputs, states = run_with_states(pipe, epochs=2, workers=workers, backend="thread")
    assert outputs == epochs[0] + epochs[1]
    for k in (0, 6, 13, 14, 20):
        counter.calls = 0
        with pipe.compile(workers=workers, backend="thread") as loader:
            loader.load_state_dict(states[k])
            rest = list(loader)
        # the source has no length: after its last batch, a pass resumes with the next epoch
        expected = outputs[k + 1 : 15] if k < 14 else epochs[1] if k == 14 else outputs[k + 1 :]
        assert_equal_outputs(expected, rest, f"after batch {k}")
        assert counter.calls == sum(len(b) for b in rest), f"after batch {k}"
    assert states[0]["position"] != ["replay", 1]


# -- tail stages ----------------------------------------------------------------------------------
FILTER_BATCH = dp.from_sequence(range(40)) | dp.shuffle() | dp.filter(is_even) | dp.batch(3)
REPLAY = dp.from_sequence(range(30)) | dp.shuffle() | dp.filter(is_even) | dp.shuffle(buffer=5) \
    | dp.batch(2)
REPLAY_CASE = "replay: buffer shuffle after a filter"
TAILS: dict[str, dp.Pipe[Any]] = {
    "filter-batch-partial": FILTER_BATCH,
    "filter-batch-drop_last": dp.from_sequence(range(40)) | dp.shuffle()
    | dp.filter(not_multiple_of_3) | dp.batch(4, drop_last=True),
    "filter-skip-take-enumerate": dp.from_sequence(range(50)) | dp.shuffle()
    | dp.filter(not_multiple_of_3) | dp.skip(4) | dp.take(20) | dp.enumerate(),
    "filter-enumerate-batch": dp.from_sequence(range(30)) | dp.filter(is_even) | dp.enumerate()
    | dp.batch(4),
    "flat_map": dp.from_sequence(range(25)) | dp.shuffle() | dp.flat_map(range_of)
    | dp.map(add_noise, rng=True),
    "flat_map-batch": dp.from_sequence(range(25)) | dp.flat_map(repeat_twice) | dp.batch(3),
    "flat_map-take": dp.from_sequence(range(20)) | dp.flat_map(repeat_twice) | dp.take(15),
    "unbatch": dp.from_sequence(range(30)) | dp.shuffle() | dp.batch(4) | dp.unbatch()
    | dp.map(add_noise, rng=True),
    "filter-batch-unbatch-take": dp.from_sequence(range(40)) | dp.filter(is_even) | dp.batch(3)
    | dp.unbatch() | dp.take(17),
    REPLAY_CASE: REPLAY,
    "stream-filter-batch": dp.from_iterable(Replay(range(30))) | dp.filter(is_even)
    | dp.batch(4),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(TAILS))
def test_tail_stages_resume_exactly(case: str) -> None:
    pipe = TAILS[case]
    assert_resumable(pipe, at=range(count_outputs(pipe)), workers=2, backend="thread",
                     resume_with={"workers": 0})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["filter-batch-partial", "flat_map", REPLAY_CASE])
def test_tail_stages_resume_exactly_with_processes(case: str) -> None:
    pipe = TAILS[case]
    n = count_outputs(pipe)
    assert_resumable(pipe, at=[0, n // 3, n // 2, n - 1], workers=2, backend="process",
                     resume_with={"workers": 3, "backend": "thread"})


def test_only_a_buffer_shuffle_in_the_tail_replays() -> None:
    _, states = run_with_states(REPLAY)
    assert [s["position"] for s in states[:3]] == [["replay", 1], ["replay", 2], ["replay", 3]]
    for case, pipe in TAILS.items():
        if case != REPLAY_CASE:
            _, states = run_with_states(pipe)
            assert states[0]["position"][0] != "replay", case


# -- epoch boundaries ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_state_after_the_last_batch_resumes_at_the_next_epoch(workers: int) -> None:
    epochs = [list(NOISY.iter(epoch=e)) for e in range(3)]
    with NOISY.compile(workers=workers, backend="thread") as loader:
        for _ in loader:
            state = loader.state_dict()
        between = loader.state_dict()
    assert state == between
    assert (state["epoch"], state["position"]) == (1, None)
    assert rest_of_run(NOISY, state, epochs=3, workers=workers, backend="thread") \
        == epochs[1] + epochs[2]
    assert list(NOISY.iter(state=state)) == epochs[1]


@pytest.mark.timeout(60)
def test_a_state_after_the_last_output_of_an_epoch_of_unknown_length() -> None:
    pipe = FILTER_BATCH | dp.map(len)
    epochs = [list(pipe.iter(epoch=e)) for e in range(3)]
    with pipe.compile(workers=2, backend="thread") as loader:
        for _ in loader:
            state = loader.state_dict()
    assert state["epoch"] == 0  # the loader cannot know that the epoch ended
    assert list(pipe.iter(state=state)) == []
    with pipe.compile(workers=2, backend="thread") as resumed:
        resumed.load_state_dict(state)
        assert list(resumed) == epochs[1]  # the next epoch, in the same pass
        assert resumed.epoch == 2
        assert list(resumed) == epochs[2]


@pytest.mark.timeout(60)
def test_a_state_before_the_first_output() -> None:
    epochs = [list(NOISY.iter(epoch=e)) for e in range(2)]
    with NOISY.compile(workers=2, backend="thread") as fresh:
        state = fresh.state_dict()
        it = iter(fresh)
        started = fresh.state_dict()  # a pass begun, nothing delivered yet
        assert next(it) == epochs[0][0]
    assert (state["epoch"], state["position"], started["position"]) == (0, None, None)
    assert rest_of_run(NOISY, state, epochs=2) == epochs[0] + epochs[1]
    assert list(NOISY.iter(state=state)) == epochs[0]
    with NOISY.compile() as loader:
        loader.set_epoch(7)
        state = loader.state_dict()
    assert state["epoch"] == 7
    assert rest_of_run(NOISY, state, epochs=8) == list(NOISY.iter(epoch=7))


def test_a_loaded_state_can_be_saved_again_before_the_pass() -> None:
    outputs, states = run_with_states(FILTER_BATCH, epochs=2)
    with FILTER_BATCH.compile() as loader:
        loader.load_state_dict(states[4])
        assert loader.state_dict() == states[4]
        assert list(loader) == outputs[5 : len(outputs) // 2]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["filter-batch-partial", "flat_map-take", REPLAY_CASE])
def test_a_resumed_run_resumes_again(case: str) -> None:
    pipe = TAILS[case]
    expected = [x for e in range(3) for x in pipe.iter(epoch=e)]

    def passes(loader: dp.Loader) -> Any:
        while True:
            yield from loader

    with pipe.compile() as loader:
        it = passes(loader)
        got = [next(it) for _ in range(2)]
        state = loader.state_dict()
    for step in range(6):  # 3 outputs at a time, across the epoch boundaries
        with pipe.compile(workers=step % 3, backend="thread") as loader:
            loader.load_state_dict(state)
            it = passes(loader)
            got += [next(it) for _ in range(3)]
            state = loader.state_dict()
    assert_equal_outputs(expected[: len(got)], got, case)


@pytest.mark.timeout(60)
def test_a_state_taken_after_leaving_the_loop_says_what_the_loader_does_next() -> None:
    # leaving a ``for`` loop ends the loader's epoch (docs/loader.md): its next pass is the
    # next epoch, and so is the state's
    with NOISY.compile(workers=2, backend="thread") as loader:
        for b, _ in enumerate(loader):
            if b == 3:
                inside = loader.state_dict()
                break
        after = loader.state_dict()
        next_pass = list(loader)
    assert (inside["epoch"], after["epoch"], after["position"]) == (0, 1, None)
    assert rest_of_run(NOISY, after, epochs=2) == next_pass == list(NOISY.iter(epoch=1))
    assert rest_of_run(NOISY, inside, epochs=1) == list(NOISY.iter())[4:]


# -- seeds ---------------------------------------------------------------------------------------
def test_the_recorded_seed_wins() -> None:
    outputs, states = run_with_states(NOISY, epochs=2, seed=5)
    assert outputs[:13] != list(NOISY.iter(seed=9))[:13]
    with NOISY.compile(seed=9) as loader:
        loader.load_state_dict(states[3])
        assert loader.seed == 5
        assert list(loader) + list(loader) == outputs[4:]
    assert list(NOISY.iter(seed=9, epoch=3, state=states[3])) == outputs[4 : len(outputs) // 2]


def test_a_run_with_seed_none_resumes_reproducibly() -> None:
    outputs, states = run_with_states(NOISY, epochs=2, seed=None)
    seed = states[0]["seed"]
    assert outputs == list(NOISY.iter(epoch=0, seed=seed)) + list(NOISY.iter(epoch=1, seed=seed))
    for k in (2, 15):
        with NOISY.compile(seed=None) as loader:
            loader.load_state_dict(states[k])
            assert loader.seed == seed
            rest = list(loader) + (list(loader) if loader.epoch < 2 else [])
        assert rest == outputs[k + 1 :]


# -- errors ----------------------------------------------------------------------------------------
def a_state(pipe: dp.Pipe[Any] = FILTER_BATCH, k: int = 3) -> dict[str, Any]:
    return run_with_states(pipe)[1][k]


def test_a_state_of_another_pipe_is_refused_naming_both() -> None:
    other = dp.from_sequence(range(41)) | dp.shuffle() | dp.filter(is_even) | dp.batch(3)
    with other.compile() as loader, pytest.raises(ValueError, match="different pipe") as info:
        loader.load_state_dict(a_state())
    assert repr(FILTER_BATCH) in str(info.value) and repr(other) in str(info.value)
    with pytest.raises(ValueError, match="different pipe"):
        other.iter(state=a_state())
    same_repr_other_data = dp.from_sequence([0] * 40) | dp.shuffle() | dp.filter(is_even) \
        | dp.batch(3)
    with pytest.raises(ValueError, match="different pipe"):
        same_repr_other_data.compile().load_state_dict(a_state())


@pytest.mark.parametrize(
    "edit",
    [
        {"epoch": 1},
        {"seed": 1},
        {"delivered": 0},
        {"position": [[10, 0], 0]},
        {"pipe": "from_sequence(range(0, 40))"},
    ],
)
def test_an_edited_state_is_refused(edit: dict[str, Any]) -> None:
    state = {**a_state(), **edit}
    with FILTER_BATCH.compile() as loader, pytest.raises(ValueError, match="corrupted"):
        loader.load_state_dict(state)
    with pytest.raises(ValueError, match="corrupted"):
        FILTER_BATCH.iter(state=state)


def test_a_malformed_state_is_refused() -> None:
    state = a_state()
    loader = FILTER_BATCH.compile()
    with pytest.raises(ValueError, match="expected the dict"):
        loader.load_state_dict([state])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected the dict"):
        loader.load_state_dict(json.dumps(state))  # type: ignore[arg-type]
    for key in state:
        with pytest.raises(ValueError, match="not a datapipes state"):
            loader.load_state_dict({k: v for k, v in state.items() if k != key})
    with pytest.raises(ValueError, match="not a datapipes state"):
        loader.load_state_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match="corrupted"):
        loader.load_state_dict({**state, "position": state["position"][0]})  # truncated
    # well formed, correctly checksummed, but not a position of this pipe
    seed, epoch, delivered = state["seed"], state["epoch"], state["delivered"]
    for position in (state["position"][0], [[1, 2, 3], 0], [[1, -1], 0], [[1, 0], "0"],
                     [[1, 0], True], ["replay", -1], 5):
        forged = make_state(FILTER_BATCH, seed, epoch, position, delivered)
        with pytest.raises(ValueError, match="does not fit"):
            loader.load_state_dict(forged)
    for field in ("seed", "epoch", "delivered"):
        values = {"seed": seed, "epoch": epoch, "delivered": delivered, field: -1}
        forged = make_state(FILTER_BATCH, values["seed"], values["epoch"], state["position"],
                            values["delivered"])
        with pytest.raises(ValueError, match=f"{field} must be"):
            loader.load_state_dict(forged)
    assert list(loader) == list(FILTER_BATCH.iter())  # the loader is unharmed
    loader.close()


@pytest.mark.timeout(60)
def test_an_unordered_loader_has_no_state() -> None:
    pipe = dp.from_sequence(range(20)) | dp.map(add_one)
    with pipe.compile(workers=2, backend="thread", ordered=False) as loader:
        next(iter(loader))
        with pytest.raises(ValueError, match="ordered=False"):
            loader.state_dict()
    # where the order is kept anyway (a batch after a filter), the state exists
    assert_resumable(FILTER_BATCH, at=[2], workers=2, backend="thread", ordered=False)


# -- on_error="skip" ---------------------------------------------------------------------------
SKIPPING = dp.from_sequence(range(40)) | dp.shuffle() | dp.map(fail_on_multiple_of_7) \
    | dp.batch(4)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_that_skips_errors_resumes_exactly(workers: int) -> None:
    kwargs = {"on_error": "skip", "workers": workers, "backend": "thread"}
    outputs, states = run_with_states(SKIPPING, epochs=2, **kwargs)
    assert sum(map(len, outputs)) == 2 * (40 - 6)
    for k in range(len(outputs) - 1):
        for resume_workers in (0, 3):
            got = rest_of_run(SKIPPING, states[k], epochs=2,
                              **{**kwargs, "workers": resume_workers})
            assert_equal_outputs(outputs[k + 1 :], got, f"after output {k}")


@pytest.mark.timeout(60)
def test_assert_resumable_with_on_error_skip() -> None:
    # also checks pipe.iter(state=...) on each state
    assert_resumable(SKIPPING, at=[0, 3, 9], on_error="skip", workers=2, backend="thread",
                     resume_with={"workers": 0})


# -- formats and positions checked at load ------------------------------------------------------
BATCHED = dp.from_sequence(range(10)) | dp.shuffle() | dp.map(add_one) | dp.batch(4)


def _rechecksummed(state: dict[str, Any], **edit: Any) -> dict[str, Any]:
    """``state`` edited and given a matching checksum: what a careful forger writes."""
    from datapipes.executors.cursor import _checksum

    body = {k: v for k, v in {**state, **edit}.items() if k != "checksum"}
    return {**body, "checksum": _checksum(body)}


def _first_state(pipe: dp.Pipe[Any]) -> tuple[Any, dict[str, Any]]:
    with pipe.compile() as loader:
        it = iter(loader)
        first = next(it)
        return first, loader.state_dict()


def test_a_state_of_format_1_without_on_error_still_loads() -> None:
    first, state = _first_state(BATCHED)
    old = _rechecksummed({k: v for k, v in state.items() if k != "on_error"}, format=1)
    with BATCHED.compile() as loader:
        loader.load_state_dict(old)
        assert_equal_outputs([first, *loader], list(BATCHED.iter()))
    with BATCHED.compile(on_error="skip") as loader, pytest.raises(ValueError, match="on_error"):
        loader.load_state_dict(old)  # format 1 without on_error was always "raise"


def test_a_state_of_format_1_with_on_error_still_loads() -> None:
    first, state = _first_state(BATCHED)
    with BATCHED.compile() as loader:
        loader.load_state_dict(_rechecksummed(state, format=1))
        assert_equal_outputs([first, *loader], list(BATCHED.iter()))


@pytest.mark.parametrize("format_", [3, 0, "2"])
def test_an_unknown_format_is_refused_naming_both(format_: Any) -> None:
    _, state = _first_state(BATCHED)
    forged = _rechecksummed({**state, "extra": "a newer key"}, format=format_)
    with BATCHED.compile() as loader, pytest.raises(ValueError) as info:
        loader.load_state_dict(forged)
    assert f"format {format_!r}" in str(info.value)
    assert "reads formats 1 and 2 (it writes 2)" in str(info.value)


@pytest.mark.parametrize(
    ("pipe", "edit", "match"),
    [
        (BATCHED, {"position": [4, 0]}, "past the end of the epoch"),  # 3 batches
        (BATCHED, {"position": [3, 1]}, "past the end of the epoch"),
        (BATCHED, {"delivered": 4}, "outputs were delivered"),
        (dp.from_sequence(range(10)) | dp.filter(is_even) | dp.take(3),
         {"position": [[5, 0], 4]}, r"take\(3\) is at 4"),
        (dp.from_sequence(range(10)) | dp.batch(2) | dp.shuffle(buffer=3),
         {"position": ["replay", 7]}, "past the end"),
    ],
    ids=["unit", "output", "delivered", "take", "replay"],
)
def test_a_position_past_the_end_is_refused_even_with_a_new_checksum(
    pipe: dp.Pipe[Any], edit: dict[str, Any], match: str
) -> None:
    _, state = _first_state(pipe)
    forged = _rechecksummed(state, **edit)
    with pipe.compile() as loader, pytest.raises(ValueError, match=match):
        loader.load_state_dict(forged)
    with pytest.raises(ValueError, match=match):
        pipe.iter(state=forged)
    # the last real position, the end of the epoch, still loads
    end = _rechecksummed(state, position=[3, 0], delivered=3)
    if pipe is BATCHED:
        with pipe.compile() as loader:
            loader.load_state_dict(end)
            assert list(loader) == list(pipe.iter(epoch=1))


def test_an_epoch_out_of_range_is_refused() -> None:
    _, state = _first_state(BATCHED)
    with BATCHED.compile() as loader, pytest.raises(ValueError, match="epoch"):
        loader.load_state_dict(_rechecksummed(state, epoch=2**40))
