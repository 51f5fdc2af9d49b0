"""Preprocessing once: the epoch that writes a cache, and the epochs that read it.

Workload: 2,000 indices; a decode of about 2 ms of pure-Python work per element
(``_work.spin``, calibrated at start) that makes a float32 3 × 64 × 64 array; then, after the
cache, a random flip (``map(..., rng=True)``), ``batch(32)`` and ``collate()``. Two process
workers (fork).

* ``no cache``: ``from_sequence(range(N)) | map(decode) | map(flip, rng=True) | batch(32)
  | collate()``: every epoch decodes.
* ``cache``: the same with ``| cache(dir)`` after the decode. Epoch 0 decodes and writes the
  cache, epoch 1 (same loader) seals it and reads it; a later run (a new loader) reads it
  from its first epoch.

Each round compiles new loaders (worker start-up is in the first epoch of each) and gives
the cache a new directory; the systems alternate in rounds (``_rounds.alternate``) and the
table shows each one's best round. Every epoch's batches must equal the no-cache ones of the
same epoch, or the benchmark stops.

    python benchmarks/cache.py              # 3 rounds, about 1 minute on 2 cores
    python benchmarks/cache.py --rounds 5
    python benchmarks/cache.py --quick      # 400 elements, 2 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import _work
import numpy as np
from _rounds import alternate, machine, print_table, timed_row

import datapipes as dp
from datapipes.stages.cache import cache

DECODE_SECONDS = 0.002
WORKERS = 2
BATCH = 32
SHAPE = (3, 64, 64)


def decode(i: int, loops: int) -> np.ndarray:
    """About 2 ms of work, then the element: an image of ``i``'s checksum."""
    return np.full(SHAPE, _work.spin(i, loops) % 251, dtype=np.float32) + i


def flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x[:, :, ::-1].copy() if rng.random() < 0.5 else x


def pipe_of(n: int, fn: Callable[[int], np.ndarray], directory: str | None) -> dp.Pipe[Any]:
    cached = dp.Pipe() if directory is None else cache(directory)
    return (dp.from_sequence(range(n)) | dp.map(fn) | cached | dp.map(flip, rng=True)
            | dp.batch(BATCH) | dp.collate())


def checksums(batches: Any) -> list[float]:
    return [float(b.double().sum()) + float(b[:, :, 0, :3].double().sum()) for b in batches]


def timed_epoch(loader: dp.Loader) -> tuple[float, list[float]]:
    start = time.perf_counter()
    batches = list(loader)
    return time.perf_counter() - start, checksums(batches)


class Run:
    """One round of a system: its epochs' times and checksums, by phase."""

    def __init__(self, n: int, fn: Callable[[int], np.ndarray], cached: bool) -> None:
        self.n, self.fn, self.cached = n, fn, cached

    def __call__(self) -> dict[str, tuple[float, list[float]]]:
        directory = tempfile.mkdtemp(prefix="datapipes-bench-cache-") if self.cached else None
        pipe = pipe_of(self.n, self.fn, directory)
        out: dict[str, tuple[float, list[float]]] = {}
        try:
            with pipe.compile(workers=WORKERS, start_method="fork") as loader:
                out["epoch 0"] = timed_epoch(loader)
                out["epoch 1"] = timed_epoch(loader)
            if directory is not None:
                with pipe.compile(workers=WORKERS, start_method="fork") as later:
                    later.set_epoch(1)
                    out["later run, epoch 1"] = timed_epoch(later)
        finally:
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both systems (3)")
    parser.add_argument("--quick", action="store_true", help="400 elements, 2 rounds")
    args = parser.parse_args(argv)
    n = 400 if args.quick else 2_000
    rounds = 2 if args.quick else args.rounds

    loops = _work.calibrate_spin(DECODE_SECONDS)
    fn = functools.partial(decode, loops=loops)
    print(machine())
    print(f"{n:,} elements, decode ~{DECODE_SECONDS * 1e3:.0f} ms ({loops} loops) to float32 "
          f"{SHAPE}, then flip (rng), batch {BATCH}, collate; {WORKERS} process workers "
          f"(fork); {rounds} rounds")

    results: dict[str, list[Any]] = {}
    alternate({"no cache": Run(n, fn, False), "cache": Run(n, fn, True)}, rounds,
              results=results)
    times: dict[str, list[float]] = {}
    for system, runs in results.items():
        for run in runs:
            for phase, (took, sums) in run.items():
                expected = results["no cache"][0]["epoch 1" if "1" in phase else "epoch 0"][1]
                if sums != expected:
                    raise SystemExit(f"{system}, {phase}: the batches differ from no cache's")
                times.setdefault(f"{system}, {phase}", []).append(took)
    baseline = min(times["no cache, epoch 1"])
    rows = [timed_row(name, t, baseline, f"{n / min(t):,.0f}") for name, t in times.items()]
    print_table(rows, ["system, epoch", "best s", "median s", "elements/s",
                       "speed vs no cache, epoch 1"])


if __name__ == "__main__":
    main()
