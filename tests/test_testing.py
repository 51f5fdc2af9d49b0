"""Tests of the testing toolkit itself: its assertions fail when they should, and its
strategies draw only valid, runnable pipes that cover every stage in their tables."""

import inspect
import itertools
import pickle
import random
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import datapipes as dp
import datapipes._seeds
import datapipes.testing as dpt
from datapipes import Pipe
from datapipes.testing import (
    assert_deterministic,
    assert_equal_elements,
    assert_equal_outputs,
    fragments,
    has_randomness,
    pipes,
    reference,
)
from datapipes.testing import functions as fns
from datapipes.testing.strategies import SOURCES, STAGES, TERMINALS

_calls = itertools.count()


def global_jitter(x: int) -> int:
    """Non-deterministic on purpose: uses the global ``random`` module."""
    return x + random.randrange(1_000_000)


def counted(x: int) -> int:
    """Non-deterministic on purpose: every call gives a new value."""
    return x + next(_calls)


# -- assert_deterministic ----------------------------------------------------------------------
@given(p=pipes())
def test_assert_deterministic_passes_on_drawn_pipes(p: Pipe[Any]) -> None:
    assert_deterministic(p, epochs=3)


@pytest.mark.parametrize(
    "pipe",
    [
        dp.from_sequence(range(30)) | dp.shuffle() | dp.batch(4) | dp.collate(),
        dp.from_sequence(range(30)) | dp.map(fns.add_noise, rng=True) | dp.filter(fns.is_even),
        dp.from_iterable(list(range(30))) | dp.shuffle(buffer=5),
        dp.from_arrays(x=np.arange(12.0), y=torch.arange(12)) | dp.shuffle(),
        dp.from_sequence([float("nan"), 1.0]),
    ],
    ids=repr,
)
def test_assert_deterministic_passes_on_good_pipes(pipe: Pipe[Any]) -> None:
    assert_deterministic(pipe, epochs=3)


def test_assert_deterministic_fails_on_the_global_random_module() -> None:
    pipe = dp.from_sequence(range(20)) | dp.map(global_jitter)
    with pytest.raises(AssertionError, match=r"not deterministic: two runs of epoch 0 .* differ"):
        assert_deterministic(pipe)


def test_assert_deterministic_names_the_position_that_differs() -> None:
    # Only the element at position 5 changes between runs.
    pipe = dp.from_sequence(range(10)) | dp.map(lambda x: counted(x) if x == 5 else x)
    with pytest.raises(AssertionError) as info:
        assert_deterministic(pipe)
    message = str(info.value)
    assert "epoch 0 (seed 0)" in message
    assert "position 5: values differ" in message


def test_assert_deterministic_checks_every_epoch() -> None:
    calls = itertools.count()

    def flaky_after_epoch_0(x: int) -> int:
        # Epoch 0 runs twice (6 calls) and agrees; from then on the values are random.
        return x + (next(calls) >= 6 and random.randrange(1_000_000))

    pipe = dp.from_sequence(range(3)) | dp.map(flaky_after_epoch_0)
    with pytest.raises(AssertionError, match="two runs of epoch 1"):
        assert_deterministic(pipe, epochs=3)


def test_expect_change() -> None:
    still = dp.from_sequence(range(20))
    shuffled = still | dp.shuffle()
    assert_deterministic(still, expect_change=False)
    assert_deterministic(shuffled, expect_change=True)
    with pytest.raises(AssertionError, match="expected a change"):
        assert_deterministic(still, expect_change=True)
    with pytest.raises(AssertionError, match=r"expected every epoch .* epoch 0 and epoch 1"):
        assert_deterministic(shuffled, expect_change=False)
    with pytest.raises(ValueError, match="epochs >= 2"):
        assert_deterministic(shuffled, epochs=1, expect_change=True)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        assert_deterministic(shuffled, epochs=0)


@pytest.mark.parametrize(
    "pipe",
    [
        # A shuffle of one element, or of one repeated value, cannot change.
        dp.from_sequence([7]) | dp.shuffle(),
        dp.from_sequence([7] * 30) | dp.shuffle(),
        dp.from_sequence([7] * 30) | dp.shuffle() | dp.enumerate(),
        # Fewer than 8 distinct elements: too likely to repeat by chance to demand a change.
        dp.from_sequence(range(3)) | dp.shuffle(),
        dp.from_sequence(range(7)) | dp.shuffle() | dp.batch(2),
        # Weak randomness: 2**7 possible outputs.
        dp.from_sequence(range(8)) | dp.shuffle(buffer=2),
        # The randomness is thrown away.
        dp.from_sequence(range(30)) | dp.shuffle() | dp.batch(30) | dp.map(fns.sum_batch),
        # Found by Hypothesis: the random sign vanishes in range_of's x % 4, yet enumerate
        # makes every element distinct.
        dp.from_sequence(range(7))
        | dp.map(fns.maybe_negate, rng=True)
        | dp.map(fns.double)
        | dp.flat_map(fns.range_of)
        | dp.enumerate(),
    ],
    ids=repr,
)
def test_by_default_a_change_is_asked_only_where_it_is_certain(pipe: Pipe[Any]) -> None:
    assert_deterministic(pipe, epochs=4)


@pytest.mark.parametrize(
    "pipe",
    [
        dp.from_sequence(range(10)) | dp.shuffle(),
        dp.from_sequence(range(40)) | dp.shuffle() | dp.skip(30),
        dp.from_sequence([1, 2] * 5 + list(range(10, 20))) | dp.shuffle() | dp.take(16),
        dp.from_sequence(range(20)) | dp.shuffle() | dp.batch(3) | dp.prefetch(2),
        dp.from_sequence(range(20)) | dp.shuffle() | dp.batch(2) | dp.batch(2, drop_last=True),
        dp.from_sequence(range(20)) | dp.shuffle() | dp.shuffle(buffer=3),
    ],
    ids=repr,
)
def test_by_default_a_visible_shuffle_must_change_across_epochs(
    pipe: Pipe[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_deterministic(pipe, epochs=3)
    # A library whose shuffles ignore the epoch is caught.
    real = datapipes._seeds.stage_rng
    monkeypatch.setattr(datapipes._seeds, "stage_rng", lambda s, e, k: real(s, 0, k))
    with pytest.raises(AssertionError, match="expected a change"):
        assert_deterministic(pipe, epochs=3)
    assert_deterministic(pipe, epochs=3, expect_change=False)


def test_reference_is_one_epoch_as_a_list() -> None:
    pipe = dp.from_sequence(range(10)) | dp.shuffle()
    assert reference(pipe, 3, 4) == list(pipe.iter(epoch=3, seed=4))
    assert reference(pipe) == list(pipe)


def test_has_randomness() -> None:
    source = dp.from_sequence(range(3))
    assert not has_randomness(source | dp.map(fns.add_one) | dp.shuffle(buffer=1))
    assert has_randomness(source | dp.shuffle(buffer=2))
    assert has_randomness(source | dp.map(fns.add_noise, rng=True))
    assert has_randomness(source | dp.shuffle(name="s"))


# -- assert_equal_elements / assert_equal_outputs ----------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        1, 1.5, float("nan"), "s", None, (1, [2.0, {"a": b"x"}]),
        np.arange(4.0), np.array([np.nan]), np.int64(3), torch.tensor([[1, 2]]),
        {"image": torch.zeros(2, 2), "label": np.array(["a", "b"])},
        np.array([{"a": 1}, None], dtype=object),
    ],
)
def test_equal_elements_pass(value: object) -> None:
    assert_equal_elements(value, pickle.loads(pickle.dumps(value)))


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (1, 2, "x: values differ: 1 != 2"),
        (1, True, "x: types differ: int != bool"),
        (1, np.int64(1), "x: types differ: int != int64"),
        ((1, 2), [1, 2], "x: types differ: tuple != list"),
        ([1, 2], [1, 2, 3], "x: lengths differ: 2 != 3"),
        ({"a": 1}, {"b": 1}, "x: keys differ: ['a'] != ['b']"),
        ({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}, "x['a'][1]['b']: values differ: 2 != 3"),
        (np.arange(3), np.arange(3.0), "x: arrays differ in dtype or shape: int64 (3,) != float64"),
        (np.arange(3), np.arange(1, 4), "x: array values differ"),
        (np.arange(3), torch.arange(3), "x: types differ: ndarray != Tensor"),
        (torch.arange(3), torch.arange(3, dtype=torch.int32), "tensors differ in dtype"),
        (torch.zeros(2), torch.ones(2), "x: tensor values differ"),
        (torch.tensor([float("nan")]), torch.tensor([0.0]), "tensor values differ"),
        (np.array([1.0]), np.array([np.nan]), "array values differ"),
        (0.5, float("nan"), "values differ: 0.5 != nan"),
        ({"t": torch.ones(2)}, {"t": torch.ones(3)}, "x['t']: tensors differ"),
    ],
)
def test_equal_elements_fail_with_the_path(a: object, b: object, message: str) -> None:
    with pytest.raises(AssertionError) as info:
        assert_equal_elements(a, b, "x")
    assert message in str(info.value)


def test_equal_outputs_names_the_first_differing_position() -> None:
    with pytest.raises(AssertionError, match=r"^run: position 1: values differ: 2 != 9$"):
        assert_equal_outputs([1, 2, 3, 4], [1, 9, 3, 7], "run")
    with pytest.raises(AssertionError, match=r"^run: position 0\[1\]: tensor values differ"):
        assert_equal_outputs([(0, torch.ones(2))], [(0, torch.zeros(2))], "run")
    with pytest.raises(AssertionError, match="lengths differ: 3 != 1; the longer goes on"):
        assert_equal_outputs([1, 2, 3], [1], "run")
    assert_equal_outputs([], [])


# -- strategies --------------------------------------------------------------------------------
@given(p=pipes())
def test_pipes_are_runnable(p: Pipe[Any]) -> None:
    assert isinstance(p, Pipe)
    assert p.is_runnable
    reference(p, 1, 3)


@given(p=pipes(terminal=False), seed=st.integers(0, 3))
def test_pipes_without_terminal_yield_python_ints(p: Pipe[Any], seed: int) -> None:
    assert all(type(x) is int for x in reference(p, seed, seed))


@given(p=pipes(max_stages=3, sources=("sequence",), terminal=False))
def test_pipes_respect_max_stages_and_sources(p: Pipe[Any]) -> None:
    assert p.stages[0].call_name == "from_sequence"
    assert len(p.stages) - 1 <= 3


@given(p=pipes(random_access=True))
def test_random_access_pipes_accept_a_full_shuffle(p: Pipe[Any]) -> None:
    assert p.stages[0].call_name in ("from_sequence", "from_arrays")
    reference(p | dp.shuffle())


@given(
    f=fragments(terminal=False),
    source=st.sampled_from([dp.from_iterable([3, 1, 4, 1, 5]), dp.from_sequence(range(9))]),
)
def test_fragments_follow_any_int_pipe(f: Pipe[Any], source: Pipe[Any]) -> None:
    assert not f.is_runnable
    assert len(f.stages) <= 4
    assert all(type(x) is int for x in reference(source | f))


@given(f=fragments(random_access=True))
def test_random_access_fragments_follow_a_random_access_pipe(f: Pipe[Any]) -> None:
    reference(dp.from_sequence(range(9)) | f)


_FIND = settings(
    max_examples=500, database=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@st.composite
def _built(draw: st.DrawFn, builder: Any) -> Pipe[Any]:
    return builder.build(draw)


@pytest.mark.parametrize("builder", STAGES + TERMINALS, ids=lambda b: b.name)
@given(data=st.data())
def test_every_stage_builder_makes_a_valid_fragment(builder: Any, data: st.DataObject) -> None:
    fragment = data.draw(_built(builder))
    assert len(fragment.stages) == builder.cost
    out = reference(dp.from_sequence(range(-9, 9)) | fragment)
    if not builder.needs_random_access:
        out = reference(dp.from_iterable(list(range(-9, 9))) | fragment)
    if not builder.terminal:
        assert all(type(x) is int for x in out)


@pytest.mark.parametrize("builder", STAGES + TERMINALS, ids=lambda b: b.name)
def test_every_stage_in_the_tables_is_drawn(builder: Any) -> None:
    found = find(
        pipes(stages=[builder.name], sources=["sequence"]),
        lambda p: len(p.stages) > builder.cost,
        settings=_FIND,
    )
    assert len(found.stages) == 1 + builder.cost


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_is_drawn(source: str) -> None:
    found = find(pipes(sources=[source], max_stages=0), lambda p: len(reference(p)) > 2,
                 settings=_FIND)
    assert found.stages[0].call_name in {"sequence": ["from_sequence"],
                                         "arrays": ["from_arrays"],
                                         "iterable": ["from_iterable"],
                                         "several": ["mix", "concat", "zip"],
                                         "weighted": ["from_sequence"],
                                         "cached": ["from_sequence"]}[source]


def test_bad_strategy_arguments_are_refused() -> None:
    for make in [
        lambda: pipes(sources=["nope"]),
        lambda: pipes(sources=[]),
        lambda: pipes(max_stages=-1),
        lambda: pipes(max_size=-1),
        lambda: pipes(stages=["nope"]),
        lambda: pipes(random_access=True, sources=["iterable"]),
        lambda: fragments(max_stages=True),
    ]:
        with pytest.raises(InvalidArgument):
            make()


# -- functions and the public surface ---------------------------------------------------------
@pytest.mark.parametrize("name", fns.__all__)
def test_functions_are_documented_and_pickle_by_reference(name: str) -> None:
    obj = getattr(fns, name)
    assert inspect.getdoc(obj)
    assert obj.__module__ == "datapipes.testing.functions"
    assert pickle.loads(pickle.dumps(obj)) is obj


def test_every_public_function_is_exported() -> None:
    """The strategies draw pipes whose repr names these functions: ``from
    datapipes.testing.functions import *`` must bring them all back."""
    defined = {
        name for name, obj in vars(fns).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == fns.__name__
    }
    assert defined == set(fns.__all__)


def test_replay_is_a_value() -> None:
    replay = fns.Replay([1, 2])
    assert replay == fns.Replay((1, 2))
    assert list(replay()) == list(replay()) == [1, 2]
    assert eval(repr(replay), vars(fns)) == replay
    assert pickle.loads(pickle.dumps(replay)) == replay


@pytest.mark.parametrize(
    "module", [dpt, fns, dpt.strategies, dpt.assertions], ids=lambda m: m.__name__
)
def test_all_is_sorted_and_documented(module: Any) -> None:
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name
        obj = getattr(module, name)
        if callable(obj):
            assert inspect.getdoc(obj), name
