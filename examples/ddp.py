"""Distributed data-parallel training with datapipes: CPU, gloo, synthetic data, no network.

Run it with two processes on this machine:

    torchrun --standalone --nproc_per_node=2 examples/ddp.py

Then interrupt a run and resume it from its checkpoint:

    torchrun --standalone --nproc_per_node=2 examples/ddp.py --stop-after 30
    torchrun --standalone --nproc_per_node=2 examples/ddp.py --resume

The second run finishes exactly as the first would have gone on: the same batches on each
rank, in the same order, with the same random augmentations.

What it shows:

- ``pipe.compile(rank=, world_size=)`` gives each rank its own share of every epoch. The
  share is taken after the shuffle, which every rank computes alike (same seed), so the
  shares are disjoint; ``even="drop"`` (what compile uses) gives every rank the same number
  of batches, so no rank waits forever in DDP's all-reduce for one that ran out of data.
- Epochs: each pass over the loader is the next epoch (a new shuffle, new augmentations);
  ``loader.set_epoch(e)`` says which explicitly, as with ``DistributedSampler``.
- Checkpoints: each rank saves its ``loader.state_dict()`` (plain data) with the model and
  optimizer, in a file of its own, since every rank has its own position in its own share.
  A new loader given ``load_state_dict`` goes on from there.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import datapipes as dp

FEATURES = 16
TRUE_WEIGHTS = np.linspace(-1.0, 1.0, FEATURES).astype(np.float32)


class SyntheticRegression:
    """A map-style dataset of ``size`` examples ``x -> x @ TRUE_WEIGHTS + noise``, each
    computed from its index (as a real dataset would read it from disk)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(i)
        x = rng.normal(size=FEATURES).astype(np.float32)
        y = np.float32(x @ TRUE_WEIGHTS + 0.01 * rng.normal())
        return {"x": x, "y": y}

    def __repr__(self) -> str:
        return f"SyntheticRegression({self.size})"


def augment(example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Jitter the features a little: different in every epoch, the same on every rerun."""
    jitter = rng.normal(0.0, 0.05, size=FEATURES).astype(np.float32)
    return {"x": example["x"] + jitter, "y": example["y"]}


def build_pipe(size: int, batch_size: int) -> dp.Pipe:
    return (
        dp.from_sequence(SyntheticRegression(size))
        | dp.shuffle()
        | dp.map(augment, rng=True)
        | dp.batch(batch_size)
        | dp.collate()
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DDP training with datapipes on CPU")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=2_000, help="examples in the dataset")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--workers", type=int, default=2, help="loader workers per rank")
    parser.add_argument("--checkpoint-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "datapipes-ddp-example")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="save a checkpoint after this many steps and stop (a crash)")
    parser.add_argument("--resume", action="store_true", help="go on from the checkpoint")
    return parser.parse_args()


def checkpoint_path(directory: Path, rank: int) -> Path:
    return directory / f"rank{rank}.pt"


def save_checkpoint(directory: Path, rank: int, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, loader: dp.Loader) -> None:
    """Each rank saves its own file: the model (the same on every rank), the optimizer, and
    where this rank's loader stands in its share."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, rank)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict()}, tmp)
    os.replace(tmp, path)  # a crash while saving leaves the previous checkpoint whole
    dist.barrier()  # every rank's file is written before anyone goes on (or stops)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    try:
        train(args, rank, world_size)
    finally:
        dist.destroy_process_group()


def train(args: argparse.Namespace, rank: int, world_size: int) -> None:
    torch.manual_seed(0)  # DDP copies rank 0's initial weights to every rank anyway
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    pipe = build_pipe(args.size, args.batch_size)
    # The shard goes right after the shuffle: this rank's share of each epoch.
    loader = pipe.compile(workers=args.workers, rank=rank, world_size=world_size, seed=0)
    step = 0
    if args.resume:
        checkpoint = torch.load(checkpoint_path(args.checkpoint_dir, rank))
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
        if rank == 0:
            print(f"resumed at step {step}, epoch {loader.epoch} from {args.checkpoint_dir}")
    ddp = DistributedDataParallel(model)
    if rank == 0:
        print(f"{world_size} ranks; rank 0 runs {loader.pipe!r}; {len(loader)} batches per "
              "rank per epoch")

    with loader:
        # After load_state_dict, loader.epoch is the epoch the checkpoint was taken in.
        for epoch in range(loader.epoch, args.epochs):
            loader.set_epoch(epoch)  # the same epoch: the resumed position is kept
            start, batches, total = time.perf_counter(), 0, 0.0
            for batch in loader:
                loss = torch.nn.functional.mse_loss(ddp(batch["x"]).squeeze(1), batch["y"])
                optimizer.zero_grad()
                loss.backward()  # DDP averages the gradients of all ranks here
                optimizer.step()
                step, batches, total = step + 1, batches + 1, total + loss.item()
                if step == args.stop_after:
                    save_checkpoint(args.checkpoint_dir, rank, step, model, optimizer, loader)
                    if rank == 0:
                        print(f"stopped after step {step} (epoch {epoch}); checkpoint in "
                              f"{args.checkpoint_dir}; rerun with --resume to finish")
                    return
            # Every rank ran as many batches: even="drop" made the shares the same size.
            counts = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size)]
            dist.all_gather(counts, torch.tensor([batches]))
            save_checkpoint(args.checkpoint_dir, rank, step, model, optimizer, loader)
            if rank == 0:
                print(f"epoch {epoch}: batches per rank {[int(c) for c in counts]}, mean loss "
                      f"{total / max(batches, 1):.4f}, {time.perf_counter() - start:.2f} s")
    if rank == 0:
        error = np.abs(model.weight.detach().numpy().ravel() - TRUE_WEIGHTS).max()
        print(f"done after {step} steps; largest weight error {error:.3f}")


if __name__ == "__main__":
    main()
