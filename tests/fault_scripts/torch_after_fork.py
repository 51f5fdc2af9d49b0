"""Fork workers after torch ran a parallel op in the main process, then use torch in them.

Usage: ``python torch_after_fork.py THREADS``. The main process sets torch's intra-op
threads to THREADS (0: torch's default), multiplies two 1000×1000 matrices (which starts
torch's OpenMP thread pool), then runs a loader with 2 forked workers whose map multiplies
matrices too. A forked child inherits the pool's state but not its threads: its first
parallel op waited for them forever. Prints one JSON line: the outputs and each worker's
thread count.
"""

from __future__ import annotations

import json
import sys

import torch

import datapipes as dp


def matmul(x: int) -> tuple[float, int]:
    product = torch.ones(500, 500) @ torch.ones(500, 500)
    return float(product[0, 0]) + x, torch.get_num_threads()


def main(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    assert float((torch.ones(1000, 1000) @ torch.ones(1000, 1000))[0, 0]) == 1000.0
    pipe = dp.from_sequence(range(8)) | dp.map(matmul)
    with pipe.compile(workers=2, start_method="fork") as loader:
        got = list(loader)
    print(json.dumps({"values": [v for v, _ in got], "threads": sorted({t for _, t in got}),
                      "main threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
