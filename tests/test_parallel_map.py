"""``parallel_map`` and ``prefetch``: stages that run work ahead, in order, and clean up.

They are exactly ``map`` and the identity in value; only where the work runs differs.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import numpy as np
import psutil
import pytest

import datapipes as dp
from datapipes.testing import assert_equal_outputs
from datapipes.testing.functions import add_noise, add_one, is_even, maybe_negate

#: a timeout for every test here (those that start workers also carry their own)
pytestmark = pytest.mark.timeout(60)

BACKENDS = ["thread", "process"]


def square(x: int) -> int:
    return x * x


def uneven_square(x: int) -> int:
    """``x * x`` after a pause that depends on ``x``: later elements often finish first."""
    time.sleep(0.002 * (x % 3))
    total = 0
    for k in range((x % 5) * 2000):  # and some deterministic CPU work, also uneven
        total += k & 1
    return x * x + 0 * total


def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError(f"bad element {x}")
    return x


def fail_at_2(x: int) -> int:
    if x == 2:
        raise KeyError("no such record")
    return x


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def wait_until(condition: Any, what: str, deadline: float = 10.0) -> None:
    """Poll ``condition()`` until it holds, failing after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still not true after {deadline} s: {what}")
        time.sleep(0.02)


def children() -> set[int]:
    helpers = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if any(h in " ".join(p.cmdline()) for h in helpers):
                continue
        except psutil.Error:
            pass
        out.add(p.pid)
    return out


# -- parallel_map -----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_map_equals_map(backend: str, workers: int) -> None:
    source = dp.from_sequence(range(40)) | dp.shuffle()
    pipe = source | dp.parallel_map(square, workers=workers, backend=backend)
    for epoch in range(2):
        assert_equal_outputs(
            list((source | dp.map(square)).iter(epoch=epoch)), list(pipe.iter(epoch=epoch))
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_map_keeps_order_when_durations_vary(backend: str) -> None:
    pipe = dp.from_sequence(range(30)) | dp.parallel_map(uneven_square, workers=4, backend=backend)
    assert list(pipe) == [x * x for x in range(30)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_map_after_a_filter_and_on_a_stream(backend: str) -> None:
    pipe = (
        dp.from_iterable(range(30))
        | dp.filter(is_even)
        | dp.parallel_map(uneven_square, workers=3, backend=backend)
        | dp.batch(4)
    )
    assert list(pipe) == [[x * x for x in range(b, min(b + 8, 30), 2)] for b in range(0, 30, 8)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_map_with_rng_equals_map_with_rng(backend: str) -> None:
    source = dp.from_sequence(range(30)) | dp.shuffle()
    pipe = source | dp.parallel_map(add_noise, workers=3, backend=backend, rng=True)
    plain = source | dp.map(add_noise, rng=True)
    for epoch, seed in [(0, 0), (1, 0), (0, 9)]:
        assert_equal_outputs(
            list(plain.iter(epoch=epoch, seed=seed)), list(pipe.iter(epoch=epoch, seed=seed))
        )
    assert list(pipe.iter(epoch=0)) != list(pipe.iter(epoch=1))


@pytest.mark.timeout(60)
def test_parallel_map_with_a_name_draws_like_the_named_map() -> None:
    named = dp.parallel_map(maybe_negate, workers=2, rng=True, name="flip")
    plain = dp.map(maybe_negate, rng=True, name="flip")
    a = dp.from_sequence(range(1, 30)) | named
    b = dp.from_sequence(range(1, 30)) | dp.map(add_one) | dp.map(lambda x: x - 1) | plain
    assert list(a) == list(b)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_map_exceptions_carry_notes(backend: str) -> None:
    pipe = dp.from_sequence(range(20)) | dp.parallel_map(fail_on_7, workers=2, backend=backend)
    got = []
    with pytest.raises(ValueError, match="bad element 7") as info:
        for x in pipe:
            got.append(x)
    assert got == list(range(7))  # in order, up to the failing element
    extra = "" if backend == "thread" else ", backend='process'"
    stage = f"parallel_map(fail_on_7, workers=2{extra})"
    assert f"datapipes: raised in stage {stage} on the element with key 7" in info.value.__notes__
    wait_until(lambda: not threads_named("datapipes-map"), "the pool's threads have ended")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_map_lambdas(backend: str) -> None:
    offset = 3
    pipe = dp.from_sequence(range(10)) | dp.parallel_map(
        lambda x: x + offset, workers=2, backend=backend
    )
    assert list(pipe) == list(range(3, 13))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_breaking_out_early_shuts_the_pool(backend: str) -> None:
    before = children()
    pipe = dp.from_sequence(range(1000)) | dp.parallel_map(uneven_square, workers=3,
                                                           backend=backend)
    for i, x in enumerate(pipe):
        assert x == i * i
        if i == 5:
            break
    wait_until(lambda: not threads_named("datapipes-map"), "no datapipes-map threads")
    wait_until(lambda: children() <= before, "no pool processes")


@pytest.mark.timeout(60)
def test_an_abandoned_iterator_shuts_the_pool_when_closed() -> None:
    it = iter(dp.from_sequence(range(100)) | dp.parallel_map(square, workers=2))
    assert [next(it) for _ in range(3)] == [0, 1, 4]
    it.close()  # type: ignore[attr-defined]
    wait_until(lambda: not threads_named("datapipes-map"), "no datapipes-map threads")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"workers": 0}, ValueError),
        ({"workers": "2"}, TypeError),
        ({"workers": 2, "backend": "gpu"}, ValueError),
        ({"workers": 2, "rng": "yes"}, TypeError),
        ({"workers": 2, "name": ""}, TypeError),
    ],
)
def test_parallel_map_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^parallel_map: "):
        dp.parallel_map(square, **kwargs)
    with pytest.raises(TypeError, match=r"^parallel_map: "):
        dp.parallel_map(42, workers=2)  # type: ignore[arg-type]


def test_parallel_map_keeps_length_and_repr() -> None:
    pipe = dp.from_sequence(range(7)) | dp.parallel_map(square, workers=2)
    assert len(pipe) == 7
    assert repr(pipe) == "from_sequence(range(0, 7)) | parallel_map(square, workers=2)"
    assert repr(dp.parallel_map(square, workers=3, backend="process", rng=True)) == (
        "parallel_map(square, rng=True, workers=3, backend='process')"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_parallel_map_inside_a_compiled_loader(backend: str) -> None:
    pipe = (
        dp.from_sequence(range(40))
        | dp.shuffle()
        | dp.parallel_map(add_noise, workers=4, rng=True)
        | dp.batch(4)
    )
    reference = [list(pipe.iter(epoch=e)) for e in range(2)]
    assert reference[0] == list((dp.from_sequence(range(40)) | dp.shuffle()
                                 | dp.map(add_noise, rng=True) | dp.batch(4)).iter())
    with pipe.compile(workers=2, backend=backend) as loader:
        # in workers, it is a plain map: they already run in parallel
        assert re.search(r"\n  parallel_map\(add_noise, .*\) +workers +per element\n",
                         loader.explain())
        for epoch in range(2):
            assert_equal_outputs(reference[epoch], list(loader), f"epoch {epoch}")
    wait_until(lambda: not threads_named("datapipes-map"), "no datapipes-map threads")


@pytest.mark.timeout(60)
def test_parallel_map_in_a_loader_without_workers() -> None:
    pipe = dp.from_sequence(range(20)) | dp.parallel_map(uneven_square, workers=2) | dp.batch(5)
    with pipe.compile() as loader:
        for _ in range(2):
            assert list(loader) == [[x * x for x in range(b, b + 5)] for b in range(0, 20, 5)]
    wait_until(lambda: not threads_named("datapipes-map"), "no datapipes-map threads")


# -- prefetch ---------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", [1, 3, 100])
def test_prefetch_changes_no_value(n: int) -> None:
    body = dp.from_sequence(range(30)) | dp.shuffle() | dp.map(add_noise, rng=True)
    for epoch in range(2):
        assert list((body | dp.prefetch(n) | dp.batch(4)).iter(epoch=epoch)) == list(
            (body | dp.batch(4)).iter(epoch=epoch)
        )


def test_prefetch_takes_no_stage_key() -> None:
    # A transparent stage: a named-less rng map after it draws as if it were not there.
    a = dp.from_sequence(range(20)) | dp.prefetch(2) | dp.map(add_noise, rng=True)
    b = dp.from_sequence(range(20)) | dp.map(add_noise, rng=True)
    assert list(a) == list(b)
    assert len(a) == 20


@pytest.mark.timeout(60)
def test_prefetch_reraises_errors_in_order() -> None:
    pipe = dp.from_sequence(range(10)) | dp.map(fail_at_2) | dp.prefetch(4)
    got = []
    with pytest.raises(KeyError, match="no such record") as info:
        for x in pipe:
            got.append(x)
    assert got == [0, 1]
    assert any("map(fail_at_2)" in note for note in info.value.__notes__)
    wait_until(lambda: not threads_named("datapipes-prefetch"), "no prefetch thread")


@pytest.mark.timeout(60)
def test_breaking_out_of_a_prefetch_stops_its_thread() -> None:
    pipe = dp.from_sequence(range(10_000)) | dp.map(square) | dp.prefetch(8)
    for i, x in enumerate(pipe):
        assert x == i * i
        if i == 3:
            break
    wait_until(lambda: not threads_named("datapipes-prefetch"), "no prefetch thread")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_prefetch_in_a_loader_changes_no_value(backend: str, workers: int) -> None:
    pipe = dp.from_sequence(range(24)) | dp.map(square) | dp.prefetch(4) | dp.batch(6)
    with pipe.compile(workers=workers, backend=backend) as loader:
        for epoch in range(2):
            assert list(loader) == list(pipe.iter(epoch=epoch))
    wait_until(lambda: not threads_named("datapipes-prefetch"), "no prefetch thread")


def test_prefetch_bad_argument() -> None:
    for n, error in [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match=r"^prefetch: "):
            dp.prefetch(n)  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_numpy_results_through_a_process_pool() -> None:
    pipe = dp.from_sequence(range(6)) | dp.parallel_map(np.arange, workers=2, backend="process")
    assert_equal_outputs([np.arange(i) for i in range(6)], list(pipe))
