"""``loader.stats()`` and ``compile(progress=True)``: exact counts for every executor, the
same outputs with metering on, errors still naming their stage, and the report's verdicts.

No test asserts a duration: times are only checked to be consistent with each other.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import datapipes as dp
from datapipes.stats import LoaderStats, StageStats
from datapipes.testing import assert_matches_reference
from datapipes.testing.functions import add_one, is_even, repeat_twice

pytestmark = pytest.mark.timeout(60)

#: 60 elements: the filter keeps 30, the flat_map doubles them, the tail batches by 4
PIPE = (
    dp.from_sequence(range(60)) | dp.shuffle() | dp.map(add_one) | dp.filter(is_even)
    | dp.flat_map(repeat_twice) | dp.batch(4)
)
EXECUTORS = [
    {"workers": 0},
    {"workers": 2, "backend": "thread"},
    {"workers": 2, "backend": "process"},
    {"workers": 2, "backend": "process", "start_method": "spawn"},
]


def big(i: int) -> np.ndarray:
    return np.full(8192, i, dtype=np.float32)  # 32 KiB: through shared memory


def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return x


def rows(stats: LoaderStats) -> dict[str, tuple[str, Any, Any]]:
    return {s.stage: (s.where, s.elements_in, s.elements_out) for s in stats.stages}


@pytest.mark.parametrize("options", EXECUTORS, ids=lambda o: "-".join(map(str, o.values())))
def test_stage_counts_are_exact_for_every_executor(options: dict[str, Any]) -> None:
    with PIPE.compile(stats=True, **options) as loader:
        for _ in range(2):
            assert len(list(loader)) == 15
        stats = loader.stats()
    where = "workers" if options["workers"] else "main"
    assert rows(stats) == {
        "from_sequence(range(0, 60))": (where, 120, 120),
        "shuffle()": ("main", None, None),  # index arithmetic: nothing to count per element
        "map(add_one)": (where, 120, 120),
        "filter(is_even)": (where, 120, 60),
        "flat_map(repeat_twice)": (where, 60, 120),
        "batch(4)": ("tail", 120, 30),
    }
    assert (stats.passes, stats.outputs) == (2, 30)
    assert all(s.seconds is None or s.seconds >= 0 for s in stats.stages)
    assert 0 <= stats.waiting <= stats.seconds
    if options["workers"]:
        assert stats.workers == 2 and stats.tasks > 0 and stats.worker_busy > 0
        assert stats.results_waited + stats.results_ready == stats.tasks


@pytest.mark.parametrize("workers", [0, 2])
def test_a_batch_in_the_segment_counts_what_it_takes_and_gives(workers: int) -> None:
    pipe = dp.from_sequence(range(60)) | dp.map(add_one) | dp.batch(4) | dp.collate()
    with pipe.compile(workers=workers, stats=True) as loader:
        list(loader)
        stats = loader.stats()
    where = "workers" if workers else "main"
    assert rows(stats)["batch(4)"] == (where, 60, 15)
    assert rows(stats)["collate()"] == (where, 15, 15)


@pytest.mark.parametrize("options", EXECUTORS, ids=lambda o: "-".join(map(str, o.values())))
def test_metering_does_not_change_the_outputs(options: dict[str, Any]) -> None:
    assert_matches_reference(PIPE, stats=True, **options)


def test_without_stats_the_loader_still_counts_passes_tasks_and_shared_memory() -> None:
    pipe = dp.from_sequence(range(40)) | dp.map(big) | dp.batch(4) | dp.collate()
    with pipe.compile(workers=2) as loader:
        assert loader.stats().outputs == 0
        assert loader.stats().verdict() == "nothing delivered yet"
        list(loader)
        stats = loader.stats()
    assert stats.stages == ()
    assert (stats.passes, stats.outputs, stats.tasks) == (1, 10, 10)
    assert stats.shared_bytes >= 40 * 8192 * 4  # every batch came through shared memory
    # the figures outlive the workers: closing folds them into the loader's own
    assert loader.stats() == stats


def test_an_error_in_a_metered_stage_still_names_the_stage_and_element() -> None:
    pipe = dp.from_sequence(range(10)) | dp.map(add_one) | dp.map(fail_on_7)
    with pipe.compile(stats=True, workers=2) as loader, pytest.raises(ValueError) as caught:
        list(loader)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "map(fail_on_7)" in notes and "key 6" in notes


def test_the_report_names_the_bottleneck() -> None:
    base: dict[str, Any] = {
        "passes": 1, "outputs": 100, "seconds": 10.0, "tasks": 50, "results_waited": 40,
        "results_ready": 10, "shared_bytes": 0,
    }
    slow = StageStats("map(decode)", "workers", 100, 100, 7.5)
    cases = [
        ({"waiting": 0.2, "workers": 2, "worker_busy": 5.0}, "the loader keeps up"),
        ({"waiting": 9.0, "workers": 0, "worker_busy": 0.0, "stages": (slow,)},
         "the loader is the bottleneck"),
        ({"waiting": 9.0, "workers": 2, "worker_busy": 19.0, "stages": (slow,)},
         "the workers are the bottleneck (95% busy)"),
        ({"waiting": 9.0, "workers": 4, "worker_busy": 4.0},
         "the loader is the bottleneck but its workers are only 10% busy"),
    ]
    for figures, verdict in cases:
        stats = LoaderStats(**base, **figures)
        assert stats.verdict().startswith(verdict), stats.verdict()
        assert str(stats).endswith(stats.verdict())
    assert "map(decode) (workers)" in LoaderStats(**base, **cases[2][0]).verdict()
    table = str(LoaderStats(**base, **cases[1][0]))
    assert "map(decode)" in table and "7.500" in table


def test_progress_draws_a_bar_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    sized = dp.from_sequence(range(60)) | dp.map(add_one) | dp.batch(4)
    with sized.compile(progress=True) as loader:
        for _ in range(2):
            list(loader)
    err = capsys.readouterr().err
    assert "epoch 0" in err and "epoch 1" in err and "15/15" in err
    with PIPE.compile(progress=True) as loader:  # a filter: the length is not known
        list(loader)
    err = capsys.readouterr().err
    assert "epoch 0: 15it" in err


def test_bad_flags_and_a_missing_tqdm_are_refused_at_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("stats", "progress"):
        with pytest.raises(TypeError, match=f"compile: {name} must be a bool"):
            PIPE.compile(**{name: 1})
    monkeypatch.setitem(sys.modules, "tqdm", None)  # what an uninstalled module imports as
    with pytest.raises(ImportError, match="pip install tqdm"):
        PIPE.compile(progress=True)
