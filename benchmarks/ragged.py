"""Variable-length token sequences, batched and padded: bucketing against plain batches.

Workload: 20,000 token sequences (int64 NumPy arrays, lengths uniform in 5..300, seed 0),
batches of 32 padded with zeros to their longest sequence, 2 worker processes (fork), one
epoch per run, in order (no shuffle). Each run builds its loader, runs the epoch and stops
it: worker startup is in every time.

* ``datapipes, bucket_by_length``: ``from_sequence(seqs) | bucket_by_length(boundaries,
  [32] * 15) | collate(pad_numpy)``, boundaries 20, 40, ..., 280 (15 buckets of 32).
  ``bucket_by_length`` holds a buffer per bucket, so it and the ``collate`` after it run in
  the main process; the workers fetch the sequences.
* ``datapipes, batch(32)``: ``from_sequence(seqs) | batch(32) | collate(pad_numpy)``, plain
  sequential batches: each batch is fetched and padded by one worker (a control: the same
  batches as the DataLoader).
* ``datapipes, bucket_by_length, in process``: the first pipe compiled with ``workers=0``
  (a control: what the bucketing and padding cost without the workers' transport; here the
  workers have no work but fetching ``seqs[i]``).
* ``DataLoader``: a map-style Dataset returning ``torch.from_numpy(seq)``, ``batch_size=32``,
  ``num_workers=2``, ``collate_fn`` padding with ``torch.nn.utils.rnn.pad_sequence``.

``pad_numpy`` writes the batch into one zeroed ``(32, longest)`` int64 array and hands it over
as a tensor (``torch.from_numpy``, no copy). Reported per system: its best and median epoch,
MB/s of padded batches delivered (the padded tensors' bytes over the epoch's time), the
fraction of the padded tensors that is padding, and its speed (epoch time) against the
DataLoader. Every system must deliver every sequence once, with the same sum of tokens.

    python benchmarks/ragged.py              # 5 rounds
    python benchmarks/ragged.py --rounds 9
    python benchmarks/ragged.py --quick      # 2,000 sequences, 2 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from _rounds import alternate, machine, print_table, timed_row
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

import datapipes as dp
from datapipes.stages.ragged import bucket_by_length

WORKERS = 2
BATCH = 32
MIN_LENGTH, MAX_LENGTH = 5, 300
BOUNDARIES = list(range(20, MAX_LENGTH, 20))


class Run(NamedTuple):
    sequences: int
    tokens: int  # real tokens delivered
    padded: int  # elements of the padded tensors (tokens + padding)
    nbytes: int  # bytes of the padded tensors
    checksum: int  # sum of every token (padding adds 0)


def make_sequences(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, size=n)
    return [rng.integers(1, 50_000, size=int(k), dtype=np.int64) for k in lengths]


def pad_numpy(batch: Sequence[np.ndarray]) -> torch.Tensor:
    """A padding collate in NumPy: one zeroed (batch, longest) int64 array."""
    out = np.zeros((len(batch), max(len(s) for s in batch)), np.int64)
    for row, seq in zip(out, batch, strict=True):
        row[: len(seq)] = seq
    return torch.from_numpy(out)


def pad_torch(batch: list[torch.Tensor]) -> torch.Tensor:
    return pad_sequence(batch, batch_first=True, padding_value=0)


class Sequences(Dataset[torch.Tensor]):
    def __init__(self, seqs: list[np.ndarray]) -> None:
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.seqs[i])


def drain(batches: Iterable[torch.Tensor]) -> Run:
    sequences = tokens = padded = nbytes = checksum = 0
    for b in batches:
        sequences += b.shape[0]
        tokens += int(torch.count_nonzero(b))  # tokens are >= 1, padding 0
        padded += b.numel()
        nbytes += b.numel() * b.element_size()
        checksum += int(b.sum())
    return Run(sequences, tokens, padded, nbytes, checksum)


def systems(seqs: list[np.ndarray]) -> dict[str, Callable[[], Run]]:
    source = dp.from_sequence(seqs)
    bucketed = source | bucket_by_length(BOUNDARIES, [BATCH] * (len(BOUNDARIES) + 1)) | dp.collate(
        pad_numpy)
    plain = source | dp.batch(BATCH) | dp.collate(pad_numpy)

    def compiled(pipe: dp.Pipe[Any], workers: int = WORKERS) -> Callable[[], Run]:
        def run() -> Run:
            with pipe.compile(workers=workers, start_method="fork") as loader:
                return drain(loader)
        return run

    def dataloader() -> Run:
        loader = DataLoader(Sequences(seqs), batch_size=BATCH, num_workers=WORKERS,
                            collate_fn=pad_torch, multiprocessing_context="fork")
        return drain(loader)

    return {
        "datapipes, bucket_by_length": compiled(bucketed),
        "datapipes, batch(32)": compiled(plain),
        "datapipes, bucket_by_length, in process": compiled(bucketed, workers=0),
        "DataLoader, pad_sequence": dataloader,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 sequences, 2 rounds")
    args = parser.parse_args()
    n, rounds = (2_000, 2) if args.quick else (20_000, args.rounds)

    seqs = make_sequences(n)
    expected = (n, sum(len(s) for s in seqs), sum(int(s.sum()) for s in seqs))
    results: dict[str, list[object]] = {}
    times = alternate(systems(seqs), rounds, results=results)
    for name, runs in results.items():
        for r in runs:
            assert isinstance(r, Run)
            got = (r.sequences, r.tokens, r.checksum)
            if got != expected:
                raise SystemExit(f"{name} delivered {got}, expected {expected}")

    print(f"# Ragged batches: {n:,} int64 token sequences, lengths {MIN_LENGTH}..{MAX_LENGTH}, "
          f"batches of {BATCH} padded, {WORKERS} workers (fork), best of {rounds} rounds")
    print(f"# {machine()}\n")
    baseline = min(times["DataLoader, pad_sequence"])
    rows = []
    for name, ts in times.items():
        run = results[name][0]
        assert isinstance(run, Run)
        rows.append(timed_row(name, ts, baseline, f"{run.nbytes / min(ts) / 1e6:,.1f}",
                              f"{1 - run.tokens / run.padded:.1%}",
                              f"{run.sequences / min(ts):,.0f}"))
    print_table(rows, ["system", "best s", "median s", "MB/s padded", "padding",
                       "sequences/s", "speed vs DataLoader"])


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - start:.0f} s in all)")
