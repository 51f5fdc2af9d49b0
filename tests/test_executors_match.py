"""The central promise: every executor yields exactly the reference (DESIGN §3)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datapipes as dp
from datapipes.testing import assert_matches_reference, pipes

# Process pools cost a fork per example: fewer examples, each over many configurations.
_settings = settings(max_examples=15, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.timeout(300)
@_settings
@given(pipe=pipes(), prefetch=st.sampled_from([1, 2, 4]))
def test_thread_and_inline_executors_match_the_reference(pipe: dp.Pipe, prefetch: int) -> None:
    for workers in (0, 1, 2, 3):
        assert_matches_reference(pipe, workers=workers, backend="thread", prefetch=prefetch)


@pytest.mark.timeout(300)
@_settings
@given(pipe=pipes(), workers=st.sampled_from([1, 2, 3]), prefetch=st.sampled_from([1, 2, 4]))
def test_process_executor_matches_the_reference(pipe: dp.Pipe, workers: int, prefetch: int) -> None:
    assert_matches_reference(pipe, workers=workers, backend="process", prefetch=prefetch)


@pytest.mark.timeout(300)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipe=pipes(), backend=st.sampled_from(["thread", "process"]))
def test_unordered_yields_the_same_multiset(pipe: dp.Pipe, backend: str) -> None:
    assert_matches_reference(pipe, workers=2, backend=backend, ordered=False)


@pytest.mark.timeout(300)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipe=pipes(max_stages=4), prefetch=st.sampled_from([1, 2, 4]))
def test_spawned_workers_match_the_reference(pipe: dp.Pipe, prefetch: int) -> None:
    # a spawned worker starts in a fraction of a second: it imports neither torch (unless
    # the pipe does) nor the main module
    assert_matches_reference(pipe, workers=2, start_method="spawn", prefetch=prefetch)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_lambdas_and_closures_travel_to_spawned_workers(start_method: str) -> None:
    offset = 7
    pipe = (
        dp.from_sequence(range(30))
        | dp.shuffle()
        | dp.map(lambda x: x + offset)
        | dp.map(lambda x, rng: x * 1000 + int(rng.integers(100)), rng=True)
        | dp.filter(lambda x: x % 3 != 0)
        | dp.batch(4)
    )
    assert_matches_reference(pipe, workers=2, start_method=start_method)


@pytest.mark.timeout(300)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipe=pipes(), backend=st.sampled_from(["thread", "process"]))
def test_skip_policy_matches_the_in_process_run(pipe: dp.Pipe, backend: str) -> None:
    # With on_error="skip" and nothing failing, the output is still the reference.
    assert_matches_reference(pipe, workers=2, backend=backend, on_error="skip")
