"""Resuming from a checkpoint, side by side with the peers: time to the next batch.

Workload: 200,000 indices, shuffled, a map of about 20 µs of pure-Python work per element
(``_work.spin``, calibrated at start), lists of 64: 3,125 batches an epoch.

* ``datapipes``: ``from_sequence(range(N)) | shuffle() | map(f) | batch(64)`` compiled with
  ``workers=0`` and with ``workers=2`` (processes, fork); resume is
  ``loader.load_state_dict(state)`` on a new loader, then its first batch.
* ``torchdata.nodes`` 0.11: ``SamplerWrapper(RandomSampler(range(N), generator=seeded))
  -> Mapper(f) -> Batcher(64, drop_last=False) -> Loader``, in this process; resume is
  ``Loader.load_state_dict(state)`` on a new pipeline, then ``next(iter(loader))``.
* Grain 0.2.18: ``MapDataset.range(N).shuffle(seed=0).map(f).batch(64)``, its iterator with
  ``ReadOptions(num_threads=0, prefetch_buffer_size=0)`` (in this process, no read-ahead);
  resume is ``iterator.set_state(state)`` on a new iterator, then ``next``.

For each system: a **fresh** start (build, first batch) and a **resume** after 10 %, 50 % and
75 % of the epoch's batches (build, load the state, next batch); shutting down is not
timed. The states are taken once, before timing, from one uninterrupted run of each system,
which also records the batch that follows each position: every resumed batch (and every
fresh first batch) must equal it, or the benchmark stops. Systems alternate in rounds
(``_rounds.alternate``); the table shows each one's best round, and resume / fresh.

    python benchmarks/resume.py              # 5 rounds, about 1 minute on 2 cores
    python benchmarks/resume.py --rounds 9
    python benchmarks/resume.py --quick      # 20,000 elements, 2 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import _work
from _rounds import alternate, import_peers, machine, print_table

import datapipes as dp

BATCH = 64
FRACTIONS = (0.10, 0.50, 0.75)
SPIN_SECONDS = 20e-6
WORKERS = 2


# -- the systems: build, (load a state), next batch --------------------------------------------
def record_states(
    batches: Any, positions: list[int], get_state: Callable[[], Any]
) -> tuple[list[Any], list[Any], Any]:
    """One uninterrupted run: the state just before each position, the batch at each
    position, and the first batch."""
    states, nexts, first = [], [], None
    for b, batch in enumerate(batches):
        if b == 0:
            first = batch
        if b in positions:
            nexts.append(batch)
        if b + 1 in positions:
            states.append(get_state())
        if b >= max(positions):
            break
    return states, nexts, first


class DatapipesSystem:
    def __init__(self, n: int, fn: Callable[[int], int], workers: int) -> None:
        self.pipe = dp.from_sequence(range(n)) | dp.shuffle() | dp.map(fn) | dp.batch(BATCH)
        self.workers = workers

    def _compile(self) -> dp.Loader:
        if self.workers:
            return self.pipe.compile(workers=self.workers, start_method="fork")
        return self.pipe.compile()

    def states(self, positions: list[int]) -> tuple[list[Any], list[Any], Any]:
        """One uninterrupted run: the state after each position, the batch after it, and
        the first batch."""
        with self._compile() as loader:
            return record_states(loader, positions, loader.state_dict)

    def next_batch(self, state: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        loader = self._compile()
        if state is not None:
            loader.load_state_dict(state)
        batch = next(iter(loader))
        took = time.perf_counter() - start
        loader.close()
        return took, batch


class NodesSystem:
    def __init__(self, n: int, fn: Callable[[int], int], tn: Any) -> None:
        self.n, self.fn, self.tn = n, fn, tn

    def _loader(self) -> Any:
        import torch
        from torch.utils.data import RandomSampler

        tn = self.tn
        sampler = RandomSampler(range(self.n), generator=torch.Generator().manual_seed(0))
        node = tn.Mapper(tn.SamplerWrapper(sampler), self.fn)
        return tn.Loader(tn.Batcher(node, batch_size=BATCH, drop_last=False))

    def states(self, positions: list[int]) -> tuple[list[Any], list[Any], Any]:
        loader = self._loader()
        return record_states(loader, positions, loader.state_dict)

    def next_batch(self, state: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        loader = self._loader()
        if state is not None:
            loader.load_state_dict(state)
        batch = next(iter(loader))
        return time.perf_counter() - start, batch


class GrainSystem:
    def __init__(self, n: int, fn: Callable[[int], int], grain: Any) -> None:
        self.n, self.fn, self.grain = n, fn, grain

    def _iterator(self) -> Any:
        grain = self.grain
        ds = grain.MapDataset.range(self.n).shuffle(seed=0).map(self.fn).batch(BATCH)
        options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        return iter(ds.to_iter_dataset(options))

    def states(self, positions: list[int]) -> tuple[list[Any], list[Any], Any]:
        it = self._iterator()
        return record_states(it, positions, it.get_state)

    def next_batch(self, state: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        it = self._iterator()
        if state is not None:
            it.set_state(state)
        batch = next(it)
        return time.perf_counter() - start, batch


def peers() -> dict[str, Any]:
    return import_peers({"torchdata.nodes": "torchdata.nodes", "Grain": "grain"})


def same(a: Any, b: Any) -> bool:
    """Two batches hold the same ints (Grain's are NumPy arrays)."""
    return [int(x) for x in a] == [int(x) for x in b]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all systems (5)")
    parser.add_argument("--quick", action="store_true", help="20,000 elements, 2 rounds")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else 200_000
    rounds = 2 if args.quick else args.rounds

    loops = _work.calibrate_spin(SPIN_SECONDS)
    fn = functools.partial(_work.spin, loops=loops)
    batches = -(-n // BATCH)
    positions = [round(f * batches) for f in FRACTIONS]
    print(machine())
    print(f"{n:,} elements, map ~{SPIN_SECONDS * 1e6:.0f} µs ({loops} loops), batch {BATCH}: "
          f"{batches:,} batches; resume after batches {positions}; {rounds} rounds")

    systems: dict[str, Any] = {
        "datapipes, workers=0": DatapipesSystem(n, fn, 0),
        f"datapipes, workers={WORKERS}": DatapipesSystem(n, fn, WORKERS),
    }
    found = peers()
    if "torchdata.nodes" in found:
        systems["torchdata.nodes"] = NodesSystem(n, fn, found["torchdata.nodes"])
    if "Grain" in found:
        systems["Grain"] = GrainSystem(n, fn, found["Grain"])

    # States and the batches that follow them, from one uninterrupted run of each system
    # (datapipes' states do not depend on the worker count: one run serves both).
    recorded: dict[str, tuple[list[Any], list[Any], Any]] = {}
    for name, system in systems.items():
        if name.startswith("datapipes") and "datapipes" in recorded:
            recorded[name] = recorded["datapipes"]
            continue
        start = time.perf_counter()
        recorded[name] = system.states(positions)
        if name.startswith("datapipes"):
            recorded["datapipes"] = recorded[name]
        also = f" (also for workers={WORKERS})" if name.startswith("datapipes") else ""
        print(f"{name}: states taken in one run to {FRACTIONS[-1]:.0%}{also} "
              f"({time.perf_counter() - start:.1f} s)")
    recorded.pop("datapipes", None)

    labels = ["fresh", *(f"{f:.0%}" for f in FRACTIONS)]
    runs: dict[str, Callable[[], object]] = {}
    for name, system in systems.items():
        states = recorded[name][0]
        for label, state in zip(labels, [None, *states], strict=True):
            runs[f"{name}|{label}"] = functools.partial(system.next_batch, state)
    results: dict[str, list[Any]] = {}
    alternate(runs, rounds, results=results)

    rows = []
    for name in systems:
        _, nexts, first = recorded[name]
        best = {}
        for label, expected in zip(labels, [first, *nexts], strict=True):
            outs = results[f"{name}|{label}"]
            for _, batch in outs:
                if not same(batch, expected):
                    raise SystemExit(f"{name}, {label}: the batch differs from the "
                                     "uninterrupted run's")
            best[label] = min(took for took, _ in outs)
        fresh = best["fresh"]
        rows.append([
            name,
            *(f"{best[label] * 1e3:.2f}" for label in labels),
            *(f"{best[label] / fresh:.2f}×" for label in labels[1:]),
        ])
    print()
    print_table(rows, ["system", "fresh (ms)",
                       *(f"resume {label} (ms)" for label in labels[1:]),
                       *(f"{label} / fresh" for label in labels[1:])])
    print(f"\nbest of {rounds} rounds; every resumed batch equals the uninterrupted run's")


if __name__ == "__main__":
    main()
