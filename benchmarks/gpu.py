"""What a 2-core machine cannot show: CUDA transfer and scaling to 8-16 workers.

Run on a machine with a CUDA GPU and many cores (we used a lent H100 machine with 16
cores): ``PYTHONPATH=. python benchmarks/gpu.py [--quick]``. It prints three tables:

1. checks: ``pin_memory=True`` delivers pinned tensors and ``device="cuda"`` delivers
   tensors on the GPU, equal to the reference (``pipe.iter()``);
2. large batches to the GPU: 1,024 float32 3×224×224 elements in batches of 32, made by
   ``workers`` processes, copied to the GPU ahead of use (datapipes ``device="cuda"``, a
   side stream) versus DataLoader ``pin_memory=True`` + ``.to("cuda", non_blocking=True)``;
   MB/s delivered on the GPU, best of the rounds, the systems alternating;
3. a CPU-bound map (~2 ms of pure Python per element) over 1, 2, 4, 8 and 16 workers:
   throughput and parallel efficiency (throughput / (workers × serial throughput)),
   datapipes and DataLoader side by side.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import datapipes as dp

try:
    from benchmarks._rounds import alternate, print_table
except ImportError:  # run as a script from benchmarks/
    from _rounds import alternate, print_table  # type: ignore[no-redef]

SHAPE = (3, 224, 224)


def make_image(i: int) -> np.ndarray:
    return np.full(SHAPE, i % 251, dtype=np.float32)


def spin(n: int) -> int:
    total = 0
    for k in range(n):
        total += k * k % 7
    return total


SPIN = 0  # calibrated in main(): iterations for ~2 ms


def cpu_work(i: int) -> int:
    return spin(SPIN) + i


class Images(Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return make_image(i)


class Work(Dataset):  # type: ignore[type-arg]
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return cpu_work(i)


def checks() -> list[list[object]]:
    pipe = dp.from_sequence(range(64)) | dp.map(make_image) | dp.batch(8) | dp.collate()
    ref = list(pipe)
    rows: list[list[object]] = []
    with pipe.compile(workers=2, pin_memory=True) as loader:
        got = list(loader)
    rows.append(["pin_memory=True", all(b.is_pinned() for b in got),
                 all(torch.equal(a, b) for a, b in zip(ref, got, strict=True))])
    with pipe.compile(workers=2, device="cuda") as loader:
        got = list(loader)
    rows.append(["device='cuda'", all(b.is_cuda for b in got),
                 all(torch.equal(a, b.cpu()) for a, b in zip(ref, got, strict=True))])
    return rows


def _on_gpu(loader: object, move: bool) -> float:
    total = torch.zeros((), device="cuda")
    for b in loader:  # type: ignore[attr-defined]
        if move:
            b = b.to("cuda", non_blocking=True)
        total += b[0, 0, 0, 0]
    torch.cuda.synchronize()
    return float(total)


def _total(loader: object) -> int:
    return sum(int(x) for x in loader)  # type: ignore[attr-defined]


def transfer(rounds: int, workers_list: list[int]) -> list[list[object]]:
    n, batch = 1024, 32
    nbytes = n * int(np.prod(SHAPE)) * 4
    pipe = dp.from_sequence(range(n)) | dp.map(make_image) | dp.batch(batch) | dp.collate()
    rows: list[list[object]] = []
    for workers in workers_list:
        loader = pipe.compile(workers=workers, device="cuda", prefetch=4)
        torch_loader = DataLoader(Images(n), batch_size=batch, num_workers=workers,
                                  pin_memory=True, persistent_workers=True, prefetch_factor=4)

        run_dp = functools.partial(_on_gpu, loader, False)
        run_torch = functools.partial(_on_gpu, torch_loader, True)
        run_dp(), run_torch()  # start the workers
        results: dict[str, list[object]] = {}
        times = alternate({"datapipes": run_dp, "DataLoader": run_torch}, rounds,
                          results=results)
        assert results["datapipes"] == results["DataLoader"], results
        best = {k: min(v) for k, v in times.items()}
        rows.append([workers, f"{nbytes / best['datapipes'] / 1e6:,.0f}",
                     f"{nbytes / best['DataLoader'] / 1e6:,.0f}",
                     f"{best['DataLoader'] / best['datapipes']:.2f}"])
        loader.close()
        del torch_loader
    return rows


def scaling(rounds: int, workers_list: list[int], n_per_worker: int) -> list[list[object]]:
    serial = 0.0
    for _ in range(5):  # best of five, warm: the serial rate is the yardstick of efficiency
        start = time.perf_counter()
        for i in range(200):
            cpu_work(i)
        serial = max(serial, 200 / (time.perf_counter() - start))
    rows: list[list[object]] = []
    for workers in workers_list:
        n = n_per_worker * workers
        pipe = dp.from_sequence(range(n)) | dp.map(cpu_work)
        loader = pipe.compile(workers=workers, prefetch=4)
        torch_loader = DataLoader(Work(n), batch_size=None, num_workers=workers,
                                  persistent_workers=True, prefetch_factor=4)
        times = alternate({"datapipes": functools.partial(_total, loader),
                           "DataLoader": functools.partial(_total, torch_loader)}, rounds)
        best = {k: min(v) for k, v in times.items()}
        eff = {k: n / t / (workers * serial) for k, t in best.items()}
        rows.append([workers, f"{n / best['datapipes']:,.0f}", f"{eff['datapipes']:.0%}",
                     f"{n / best['DataLoader']:,.0f}", f"{eff['DataLoader']:.0%}"])
        loader.close()
        del torch_loader
    return rows


def main() -> None:
    global SPIN
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    SPIN = 1000
    start = time.perf_counter()
    spin(SPIN)
    SPIN = max(1, int(SPIN * 0.002 / (time.perf_counter() - start)))
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA'}")
    if torch.cuda.is_available():
        print_table(checks(), ["check", "placed", "equals reference"])
        print(f"\nlarge batches to the GPU, MB/s ({args.rounds} rounds, best of each)")
        print_table(transfer(args.rounds, [2] if args.quick else [2, 4, 8]),
                    ["workers", "datapipes", "DataLoader", "ratio"])
    print(f"\nCPU-bound map, ~2 ms per element ({args.rounds} rounds, best of each)")
    print_table(scaling(args.rounds, [1, 2] if args.quick else [1, 2, 4, 8, 16],
                        20 if args.quick else 40),
                ["workers", "datapipes el/s", "efficiency", "DataLoader el/s", "efficiency"])


if __name__ == "__main__":
    main()
