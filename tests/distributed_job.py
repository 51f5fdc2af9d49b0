"""The job ``tests/test_distributed.py`` runs under ``torchrun``: a tiny DDP training (gloo on
loopback, CPU) over a datapipes loader, recording which elements each rank trained on.

    torchrun --standalone --nproc_per_node=2 tests/distributed_job.py --out DIR --epochs 2 \\
        [--stop-after K] [--resume DIR] [--workers W] [--shard compile|stage]

Each rank writes ``DIR/rank{r}.json``: the epochs it ran, each the ``[id, x]`` of every element
it trained on, in order, and the model's weights at the end. With ``--stop-after K`` the run
stops after ``K`` batches of epoch 0 and saves a checkpoint in ``DIR``: each rank its
``loader.state_dict()`` (``loader-rank{r}.json``), rank 0 the model and optimizer
(``model.pt``). ``--resume DIR`` loads such a checkpoint and finishes the run.
``--shard compile`` shards with ``compile(rank=, world_size=)``, ``--shard stage`` with
``shard_by_rank()`` (its defaults: ``torch.distributed``'s rank and world size) placed by hand
where compile would put it.

It is a script, not a test module: pytest only imports it, for the example below.

>>> ex = make_example(3, np.random.default_rng(0))
>>> ex["id"], ex["x"].shape, ex["x"].dtype, float(ex["y"]) == float(ex["x"].sum())
(3, (4,), dtype('float32'), True)
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import datapipes as dp

N = 203  # not a multiple of the world size: even="drop" drops one element per epoch
BATCH = 8
FEATURES = 4


def make_example(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """Element ``i``: random features (drawn from the element's own generator) and a target."""
    x = rng.normal(size=FEATURES).astype(np.float32)
    return {"id": i, "x": x, "y": np.float32(x.sum())}


def build_pipe(n: int = N, batch: int = BATCH, *, shard_stage: bool = False) -> dp.Pipe[Any]:
    """The training pipe; with ``shard_stage``, ``shard_by_rank()`` right after the shuffle."""
    pipe = dp.from_sequence(range(n)) | dp.shuffle()
    if shard_stage:
        pipe = pipe | dp.shard_by_rank()
    return pipe | dp.map(make_example, rng=True) | dp.batch(batch) | dp.collate()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--resume", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard", choices=("compile", "stage"), default="compile")
    parser.add_argument("--n", type=int, default=N)
    return parser.parse_args()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def train(args: argparse.Namespace, rank: int, world_size: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pipe = build_pipe(args.n, shard_stage=args.shard == "stage")
    ranks = {"rank": rank, "world_size": world_size} if args.shard == "compile" else {}
    loader = pipe.compile(workers=args.workers, backend="process", **ranks)
    if args.resume is not None:
        checkpoint = torch.load(args.resume / "model.pt")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(json.loads((args.resume / f"loader-rank{rank}.json").read_text()))
    ddp = DistributedDataParallel(model)
    record: dict[str, Any] = {"rank": rank, "world_size": world_size,
                              "pipe": repr(loader.pipe), "epochs": {}}
    with loader:
        for epoch in range(loader.epoch, args.epochs):
            loader.set_epoch(epoch)  # the epoch it is on already: keeps a resumed position
            seen = record["epochs"].setdefault(str(epoch), [])
            for step, batch in enumerate(loader, start=1):
                loss = torch.nn.functional.mse_loss(ddp(batch["x"]).squeeze(1), batch["y"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                seen.extend(zip(batch["id"].tolist(), batch["x"].tolist(), strict=True))
                if args.stop_after is not None and epoch == 0 and step == args.stop_after:
                    write_json(args.out / f"loader-rank{rank}.json", loader.state_dict())
                    if rank == 0:
                        torch.save({"model": model.state_dict(),
                                    "optimizer": optimizer.state_dict()}, args.out / "model.pt")
                    write_json(args.out / f"rank{rank}.json", record)
                    dist.barrier()  # every checkpoint file is written before any rank exits
                    return
    record["weights"] = [p.detach().flatten().tolist() for p in model.parameters()]
    write_json(args.out / f"rank{rank}.json", record)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        train(args, dist.get_rank(), dist.get_world_size())
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
