"""What a new user types: any integer type, options that only make sense together, a bare
function where a stage belongs, and one loader used from two threads."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import psutil
import pytest

import datapipes as dp
from datapipes.options import LoaderOptions
from datapipes.testing.functions import double, is_even

I = np.int64  # noqa: E741 (a numpy integer, as a user's config or array gives them)

INTEGRAL_STAGES = [
    (lambda: dp.batch(I(4)), lambda: dp.batch(4)),
    (lambda: dp.batch(np.int32(4), drop_last=True), lambda: dp.batch(4, drop_last=True)),
    (lambda: dp.take(I(3)), lambda: dp.take(3)),
    (lambda: dp.skip(np.uint8(3)), lambda: dp.skip(3)),
    (lambda: dp.shuffle(buffer=I(5)), lambda: dp.shuffle(buffer=5)),
    (lambda: dp.prefetch(I(2)), lambda: dp.prefetch(2)),
    (lambda: dp.sample(I(4)), lambda: dp.sample(4)),
    (lambda: dp.split([I(6), I(4)], I(1)), lambda: dp.split([6, 4], 1)),
    (lambda: dp.split([0.5, 0.5], 0, seed=I(3)), lambda: dp.split([0.5, 0.5], 0, seed=3)),
    (lambda: dp.shard_by_rank(rank=I(1), world_size=I(3)),
     lambda: dp.shard_by_rank(rank=1, world_size=3)),
    (lambda: dp.parallel_map(double, workers=I(2), backend="thread"),
     lambda: dp.parallel_map(double, workers=2, backend="thread")),
    (lambda: dp.interleave(range, cycle_length=I(2), block_length=I(1)),
     lambda: dp.interleave(range, cycle_length=2)),
]


@pytest.mark.parametrize(("numpy_made", "int_made"), INTEGRAL_STAGES)
def test_every_integer_parameter_takes_any_integral(numpy_made: Any, int_made: Any) -> None:
    stage = numpy_made()
    assert stage == int_made()
    assert repr(stage) == repr(int_made())  # stored as a plain int


def test_bools_are_still_not_integers() -> None:
    with pytest.raises(TypeError, match="batch: size"):
        dp.batch(np.bool_(True))  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_compile_takes_any_integral() -> None:
    pipe = dp.from_sequence(range(10)) | dp.shuffle() | dp.batch(3)
    with pipe.compile(workers=I(2), prefetch=I(3), seed=I(7), backend="thread",
                      timeout=np.float32(30), rank=I(0), world_size=I(1)) as loader:
        assert (loader.workers, loader.prefetch, loader.seed) == (2, 3, 7)
        assert type(loader.workers) is int and type(loader.seed) is int
        loader.set_epoch(I(2))
        assert list(loader) == list(pipe.iter(epoch=2, seed=7))
    assert list(pipe.iter(epoch=I(1), seed=I(7))) == list(pipe.iter(epoch=1, seed=7))


def test_rank_without_world_size_is_refused_naming_it() -> None:
    pipe = dp.from_sequence(range(10))
    with pytest.raises(ValueError, match=r"^compile: rank=0 needs world_size="):
        pipe.compile(rank=0)


def test_even_needs_the_ranks() -> None:
    with pytest.raises(ValueError, match=r"^compile: even= applies"):
        dp.from_sequence(range(10)).compile(even="pad")
    with pytest.raises(ValueError, match=r"^compile: even must be"):
        dp.from_sequence(range(10)).compile(rank=0, world_size=2, even="some")


@pytest.mark.parametrize(
    ("even", "shares"),
    [
        ("drop", [[0, 3, 6], [1, 4, 7], [2, 5, 8]]),
        ("pad", [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]),
        (None, [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]),
    ],
)
def test_compile_even_chooses_how_shares_are_made_equal(even: Any, shares: Any) -> None:
    pipe = dp.from_sequence(range(10)) | dp.map(double)
    for rank, share in enumerate(shares):
        with pipe.compile(rank=rank, world_size=3, even=even) as loader:
            assert list(loader) == [2 * x for x in share]
            assert len(loader) == len(share)


def test_options_are_one_checked_value() -> None:
    options = LoaderOptions.check(workers=I(2), backend="thread")
    assert options.workers == 2 and options.backend == "thread"
    with pytest.raises(TypeError, match="unexpected option"):
        LoaderOptions.check(worker=2)


@pytest.mark.parametrize(
    "compose",
    [lambda p: p | double, lambda p: p | (lambda x: x), lambda p: double | dp.map(double)],
    ids=["named", "lambda", "left"],
)
def test_a_bare_function_in_a_pipe_says_to_wrap_it_in_map(compose: Any) -> None:
    with pytest.raises(TypeError, match=r"wrap it in a stage, e\.g\. `.*dp\.map\("):
        compose(dp.from_sequence(range(3)))


def test_other_values_in_a_pipe_are_still_a_plain_type_error() -> None:
    with pytest.raises(TypeError, match="unsupported operand"):
        dp.from_sequence(range(3)) | 3  # type: ignore[operator]


# -- 7. one loader, two threads ---------------------------------------------------------------
def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_a_second_thread_is_refused_and_nothing_is_left_behind(backend: str) -> None:
    pipe = dp.from_sequence(range(400)) | dp.map(double) | dp.filter(is_even)
    before = _fds()
    loader = pipe.compile(workers=2, backend=backend)
    first_running, second_done = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first() -> None:
        it = iter(loader)
        got = [next(it)]
        first_running.set()
        second_done.wait(60)
        results["first"] = got + list(it)

    def second() -> None:
        first_running.wait(60)
        try:
            results["second"] = list(loader)
        except RuntimeError as exc:
            results["second"] = exc
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    refused = results["second"]
    assert isinstance(refused, RuntimeError), refused
    assert "running a pass (epoch) in another thread" in str(refused)
    assert results["first"] == list(pipe.iter(epoch=0))  # the first pass was not disturbed
    assert list(loader) == list(pipe.iter(epoch=1))  # no epoch was used up by the refusal
    loader.close()
    assert psutil.Process().children(recursive=True) == []
    assert _fds() <= before


@pytest.mark.timeout(60)
def test_a_pass_held_in_one_thread_refuses_another() -> None:
    pipe = dp.from_sequence(range(20)) | dp.map(double)
    with pipe.compile(workers=2, backend="thread") as loader:
        it = iter(loader)
        next(it)
        errors: list[BaseException] = []
        t = threading.Thread(target=lambda: errors.append(_raises(lambda: iter(loader))))
        t.start()
        t.join(30)
        assert errors and isinstance(errors[0], RuntimeError)
        assert list(it) == [2 * i for i in range(1, 20)]  # the first pass goes on
        # once it is done, another thread may run the next pass
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.extend(loader))
        t.start()
        t.join(30)
        assert out == list(pipe.iter(epoch=1))


def _raises(fn: Any) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:
        return exc
    return None
