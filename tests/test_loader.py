"""The Loader: exactly the reference for every worker count, backend, prefetch and start
method; epochs; errors; explain; and cleanup of every worker, thread and shared buffer.

Every test that starts workers has a timeout and closes its loader; none asserts a duration.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psutil
import pytest
import torch

import datapipes as dp
from datapipes.executors.shared_list import MIN_LENGTH
from datapipes.testing import assert_equal_outputs
from datapipes.testing.functions import (
    Replay,
    add_noise,
    add_one,
    add_position,
    double,
    is_even,
    is_odd,
    range_of,
    repeat_twice,
)

#: a timeout for every test here (those that start workers also carry their own)
pytestmark = pytest.mark.timeout(60)

BACKENDS = ["process", "thread"]


# -- importable functions for the pipes below ---------------------------------------------------
def make_big(i: int) -> dict[str, Any]:
    """An element whose large arrays and tensors travel through shared memory, nested in
    dicts and tuples next to small ones that are pickled."""
    return {
        "image": np.full((64, 64), i, dtype=np.float32),  # 16 KiB: shared memory
        "pair": (
            torch.full((4096,), float(i), dtype=torch.float64),  # 32 KiB: shared memory
            np.arange(3, dtype=np.int16) + i,  # small: pickled
        ),
        "meta": {"codes": torch.arange(16_384, dtype=torch.int16) + i, "label": i},
        "name": f"item{i}",
    }


def uneven_work(x: int) -> int:
    """Deterministic work whose cost varies a lot from element to element."""
    total = 0
    for k in range((x % 7) * 3000):
        total += k % 3
    return x * 1000 + total % 10


def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError(f"bad element {x}")
    return x


def fail_sometimes(x: int, rng: np.random.Generator) -> int:
    """Raises on element 3 in about half of the epochs (which ones follows from the seed)."""
    if x == 3 and rng.random() < 0.5:
        raise ValueError(f"unlucky {x}")
    return x


class UnpicklableError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()  # cannot be pickled


def fail_unpicklable(x: int, rng: np.random.Generator) -> int:
    if x == 3 and rng.random() < 0.5:
        raise UnpicklableError(f"cannot ship {x}")
    return x


class ConsumerError(Exception):
    pass


def numbers_then_fail() -> Iterator[int]:
    yield from range(5)
    raise KeyError("the stream broke")


# -- representative pipes ---------------------------------------------------------------------
XS = np.arange(60, dtype=np.float32).reshape(30, 2)
YS = torch.arange(30)

CASES: dict[str, dp.Pipe[Any]] = {
    "shuffle-map-batch-collate": (
        dp.from_sequence(range(50)) | dp.shuffle() | dp.map(add_one) | dp.batch(8) | dp.collate()
    ),
    "filter-then-batch": dp.from_sequence(range(50)) | dp.shuffle() | dp.filter(is_even)
    | dp.batch(4),
    "flat_map": dp.from_sequence(range(30)) | dp.shuffle() | dp.flat_map(range_of)
    | dp.map(double),
    "stream-buffer-shuffle": dp.from_iterable(Replay(range(40))) | dp.shuffle(buffer=8)
    | dp.map(add_one) | dp.batch(3),
    "enumerate": dp.from_sequence(range(40)) | dp.shuffle() | dp.enumerate()
    | dp.map(add_position),
    "enumerate-after-filter": dp.from_sequence(range(40)) | dp.filter(is_odd) | dp.enumerate(),
    "take-skip": dp.from_sequence(range(60)) | dp.shuffle() | dp.skip(5) | dp.take(40)
    | dp.map(add_one),
    "take-after-flat_map": dp.from_sequence(range(20)) | dp.flat_map(repeat_twice) | dp.take(15),
    "rng-map": dp.from_sequence(range(40)) | dp.shuffle() | dp.map(add_noise, rng=True)
    | dp.batch(5),
    "from_arrays": dp.from_arrays(x=XS, y=YS) | dp.shuffle() | dp.batch(4) | dp.collate(),
    "from_arrays-numpy": dp.from_arrays(x=XS, y=YS) | dp.batch(7) | dp.collate(to="numpy"),
    "big-elements": dp.from_sequence(range(12)) | dp.shuffle() | dp.map(make_big),
    "big-batches": dp.from_sequence(range(12)) | dp.shuffle() | dp.map(make_big) | dp.batch(3)
    | dp.collate(),
}


def reference(pipe: dp.Pipe[Any], epoch: int = 0, seed: int = 0) -> list[Any]:
    return list(pipe.iter(epoch=epoch, seed=seed))


# -- cleanup checks ---------------------------------------------------------------------------
def datapipes_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("datapipes")}


#: helpers multiprocessing itself keeps for the rest of the session (started by the first
#: spawn or forkserver start): not the loader's
_MP_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _is_mp_helper(proc: psutil.Process) -> bool:
    try:
        return any(h in " ".join(proc.cmdline()) for h in _MP_HELPERS)
    except psutil.Error:
        return False


def children() -> set[int]:
    """This process's descendants (zombies included), without multiprocessing's helpers."""
    return {
        p.pid for p in psutil.Process().children(recursive=True) if not _is_mp_helper(p)
    }


class Leaks:
    """What exists before a test's loaders: anything new afterwards is a leak."""

    def __init__(self) -> None:
        self.children = children()
        self.threads = datapipes_threads()
        self.shm = set(os.listdir("/dev/shm"))

    def assert_clean(self, pids: list[int] = (), deadline: float = 10.0) -> None:  # type: ignore[assignment]
        """Poll until every worker is gone (reaped, not a zombie), every datapipes thread
        has ended and /dev/shm holds nothing new, or fail after ``deadline`` seconds."""
        end = time.monotonic() + deadline
        while True:
            now_children = children()
            left = {
                "worker processes": sorted(set(pids) & now_children),
                "new child processes": sorted(now_children - self.children),
                "datapipes threads": sorted(t.name for t in datapipes_threads() - self.threads),
                "/dev/shm entries": sorted(set(os.listdir("/dev/shm")) - self.shm),
            }
            if not any(left.values()):
                return
            if time.monotonic() > end:
                raise AssertionError(f"left behind: {left}")
            time.sleep(0.02)


# -- the central promise ----------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("prefetch", [1, 4])
@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_loader_yields_the_reference(case: str, backend: str, workers: int, prefetch: int) -> None:
    pipe = CASES[case]
    with pipe.compile(workers=workers, backend=backend, prefetch=prefetch) as loader:
        for epoch in range(2):
            assert_equal_outputs(reference(pipe, epoch), list(loader), f"epoch {epoch}")


@pytest.mark.parametrize("case", list(CASES))
def test_loader_without_workers_yields_the_reference(case: str) -> None:
    pipe = CASES[case]
    with pipe.compile() as loader:
        for epoch in range(2):
            assert_equal_outputs(reference(pipe, epoch), list(loader), f"epoch {epoch}")
        assert loader.worker_pids == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_memory_elements_keep_type_dtype_shape_and_values(backend: str) -> None:
    pipe = CASES["big-elements"]
    with pipe.compile(workers=2, backend=backend) as loader:
        got = list(loader)
    for i, (want, x) in enumerate(zip(reference(pipe), got, strict=True)):
        assert_equal_outputs([want], [x], f"element {i}")
        assert type(x["image"]) is np.ndarray and x["image"].dtype == np.float32
        assert x["image"].shape == (64, 64)
        assert type(x["pair"]) is tuple
        assert type(x["pair"][0]) is torch.Tensor and x["pair"][0].dtype == torch.float64
        assert type(x["pair"][1]) is np.ndarray and x["pair"][1].dtype == np.int16
        assert x["meta"]["codes"].dtype == torch.int16 and x["meta"]["codes"].shape == (16_384,)
        assert x["meta"]["label"] == want["meta"]["label"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_set_epoch(backend: str) -> None:
    pipe = CASES["rng-map"]
    with pipe.compile(workers=2, backend=backend) as loader:
        assert loader.epoch == 0
        loader.set_epoch(5)
        assert loader.epoch == 5
        assert_equal_outputs(reference(pipe, 5), list(loader), "epoch 5")
        assert loader.epoch == 6
        assert_equal_outputs(reference(pipe, 6), list(loader), "epoch 6")
        loader.set_epoch(0)
        assert_equal_outputs(reference(pipe, 0), list(loader), "epoch 0 again")
        assert reference(pipe, 5) != reference(pipe, 6)
        with pytest.raises(ValueError, match="set_epoch"):
            loader.set_epoch(-1)
        with pytest.raises(TypeError, match="set_epoch"):
            loader.set_epoch("1")  # type: ignore[arg-type]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_none_is_recorded_and_reproduces_the_run(backend: str) -> None:
    pipe = CASES["rng-map"]
    with pipe.compile(workers=2, backend=backend, seed=None) as loader:
        seed = loader.seed
        assert isinstance(seed, int) and seed >= 0
        epochs = [list(loader), list(loader)]
    assert_equal_outputs(reference(pipe, 0, seed), epochs[0], "epoch 0")
    assert_equal_outputs(reference(pipe, 1, seed), epochs[1], "epoch 1")
    with pipe.compile(seed=None) as a, pipe.compile(seed=None) as b:
        assert a.seed != b.seed  # fresh from the OS each time


@pytest.mark.timeout(60)
def test_a_given_seed_is_used() -> None:
    pipe = CASES["rng-map"]
    with pipe.compile(workers=2, seed=7) as loader:
        assert loader.seed == 7
        got = list(loader)
    assert_equal_outputs(reference(pipe, 0, 7), got)
    assert got != reference(pipe, 0, 0)


# -- start methods ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_lambdas_and_closures_with_spawn_and_forkserver(start_method: str) -> None:
    offset = 100

    def scale(x: int) -> int:  # a local function: not importable
        return x * offset

    pipe = (
        dp.from_sequence(range(24))
        | dp.shuffle()
        | dp.map(lambda x: x + offset)
        | dp.map(scale)
        | dp.map(lambda x, rng: x + int(rng.integers(10)), rng=True)
        | dp.filter(lambda x: x % 3 != 0)
        | dp.map(lambda x: {"x": x, "big": np.full(4096, x, dtype=np.int64)})
        | dp.batch(4)
        | dp.collate()
    )
    leaks = Leaks()
    loader = pipe.compile(workers=2, start_method=start_method)
    try:
        for epoch in range(2):
            assert_equal_outputs(reference(pipe, epoch), list(loader), f"epoch {epoch}")
        pids = loader.worker_pids
        assert len(pids) == 2
    finally:
        loader.close()
    leaks.assert_clean(pids)


#: A script with no ``if __name__ == "__main__"`` guard, whose functions and classes live in
#: its main module: what many training scripts look like.
_MAIN_MODULE_SCRIPT = """
import dataclasses, json, sys
import numpy as np
import datapipes as dp

print("main module ran", flush=True)

@dataclasses.dataclass
class Rec:
    i: int

class MyError(Exception):
    pass

def probe(i):
    return {"x": np.full(3, i), "rec": Rec(i), "torch": "torch" in sys.modules}

def fail_on_two(i):
    if i == 2:
        raise MyError("two")
    return i

def main(method):
    pipe = dp.from_sequence(range(8)) | dp.map(probe) | dp.batch(4) | dp.collate()
    with pipe.compile(workers=2, start_method=method, timeout=30) as loader:
        got = list(loader)
    caught = False
    try:
        with (dp.from_sequence(range(4)) | dp.map(fail_on_two)).compile(
            workers=1, start_method=method, timeout=30
        ) as loader:
            list(loader)
    except MyError:
        caught = True
    print(json.dumps({
        "x": [b["x"].tolist() for b in got],
        "tensors": all(type(b["x"]).__name__ == "Tensor" for b in got),
        "recs_are_main_class": all(type(r) is Rec for b in got for r in b["rec"]),
        "torch_in_workers": [t for b in got for t in b["torch"].tolist()],
        "caught": caught,
    }))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver", "fork"])
def test_main_module_classes_in_workers(start_method: str, tmp_path: Any) -> None:
    """The main module's classes arrive as themselves, its exceptions can be caught by
    class, and a worker whose pipe needs no torch never imports it (collate's tensors are
    made in the main process). Spawned workers do not run the main module again, so a
    script needs no guard; forkserver workers do (multiprocessing's way), so it keeps one."""
    script = tmp_path / "train.py"
    last = "main('spawn')" if start_method == "spawn" else (
        f"if __name__ == '__main__':\n    main({start_method!r})"
    )
    script.write_text(_MAIN_MODULE_SCRIPT + last + "\n")
    done = subprocess.run(
        [sys.executable, str(script), start_method],
        capture_output=True, text=True, timeout=100, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if start_method == "spawn":
        assert lines.count("main module ran") == 1, done.stdout
    report = json.loads(lines[-1])
    assert report["x"] == [[[i] * 3 for i in range(s, s + 4)] for s in (0, 4)]
    assert report["tensors"] and report["recs_are_main_class"] and report["caught"]
    assert report["torch_in_workers"] == [False] * 8


@pytest.mark.timeout(60)
def test_a_spawned_worker_sees_this_process_path_also_path_objects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    (tmp_path / "only_on_this_path.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(tmp_path)
    sys.path.insert(0, pathlib.Path(tmp_path))  # some tools put Path objects there
    import only_on_this_path  # type: ignore[import-not-found]

    pipe = dp.from_sequence(range(6)) | dp.map(only_on_this_path.triple)
    with pipe.compile(workers=2, start_method="spawn", timeout=30) as loader:
        assert list(loader) == [0, 3, 6, 9, 12, 15]
    sys.modules.pop("only_on_this_path", None)


@pytest.mark.timeout(60)
def test_a_spawned_worker_that_cannot_start_raises_worker_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipe = dp.from_sequence(range(4)) | dp.map(double)
    leaks = Leaks()
    loader = pipe.compile(workers=1, start_method="spawn")
    try:
        with (
            pytest.raises(dp.WorkerError, match=r"worker 0 \(pid \d+\) exited with code 1"),
            monkeypatch.context() as patch,
        ):
            patch.setattr(sys, "path", [])  # what the worker is told to import from
            next(iter(loader))
        pids = loader.worker_pids
    finally:
        loader.close()
    leaks.assert_clean(pids)


def test_a_pipe_that_cannot_be_shipped_is_refused_at_compile() -> None:
    lock = threading.Lock()
    pipe = dp.from_sequence(range(4)) | dp.map(lambda x: (lock, x)[1])
    with pytest.raises(TypeError, match=r"compile: .*spawned worker"):
        pipe.compile(workers=2, start_method="spawn")
    # fork and threads need no pickling
    with pipe.compile(workers=1, backend="thread") as loader:
        assert list(loader) == [0, 1, 2, 3]


# -- ordered=False ----------------------------------------------------------------------------
def canonical(value: Any) -> Any:
    """A hashable stand-in for an element, equal for elements equal by type and value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.flatten().tolist()))
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, tuple(value.ravel().tolist()))
    if isinstance(value, dict):
        return ("dict", tuple((k, canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canonical(v) for v in value))
    return (type(value).__name__, value)


def multiset(values: list[Any]) -> collections.Counter[Any]:
    return collections.Counter(canonical(v) for v in values)


UNORDERED_CASES = {
    "uneven-map": dp.from_sequence(range(120)) | dp.shuffle() | dp.map(uneven_work),
    "batch-collate": dp.from_sequence(range(120)) | dp.map(uneven_work) | dp.batch(4)
    | dp.collate(),
    "stream": dp.from_iterable(Replay(range(80))) | dp.shuffle(buffer=8) | dp.map(uneven_work),
    "flat_map": dp.from_sequence(range(60)) | dp.flat_map(range_of) | dp.map(uneven_work),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(UNORDERED_CASES))
def test_unordered_yields_the_same_multiset(case: str, backend: str, workers: int) -> None:
    pipe = UNORDERED_CASES[case]
    with pipe.compile(workers=workers, backend=backend, ordered=False, prefetch=1) as loader:
        assert "unordered" in loader.explain()
        for epoch in range(2):
            got = list(loader)
            want = reference(pipe, epoch)
            assert len(got) == len(want)
            assert multiset(got) == multiset(want), f"epoch {epoch}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_unordered_keeps_the_order_a_later_stage_needs(backend: str) -> None:
    # A batch after a filter groups whatever arrives: out of order it would change the batches.
    pipe = CASES["filter-then-batch"]
    with pipe.compile(workers=3, backend=backend, ordered=False) as loader:
        assert "ordered=False has no effect" in loader.explain()
        assert_equal_outputs(reference(pipe), list(loader))


# -- several iterations at once, breaks and consumer errors ----------------------------------
@pytest.mark.timeout(60)
def test_several_loaders_over_one_pipe_at_once() -> None:
    pipe = CASES["rng-map"]
    configs: list[dict[str, Any]] = [
        {"workers": 2},
        {"workers": 3, "backend": "thread"},
        {"workers": 1, "prefetch": 1, "seed": 3},
        {"workers": 0},
        {"workers": 2, "backend": "thread", "ordered": False},
    ]
    with contextlib.ExitStack() as stack:
        loaders = [stack.enter_context(pipe.compile(**c)) for c in configs]
        for epoch in range(2):
            iterators = [iter(loader) for loader in loaders]
            outputs: list[list[Any]] = [[] for _ in loaders]
            live = set(range(len(loaders)))
            while live:
                for i in sorted(live):
                    try:
                        outputs[i].append(next(iterators[i]))
                    except StopIteration:
                        live.discard(i)
            for config, loader, out in zip(configs, loaders, outputs, strict=True):
                want = reference(pipe, epoch, loader.seed)
                if config.get("ordered") is False:
                    assert multiset(out) == multiset(want), config
                else:
                    assert_equal_outputs(want, out, f"{config}, epoch {epoch}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["shuffle-map-batch-collate", "stream-buffer-shuffle", "flat_map"])
def test_break_then_the_next_epoch_is_whole(case: str, backend: str) -> None:
    pipe = CASES[case]
    with pipe.compile(workers=2, backend=backend, prefetch=2) as loader:
        head = []
        for x in loader:
            head.append(x)
            if len(head) == 3:
                break
        assert_equal_outputs(reference(pipe, 0)[:3], head, "the part of epoch 0")
        pids = loader.worker_pids
        assert_equal_outputs(reference(pipe, 1), list(loader), "epoch 1")
        assert loader.worker_pids == pids  # workers persist across epochs
        assert_equal_outputs(reference(pipe, 2), list(loader), "epoch 2")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_abandoned_iterator_does_not_disturb_the_next_epoch(backend: str) -> None:
    pipe = CASES["take-skip"]
    with pipe.compile(workers=2, backend=backend, prefetch=2) as loader:
        it = iter(loader)
        assert_equal_outputs(reference(pipe, 0)[:2], [next(it), next(it)])
        assert_equal_outputs(reference(pipe, 1), list(loader), "epoch 1")
        del it
        assert_equal_outputs(reference(pipe, 2), list(loader), "epoch 2")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_error_in_the_consumer_loop_then_the_next_epoch(backend: str) -> None:
    pipe = CASES["big-batches"]
    with pipe.compile(workers=2, backend=backend) as loader:
        with pytest.raises(ConsumerError):
            for i, _ in enumerate(loader):
                if i == 1:
                    raise ConsumerError("the training step failed")
        assert_equal_outputs(reference(pipe, 1), list(loader), "epoch 1")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_live_iterators_of_one_loader_never_hang(backend: str) -> None:
    # Either both epochs come out whole, or the loader refuses at once: never a hang.
    pipe = CASES["take-skip"]
    with pipe.compile(workers=2, backend=backend, prefetch=1) as loader:
        a, b = iter(loader), iter(loader)
        out_a: list[Any] = []
        out_b: list[Any] = []
        try:
            for _ in range(len(pipe)):
                out_a.append(next(a))
                out_b.append(next(b))
        except RuntimeError:
            return
        assert_equal_outputs(reference(pipe, 0), out_a, "the first iterator")
        assert_equal_outputs(reference(pipe, 1), out_b, "the second iterator")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_iterator_resumed_after_close_raises(backend: str) -> None:
    pipe = CASES["take-skip"]
    loader = pipe.compile(workers=2, backend=backend)
    try:
        it = iter(loader)
        next(it)
    finally:
        loader.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(it)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_locally_defined_exception_keeps_its_type(backend: str) -> None:
    class LocalError(Exception):
        pass

    def check(x: int) -> int:
        if x == 3:
            raise LocalError(f"local {x}")
        return x

    pipe = dp.from_sequence(range(10)) | dp.map(check)
    with (
        pipe.compile(workers=2, backend=backend) as loader,
        pytest.raises(LocalError, match="local 3"),
    ):
        list(loader)


# -- len, explain -----------------------------------------------------------------------------
def test_len() -> None:
    pipe = CASES["shuffle-map-batch-collate"]
    with pipe.compile(workers=2, backend="thread") as loader:
        assert len(loader) == len(pipe) == 7 == len(list(loader))
    with CASES["take-skip"].compile() as loader:
        assert len(loader) == 40
    with CASES["filter-then-batch"].compile(workers=2) as loader, pytest.raises(TypeError):
        len(loader)


def test_explain_golden() -> None:
    pipe = (
        dp.from_sequence(range(100))
        | dp.shuffle()
        | dp.map(add_one)
        | dp.filter(is_even)
        | dp.batch(8)
        | dp.collate()
    )
    with pipe.compile(workers=2) as loader:
        text = loader.explain()
        assert loader.worker_pids == []  # explaining starts nothing
    assert text == (
        "plan for from_sequence(range(0, 100)) | shuffle() | map(add_one) | filter(is_even) "
        "| batch(8) | collate()\n"
        "  from_sequence(range(0, 100))  workers  each worker fetches the elements it needs "
        "by index\n"
        "  shuffle()                     main     index arithmetic, no element is read\n"
        "  map(add_one)                  workers  per element\n"
        "  filter(is_even)               workers  per element\n"
        "  batch(8)                      tail     needs the stream in order: a filter or "
        "flat_map before it changes the count\n"
        "  collate()                     tail     after batch(8)\n"
        "run: 2 process workers, 2 tasks each in flight (at most 4), in order"
    )


def test_explain_golden_batches_in_workers() -> None:
    pipe = (
        dp.from_sequence(range(100)) | dp.shuffle() | dp.map(add_one) | dp.batch(8) | dp.collate()
    )
    with pipe.compile(workers=3, backend="thread", prefetch=1) as loader:
        text = loader.explain()
    assert text == (
        "plan for from_sequence(range(0, 100)) | shuffle() | map(add_one) | batch(8) "
        "| collate()\n"
        "  from_sequence(range(0, 100))  workers  each worker fetches the elements it needs "
        "by index\n"
        "  shuffle()                     main     index arithmetic, no element is read\n"
        "  map(add_one)                  workers  per element\n"
        "  batch(8)                      workers  membership follows from the head\n"
        "  collate()                     workers  per batch\n"
        "run: 3 thread workers, 1 tasks each in flight (at most 3), in order"
    )


def test_explain_of_a_stream_head_does_not_claim_index_arithmetic() -> None:
    # A buffer shuffle on a stream source reads every element in the main process.
    pipe = dp.from_iterable(Replay(range(10))) | dp.shuffle(buffer=4) | dp.map(add_one)
    with pipe.compile(workers=2, backend="thread") as loader:
        lines = loader.explain().splitlines()
    shuffle_line = next(line for line in lines if line.lstrip().startswith("shuffle(buffer=4)"))
    assert " main " in shuffle_line
    assert "no element is read" not in shuffle_line, shuffle_line


def test_explain_without_workers() -> None:
    with CASES["rng-map"].compile() as loader:
        assert loader.explain().endswith("\nrun: in this process")


# -- copy-on-read protection for big lists ----------------------------------------------------
def row_id(row: dict[str, int]) -> int:
    return row["id"] * 2


@pytest.mark.timeout(60)
def test_a_big_list_source_is_shared_as_one_buffer() -> None:
    rows = [{"id": i, "tags": ["a"] * (i % 3)} for i in range(MIN_LENGTH)]
    pipe = dp.from_sequence(rows) | dp.shuffle() | dp.take(200) | dp.map(row_id) | dp.batch(16)
    with pipe.compile(workers=2) as loader:
        source_line = loader.explain().splitlines()[-1]
        assert source_line.startswith(f"source: the list of {MIN_LENGTH} objects is pickled once")
        assert "copy-on-read" in source_line
        assert_equal_outputs(reference(pipe), list(loader))
    with pipe.compile(workers=2, backend="thread") as loader:  # threads share the list itself
        assert "source:" not in loader.explain()


# -- cleanup ----------------------------------------------------------------------------------
def _run_some(loader: dp.Loader) -> None:
    assert len(list(loader)) == 4  # big-batches: 12 elements in batches of 3
    for i, _ in enumerate(loader):  # a second epoch, left mid-way with work in flight
        if i == 1:
            break


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["close", "with", "del", "break-then-del", "error-in-with"])
def test_nothing_is_left_behind(how: str, backend: str) -> None:
    pipe = CASES["big-batches"]
    leaks = Leaks()
    pids: list[int] = []
    if how == "close":
        loader = pipe.compile(workers=2, backend=backend)
        _run_some(loader)
        pids = loader.worker_pids
        loader.close()
        loader.close()  # twice is fine
        with pytest.raises(RuntimeError, match="closed"):
            iter(loader)
    elif how == "with":
        with pipe.compile(workers=2, backend=backend) as loader:
            _run_some(loader)
            pids = loader.worker_pids
    elif how == "del":
        loader = pipe.compile(workers=2, backend=backend)
        _run_some(loader)
        pids = loader.worker_pids
        del loader
        gc.collect()
    elif how == "break-then-del":
        loader = pipe.compile(workers=2, backend=backend)
        for _ in loader:
            break
        pids = loader.worker_pids
        # after a break the workers persist, waiting for the next epoch
        if backend == "process":
            assert len(pids) == 2 and set(pids) <= children()
        else:
            assert len(datapipes_threads() - leaks.threads) >= 2
        del loader
        gc.collect()
    else:
        with pytest.raises(ConsumerError), pipe.compile(workers=2, backend=backend) as loader:
            pids = loader.worker_pids
            for _ in loader:
                pids = loader.worker_pids
                raise ConsumerError
    if backend == "process":
        assert len(pids) == 2
    leaks.assert_clean(pids)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_delivered_batches_stay_valid_after_later_batches_and_close(backend: str) -> None:
    pipe = CASES["big-batches"]
    loader = pipe.compile(workers=2, backend=backend, prefetch=1)
    try:
        held = list(loader)  # epoch 0, kept
        later = list(loader)  # epoch 1 reuses the workers and their buffers
        partial = next(iter(loader))  # epoch 2, abandoned with work in flight
    finally:
        loader.close()
    gc.collect()
    assert_equal_outputs(reference(pipe, 0), held, "epoch 0 after close")
    assert_equal_outputs(reference(pipe, 1), later, "epoch 1 after close")
    assert_equal_outputs(reference(pipe, 2)[:1], [partial], "epoch 2 after close")
    held[0]["image"] += 1  # still ordinary, writable memory
    assert float(held[0]["image"].sum()) == float(reference(pipe, 0)[0]["image"].sum()) + 3 * 4096


def memfds(pid: int) -> int:
    """How many shared-memory buffers of ours process ``pid`` holds open."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:datapipes")
    return count


@pytest.mark.timeout(60)
def test_a_worker_writes_its_buffers_again_once_batches_are_dropped() -> None:
    """Dropped batches' shared memory goes back to its worker: over two epochs of 40
    batches it keeps a handful of buffers, not one per batch."""
    pipe = dp.from_sequence(range(120)) | dp.map(make_big) | dp.batch(3) | dp.collate()
    with pipe.compile(workers=1, prefetch=2) as loader:
        for _ in range(2):
            for batch in loader:
                del batch
        (pid,) = loader.worker_pids
        held = memfds(pid)
    assert 1 <= held <= 10


# -- errors in workers ------------------------------------------------------------------------
def _epochs(pipe: dp.Pipe[Any], raises: bool, n: int = 1) -> list[int]:
    """The first ``n`` epochs whose reference run raises (or does not)."""
    found = []
    for epoch in range(64):
        try:
            reference(pipe, epoch)
        except Exception:
            if raises:
                found.append(epoch)
        else:
            if not raises:
                found.append(epoch)
        if len(found) == n:
            return found
    raise AssertionError("no such epoch")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_user_exception_in_a_worker_is_reraised_with_notes(backend: str) -> None:
    pipe = dp.from_sequence(range(20)) | dp.shuffle() | dp.map(add_one) | dp.map(fail_on_7) \
        | dp.batch(4)
    note = "datapipes: raised in stage map(fail_on_7) on the element with key 6"
    with pytest.raises(ValueError, match="bad element 7") as ref_info:
        reference(pipe)
    assert note in ref_info.value.__notes__
    with (
        pipe.compile(workers=2, backend=backend) as loader,
        pytest.raises(ValueError, match="bad element 7") as info,
    ):
        list(loader)
    notes = info.value.__notes__
    assert note in notes
    if backend == "process":
        tracebacks = [n for n in notes if n.startswith("worker traceback:")]
        assert len(tracebacks) == 1
        assert "in fail_on_7" in tracebacks[0]
        assert "ValueError: bad element 7" in tracebacks[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_after_a_worker_error_the_next_epoch_runs(backend: str) -> None:
    pipe = dp.from_sequence(range(16)) | dp.map(fail_sometimes, rng=True) | dp.batch(4)
    bad, = _epochs(pipe, raises=True)
    good = _epochs(pipe, raises=False, n=2)
    with pipe.compile(workers=2, backend=backend) as loader:
        loader.set_epoch(bad)
        with pytest.raises(ValueError, match="unlucky 3") as info:
            list(loader)
        assert any("map(fail_sometimes, rng=True)" in n and "key 3" in n
                   for n in info.value.__notes__)
        for epoch in good:
            loader.set_epoch(epoch)
            assert_equal_outputs(reference(pipe, epoch), list(loader), f"epoch {epoch}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exception_that_cannot_be_pickled(backend: str) -> None:
    pipe = dp.from_sequence(range(16)) | dp.map(fail_unpicklable, rng=True)
    bad, = _epochs(pipe, raises=True)
    good, = _epochs(pipe, raises=False)
    with pipe.compile(workers=2, backend=backend) as loader:
        loader.set_epoch(bad)
        expected: type[Exception] = dp.StageError if backend == "process" else UnpicklableError
        with pytest.raises(expected, match="cannot ship 3") as info:
            list(loader)
        if backend == "process":
            assert "UnpicklableError" in str(info.value)
            text = "\n".join(info.value.__notes__)
            assert "map(fail_unpicklable, rng=True)" in text and "key 3" in text
        loader.set_epoch(good)
        assert_equal_outputs(reference(pipe, good), list(loader), f"epoch {good}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_error_in_the_stream_source_is_reraised_with_its_key(backend: str) -> None:
    pipe = dp.from_iterable(numbers_then_fail) | dp.map(add_one)
    with pipe.compile(workers=2, backend=backend) as loader:
        got = []
        with pytest.raises(KeyError, match="the stream broke") as info:
            for x in loader:
                got.append(x)
        assert any("from_iterable(numbers_then_fail)" in n and "key 5" in n
                   for n in info.value.__notes__)
        assert got == [1, 2, 3, 4, 5][: len(got)]


# -- arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": -1}, ValueError, "workers"),
        ({"workers": 1.5}, (TypeError, ValueError), "workers"),
        ({"workers": True}, (TypeError, ValueError), "workers"),
        ({"backend": "gpu"}, ValueError, "backend"),
        ({"prefetch": 0}, ValueError, "prefetch"),
        ({"prefetch": "2"}, (TypeError, ValueError), "prefetch"),
        ({"start_method": "x"}, ValueError, "start_method"),
        ({"ordered": "yes"}, TypeError, "ordered"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"pin_memory": "yes"}, TypeError, "pin_memory"),
    ],
)
def test_bad_compile_arguments_raise(kwargs: dict[str, Any], error: Any, match: str) -> None:
    with pytest.raises(error, match=f"^compile: .*{match}"):
        CASES["rng-map"].compile(**kwargs)


def test_a_fragment_does_not_compile() -> None:
    with pytest.raises(TypeError, match="fragment"):
        (dp.map(add_one) | dp.batch(2)).compile()


@pytest.mark.parametrize(
    "kwargs", [{"pin_memory": True}, {"device": "cuda"}, {"device": "cuda:0"},
               {"device": torch.device("cuda")}, {"pin_memory": True, "device": "cuda"}],
)
def test_pin_memory_and_device_need_cuda(kwargs: dict[str, Any]) -> None:
    pipe = CASES["from_arrays"]
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            pipe.compile(workers=1, backend="thread", **kwargs)
        return
    with pipe.compile(workers=1, backend="thread", **kwargs) as loader:
        got = list(loader)
    want = reference(pipe)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for name in ("x", "y"):
            if kwargs.get("device") is not None:
                assert g[name].device.type == "cuda"
            else:
                assert g[name].is_pinned()
            assert torch.equal(g[name].cpu(), w[name])


def test_device_cpu_needs_no_cuda() -> None:
    pipe = CASES["from_arrays"]
    with pipe.compile(workers=1, backend="thread", device="cpu") as loader:
        assert_equal_outputs(reference(pipe), list(loader))


# -- small facts ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_worker_pids() -> None:
    pipe = CASES["take-skip"]
    with pipe.compile(workers=2) as loader:
        assert loader.worker_pids == []  # workers start on the first epoch
        list(loader)
        pids = loader.worker_pids
        assert len(pids) == 2 and len(set(pids)) == 2
        assert set(pids) <= children()
    with pipe.compile(workers=2, backend="thread") as loader:
        list(loader)
        assert loader.worker_pids == []


def test_repr_names_the_pipe_and_the_settings() -> None:
    with CASES["rng-map"].compile(workers=2, backend="thread", prefetch=3, seed=5) as loader:
        text = repr(loader)
    assert text.startswith("Loader(from_sequence(range(0, 40)) | shuffle()")
    assert "workers=2" in text and "backend='thread'" in text and "prefetch=3" in text
    assert "seed=5" in text


def _each(loader: dp.Loader, fn: Callable[[Any], Any]) -> list[Any]:
    return [fn(x) for x in loader]


@pytest.mark.timeout(60)
def test_loader_is_an_iterable_for_a_training_loop() -> None:
    pipe = CASES["shuffle-map-batch-collate"]
    with pipe.compile(workers=2) as loader:
        sums = [_each(loader, lambda b: int(b.sum())) for _ in range(3)]
    assert sums == [[int(b.sum()) for b in reference(pipe, e)] for e in range(3)]
