"""Per-element overhead: 1,000,000 ints through 5 maps and ``batch(64)``, in one process.

Every system computes the same thing, lists of 64 ints ``i + 5``, and is iterated to the end
by the same consumer (``sum(map(len, batches))``):

* ``hand``: plain generators written by hand, the baseline: a source generator, 5 chained
  generators each ``for x in it: yield inc(x)``, and lists of 64 cut with ``itertools.islice``;
* ``datapipes``: ``dp.from_sequence(range(n)) | dp.map(inc) | ... (5 maps) | dp.batch(64)``;
* ``DataLoader``: ``torch.utils.data.DataLoader(num_workers=0, batch_size=64)`` over a
  map-style Dataset whose ``__getitem__`` applies ``inc`` 5 times, with an identity
  ``collate_fn``, so no tensor is made (like for like: the batches are lists of ints);
* ``torchdata.nodes`` (0.11.0): ``IterableWrapper(range(n))``, 5 ``Mapper``, ``Batcher(64)``,
  ``Loader``;
* ``Grain`` (0.2.18): ``MapDataset.range(n)``, 5 ``.map``, ``.batch(64, batch_fn=list)``,
  iterated with ``ReadOptions(num_threads=0)`` (in this thread, like the others).

The peers come from the ``bench`` extra; each one that does not import is reported as
"not installed" and skipped. The systems run in alternating rounds (see ``_rounds.py``);
the table gives each system's best round as time per item and items per second, its median
round, and the ratio of best times to ``hand``. Before timing, every system's output on a
small ``n`` is compared with ``hand``'s, and every timed run must yield ``n`` items.

    python benchmarks/overhead.py                 # n = 1,000,000, 5 rounds
    python benchmarks/overhead.py --rounds 9 --n 200000

Instruction counts do not swing with the machine's speed. ``--callgrind --system S`` runs
one system, a warm-up on 1,000 items (imports, bytecode specialisation) and then the measured
run inside ``sys.call_tracing``, which nothing else calls: valgrind's
``--toggle-collect=sys_call_tracing`` counts that run alone, leaving out the imports (whose
counts vary from run to run by more than the whole measured run). Running ``n = 0`` too and
taking the difference removes what is paid once per run (building the pipe, planning);
``PYTHONHASHSEED=0`` fixes dict and set layouts. The exact commands, from the repository root
with the project's Python (about 2 minutes, mostly importing torch under valgrind)::

    mkdir -p benchmarks/out
    for s in hand datapipes; do for n in 0 100000; do
      PYTHONHASHSEED=0 valgrind --tool=callgrind --toggle-collect=sys_call_tracing \\
        --callgrind-out-file=benchmarks/out/callgrind.$s.$n \\
        python benchmarks/overhead.py --callgrind --system $s --n $n
    done; done
    python benchmarks/overhead.py --callgrind-report benchmarks/out

The last command reads the four files' totals and prints instructions per item,
``(Ir(n) - Ir(0)) / n``, for both systems and their ratio; repeated, the counts agree to
within 0.1 % (address-space layout still moves a few dict probes).
``callgrind_annotate benchmarks/out/callgrind.datapipes.100000`` shows where they go. The
Python must keep its symbols (pyenv and Debian builds do).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from _rounds import alternate, machine, print_table

BATCH = 64
MAPS = 5
WARM_UP = 1_000  # items run before a callgrind measurement


def inc(x: int) -> int:
    return x + 1


def consume(batches: Iterable[list[int]]) -> int:
    """The consumer every system gets: count the items."""
    return sum(map(len, batches))


# -- hand-written generators (the baseline) ------------------------------------------------


def hand_source(n: int) -> Iterator[int]:
    yield from range(n)


def hand_map(it: Iterable[int]) -> Iterator[int]:
    for x in it:
        yield inc(x)


def hand_batch(it: Iterable[int], size: int) -> Iterator[list[int]]:
    it = iter(it)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def hand_batches(n: int) -> Iterator[list[int]]:
    it: Iterator[int] = hand_source(n)
    for _ in range(MAPS):
        it = hand_map(it)
    return hand_batch(it, BATCH)


# -- the systems: n -> an iterator of lists of ints ---------------------------------------


def datapipes_pipe(n: int) -> Any:
    # imported here, like the peers, so that `--callgrind --system hand` does not load it
    import datapipes as dp

    pipe = dp.from_sequence(range(n))
    for _ in range(MAPS):
        pipe = pipe | dp.map(inc)
    return pipe | dp.batch(BATCH)


def datapipes_batches(n: int) -> Iterator[list[int]]:
    return iter(datapipes_pipe(n))


def metered_batches(n: int) -> Iterator[list[int]]:
    """The same pipe with every stage metered for ``loader.stats()``: what that costs."""
    return iter(datapipes_pipe(n).compile(stats=True))


class IncDataset:
    """A map-style Dataset doing all 5 ``inc`` in ``__getitem__`` (DataLoader's usual form)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return inc(inc(inc(inc(inc(i)))))


def identity(batch: list[int]) -> list[int]:
    return batch


def dataloader_batches(n: int) -> Iterator[list[int]]:
    from torch.utils.data import DataLoader

    dataset: Any = IncDataset(n)
    return iter(DataLoader(dataset, batch_size=BATCH, num_workers=0, collate_fn=identity))


def nodes_batches(n: int) -> Iterator[list[int]]:
    import torchdata.nodes as tn

    node: Any = tn.IterableWrapper(range(n))
    for _ in range(MAPS):
        node = tn.Mapper(node, inc)
    return iter(tn.Loader(tn.Batcher(node, BATCH, drop_last=False)))


def grain_batches(n: int) -> Iterator[list[int]]:
    import grain

    ds = grain.MapDataset.range(n)
    for _ in range(MAPS):
        ds = ds.map(inc)
    ds = ds.batch(BATCH, batch_fn=list)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


#: name -> (module whose import failing means "not installed", n -> batches)
SYSTEMS: dict[str, tuple[str | None, Callable[[int], Iterator[list[int]]]]] = {
    "hand": (None, hand_batches),
    "datapipes": ("datapipes", datapipes_batches),
    "datapipes, compile(stats=True)": ("datapipes", metered_batches),
    "DataLoader": ("torch", dataloader_batches),
    "torchdata.nodes": ("torchdata.nodes", nodes_batches),
    "Grain": ("grain", grain_batches),
}


def available() -> dict[str, Callable[[int], Iterator[list[int]]]]:
    found = {}
    for name, (module, batches) in SYSTEMS.items():
        if module is not None:
            try:
                __import__(module)
            except ImportError as exc:
                if name == "datapipes":
                    raise SystemExit(
                        f"cannot import datapipes ({exc}): install it (pip install -e .) or "
                        "run with PYTHONPATH set to the repository root"
                    ) from exc
                print(f"{name}: not installed ({exc})")
                continue
        found[name] = batches
    return found


def check_outputs(systems: dict[str, Callable[[int], Iterator[list[int]]]], n: int) -> None:
    """Every system's batches on a small ``n`` equal the hand-written ones."""
    expected = list(hand_batches(n))
    for name, batches in systems.items():
        got = [list(b) for b in batches(n)]
        if got != expected:
            raise SystemExit(f"{name}: output differs from the hand-written generators (n={n})")
    print(f"outputs equal to hand-written on n={n}: {', '.join(systems)}")


def bench(n: int, rounds: int) -> None:
    systems = available()
    check_outputs(systems, min(n, 10_000) + 37)  # + 37: a short last batch
    print(f"machine: {machine()}")
    print(f"n = {n:,}, {MAPS} maps, batch({BATCH}); {rounds} rounds of {', '.join(systems)}")
    counts: dict[str, list[object]] = {}
    runs: dict[str, Callable[[], object]] = {
        name: functools.partial(consume_batches, batches, n) for name, batches in systems.items()
    }
    times = alternate(runs, rounds, results=counts)
    for name, got in counts.items():
        if any(c != n for c in got):
            raise SystemExit(f"{name}: yielded {got} items per round, expected {n}")
    base = min(times["hand"])
    rows = []
    for name, ts in times.items():
        best = min(ts)
        rows.append(
            (
                name,
                f"{best / n * 1e9:.0f}",
                f"{n / best:,.0f}",
                f"{statistics.median(ts) / n * 1e9:.0f}",
                f"{best / base:.2f}",
            )
        )
    print(f"{rounds} rounds ran; every system yielded {n:,} items in every round")
    headers = ["system", "best ns/item", "best items/s", "median ns/item", "best ÷ hand"]
    print_table(rows, headers)


def callgrind_once(system: str, n: int) -> None:
    """One run of one system, the unit measured under valgrind.

    A warm-up run on a few items first does the imports and lets the interpreter specialise
    the bytecode; then the measured run goes through ``sys.call_tracing``, a C function that
    nothing else calls, so ``--toggle-collect=sys_call_tracing`` counts that run alone.
    """
    batches = SYSTEMS[system][1]
    consume(batches(WARM_UP))
    start = time.perf_counter()
    count = sys.call_tracing(consume_batches, (batches, n))
    print(f"{system}: {count} items in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    if count != n:
        raise SystemExit(f"{system}: yielded {count} items, expected {n}")


def consume_batches(batches: Callable[[int], Iterator[list[int]]], n: int) -> int:
    return consume(batches(n))


def callgrind_report(folder: pathlib.Path) -> None:
    """Instructions per item from ``callgrind.<system>.<n>`` files (see the docstring)."""
    totals: dict[str, dict[int, int]] = {}
    for path in sorted(folder.glob("callgrind.*.*")):
        _, system, n = path.name.rsplit(".", 2)
        for line in path.read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                totals.setdefault(system, {})[int(n)] = int(line.split()[1])
                break
    rows = []
    per_item: dict[str, float] = {}
    for system, by_n in totals.items():
        sizes = sorted(by_n)
        if len(sizes) < 2:
            raise SystemExit(f"{system}: need runs for two n (e.g. 0 and 100000), got {sizes}")
        lo, hi = sizes[0], sizes[-1]
        if by_n[hi] == 0:
            raise SystemExit(
                f"{system}: callgrind counted nothing at n={hi}: run valgrind with "
                "--toggle-collect=sys_call_tracing, on a Python whose symbols are not stripped"
            )
        per_item[system] = (by_n[hi] - by_n[lo]) / (hi - lo)
        rows.append((system, f"{by_n[lo]:,}", f"{by_n[hi]:,}", f"{per_item[system]:,.1f}"))
    print_table(rows, ["system", "Ir at n_lo", "Ir at n_hi", "Ir per item"])
    if "hand" in per_item and "datapipes" in per_item:
        ratio = per_item["datapipes"] / per_item["hand"]
        print(f"datapipes ÷ hand, instructions per item: {ratio:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=None, help="items (default 1,000,000; 100,000 with --callgrind)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all systems (5)")
    parser.add_argument(
        "--callgrind", action="store_true", help="run --system once, for running under valgrind"
    )
    parser.add_argument("--system", choices=["hand", "datapipes"], default="datapipes")
    parser.add_argument(
        "--callgrind-report",
        type=pathlib.Path,
        metavar="DIR",
        help="print instructions per item from callgrind.<system>.<n> files",
    )
    args = parser.parse_args(argv)
    if args.callgrind_report is not None:
        callgrind_report(args.callgrind_report)
    elif args.callgrind:
        callgrind_once(args.system, 100_000 if args.n is None else args.n)
    else:
        bench(1_000_000 if args.n is None else args.n, args.rounds)


if __name__ == "__main__":
    main()
