"""Class-balanced sampling with replacement: ``sample(weights=...)`` against PyTorch's
``WeightedRandomSampler``.

Workload: N elements (10,000,000 by default), each with one of 10 class labels drawn with
geometric frequencies (class 0 about 30 %, class 9 about 1 %; seed 0), one weight per
element, ``class_weights(labels)`` (1 / the size of its class), so that each class should
come out about 10 % of the time. One epoch draws N indices with replacement and hands each
to Python (``np.fromiter`` over the iterator: the same consumer for every system).

* ``torch WeightedRandomSampler``: ``WeightedRandomSampler(weights, N, replacement=True)``
  made once, iterated once per run: ``torch.multinomial`` over the weights each epoch, then
  the indices as Python ints.
* ``datapipes, array, epoch 0``: ``from_sequence(range(N)) | sample(weights=w,
  replace=True)`` made in the run (the stage copies and checks the weights), then its
  first epoch, which builds the cumulative distribution (kept by the stage).
* ``datapipes, array, epoch 1``: the next epoch of that same pipe: draws only, the weights
  are not read again.
* ``datapipes, function, epoch 0`` / ``epoch 1``: the same with ``weights=fn``, a new
  ``fn(i) = per_class[labels[i]]`` each run: epoch 0 calls it once per element (in this
  process), epoch 1 not at all. The calls are counted and printed.

A second table times the draw alone, the indices as an array with no Python loop per index:
``torch.multinomial(weights, N, replacement=True)`` against the head of the datapipes pipe
(``plan(pipe).index_table(...)``: the index arithmetic an epoch starts with).

Systems alternate in rounds (A B C ..., all in one process); each one's best round is
reported, with its median and its speed against the torch sampler. Every run must deliver N
indices with every class between 9 % and 11 %.

    python benchmarks/weights.py               # 10M elements, 3 rounds
    python benchmarks/weights.py --rounds 5
    python benchmarks/weights.py --n 1000000   # scaled down
    python benchmarks/weights.py --quick       # 200,000 elements, 2 rounds: a smoke run
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from _rounds import alternate, machine, print_table, timed_row
from torch.utils.data import WeightedRandomSampler

import datapipes as dp
from datapipes._graph import EpochContext
from datapipes.plan import plan
from datapipes.stages.sampling import class_weights

CLASSES = 10


class Run(NamedTuple):
    delivered: int  # indices delivered
    worst: float  # the class share furthest from 1 / CLASSES
    calls: int | None  # calls of the weights function during the run (None: no function)


def make_labels(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).geometric(0.3, n) - 1) % CLASSES


def checked(indices: np.ndarray, labels: np.ndarray, calls: int | None = None) -> Run:
    shares = np.bincount(labels[indices], minlength=CLASSES) / len(indices)
    return Run(len(indices), float(np.abs(shares - 1 / CLASSES).max()), calls)


def drain(it: Iterable[int], n: int) -> np.ndarray:
    return np.fromiter(it, dtype=np.int64, count=n)


class Counted:
    """``fn(i) = per_class[labels[i]]`` with a count of its calls."""

    def __init__(self, labels: list[int], per_class: list[float]) -> None:
        calls = 0

        def weight(i: int) -> float:
            nonlocal calls
            calls += 1
            return per_class[labels[i]]

        self.fn = weight
        self.read = lambda: calls


def systems(labels: np.ndarray) -> dict[str, Callable[[], Run]]:
    n = len(labels)
    w = class_weights(labels)
    per_class = (1.0 / np.bincount(labels, minlength=CLASSES)).tolist()
    label_list = labels.tolist()
    source = dp.from_sequence(range(n))
    sampler = WeightedRandomSampler(torch.from_numpy(w), n, replacement=True)
    tw = torch.from_numpy(w)
    #: the pipes made by the epoch-0 runs, for the epoch-1 runs of the same round
    made: dict[str, Any] = {}

    def torch_epoch() -> Run:
        return checked(drain(sampler, n), labels)

    def torch_draw() -> Run:
        return checked(torch.multinomial(tw, n, replacement=True).numpy(), labels)

    def new_pipe(kind: str) -> tuple[dp.Pipe[int], Counted | None]:
        if kind == "array":
            return source | dp.sample(weights=w, replace=True), None
        counted = Counted(label_list, per_class)
        return source | dp.sample(weights=counted.fn, replace=True), counted

    def epoch(kind: str, e: int, *, alone: bool = False) -> Callable[[], Run]:
        def run() -> Run:
            key = f"{kind}{alone}"
            if e == 0:
                made[key] = new_pipe(kind)
            pipe, counted = made[key]
            before = counted.read() if counted else 0
            if alone:
                indices = np.asarray(plan(pipe).index_table(EpochContext(0, e)).rows)
            else:
                indices = drain(pipe.iter(epoch=e), n)
            return checked(indices, labels, counted.read() - before if counted else None)
        return run

    return {
        "torch WeightedRandomSampler": torch_epoch,
        "datapipes, array, epoch 0": epoch("array", 0),
        "datapipes, array, epoch 1": epoch("array", 1),
        "datapipes, function, epoch 0": epoch("function", 0),
        "datapipes, function, epoch 1": epoch("function", 1),
        "draw: torch.multinomial": torch_draw,
        "draw: datapipes head, array, epoch 0": epoch("array", 0, alone=True),
        "draw: datapipes head, array, epoch 1": epoch("array", 1, alone=True),
        "draw: datapipes head, function, epoch 0": epoch("function", 0, alone=True),
        "draw: datapipes head, function, epoch 1": epoch("function", 1, alone=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="elements and draws")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200,000 elements, 2 rounds")
    args = parser.parse_args()
    n, rounds = (200_000, 2) if args.quick else (args.n, args.rounds)

    labels = make_labels(n)
    results: dict[str, list[object]] = {}
    times = alternate(systems(labels), rounds, results=results)
    calls: dict[str, set[int | None]] = {}
    for name, runs in results.items():
        for r in runs:
            assert isinstance(r, Run)
            if r.delivered != n or r.worst > 0.01:
                raise SystemExit(f"{name} delivered {r.delivered} indices, a class off by "
                                 f"{r.worst:.4f}")
            calls.setdefault(name, set()).add(r.calls)

    sizes = np.bincount(labels, minlength=CLASSES) / n
    print(f"# Class-balanced sampling: {n:,} weights (class_weights of {CLASSES} classes, "
          f"{sizes.max():.1%} to {sizes.min():.1%} of the data), {n:,} draws with "
          f"replacement per epoch, best of {rounds} rounds")
    print(f"# {machine()}\n")
    for title, prefix in (("An epoch, each index handed to Python", ""), ("The draw alone",
                                                                          "draw: ")):
        names = [k for k in times if k.startswith("draw: ") == bool(prefix)]
        baseline = min(times[names[0]])
        rows = []
        for name in names:
            called = [c for c in calls[name] if c is not None]
            rows.append(timed_row(name.removeprefix(prefix), times[name], baseline,
                                  f"{max(called):,}" if called else "-"))
        print(f"## {title}\n")
        print_table(rows, ["system", "best s", "median s", "weight calls", "speed vs torch"])
        print()
    worst = max(r.worst for runs in results.values() for r in runs if isinstance(r, Run))
    print(f"every run: {n:,} indices, each class within {worst:.2%} of {1 / CLASSES:.0%}")


if __name__ == "__main__":
    main()
