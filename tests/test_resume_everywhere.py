"""The stages for ragged data, several datasets, class balance and leakage resume exactly from
a checkpoint taken after every output of two epochs, and equal the reference under threads
and processes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import datapipes as dp
from datapipes.testing import assert_matches_reference, assert_resumable, reference
from datapipes.testing.functions import add_noise, double, is_even


def label_weight(x: int) -> float:
    return 3.0 if x % 3 == 0 else 1.0


def ramp(x: int) -> np.ndarray:
    return np.arange(x % 5 + 1, dtype=np.int64)


TOKENS = dp.from_sequence(range(24)) | dp.map(ramp)
PIPES = {
    "collate-pad": TOKENS | dp.shuffle() | dp.batch(5) | dp.collate(pad=0, mask=True),
    "bucket": dp.from_sequence(range(30)) | dp.shuffle() | dp.map(ramp)
    | dp.bucket_by_length([2, 4], [3, 2, 2]),
    "max-tokens": TOKENS | dp.batch(max_tokens=8),
    "pack": TOKENS | dp.pack(6),
    "mix": dp.mix(dp.from_sequence(range(10)) | dp.shuffle(),
                  dp.from_iterable(list(range(50, 58))), weights=[2, 1], stop="all"),
    "concat": dp.concat(dp.from_sequence(range(5)),
                        dp.from_sequence(range(9)) | dp.filter(is_even)),
    "zip": dp.zip(dp.from_sequence(range(9)) | dp.shuffle(), dp.from_sequence(range(20, 29))),
    "augment": dp.from_sequence(range(12)) | dp.shuffle() | dp.augment(add_noise) | dp.batch(2),
    "sample-fn": dp.from_sequence(range(12)) | dp.sample(10, weights=label_weight, replace=True),
    "sample-by-index": dp.from_sequence(range(12)) | dp.split([0.5, 0.5], 0)
    | dp.sample(8, weights=dp.by_source_index(dp.class_weights([i % 3 for i in range(12)])),
                replace=True),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", PIPES)
def test_resumes_after_every_output(name: str) -> None:
    pipe = PIPES[name]
    count = 2 * len(reference(pipe))  # two epochs (the same count each: a fixed pipe)
    assert_resumable(pipe, at=list(range(count)), workers=2, backend="thread",
                     resume_with={"workers": 0})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", PIPES)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_every_executor_equals_the_reference(name: str, backend: str) -> None:
    assert_matches_reference(PIPES[name], workers=2, backend=backend)


def test_the_pipes_are_not_trivial() -> None:
    lengths: dict[str, Any] = {name: len(reference(pipe)) for name, pipe in PIPES.items()}
    assert all(n >= 4 for n in lengths.values()), lengths


@pytest.mark.timeout(300)
@pytest.mark.parametrize("before", ["index", "stream"])
def test_a_cache_resumes_after_every_output_while_writing_and_reading(
    tmp_path: Any, before: str
) -> None:
    source = (dp.from_sequence(range(12)) if before == "index"
              else dp.from_iterable(list(range(12))))
    pipe = source | dp.map(double) | dp.cache(str(tmp_path / "c")) | dp.batch(3)
    count = 2 * len(reference(pipe))
    # the first epoch writes the cache, the second reads it; and once more, all read
    for _ in range(2):
        assert_resumable(pipe, at=list(range(count)), workers=2, backend="thread",
                         resume_with={"workers": 0})
