"""Shards: many records per file, files mixed with ``interleave``, resumable mid-epoch.

The data is 12 ``.npy`` shard files of 50 records each (an 8x8 float32 "image" per record),
written into a temporary directory, so nothing is downloaded. The script shows that

- ``from_sequence(paths) | shuffle()`` picks a new shard order each epoch (index arithmetic:
  no file is opened to decide it), and ``interleave(read_shard, cycle_length=4)`` reads four
  shards at a time, a record from each in turn, so a batch mixes shards;
- ``shuffle(buffer=128)`` mixes records further, and the per-record work (``map``) runs in the
  workers while the shards are read in the main process (``explain()`` says so);
- the loader yields exactly the in-process batches, and a state saved mid-epoch resumes with
  the rest of the epoch;
- ``shard_by_rank`` before ``interleave`` gives each rank its own shards: the ranks read
  disjoint files and together see every record.

Run it with ``.venv/bin/python examples/shards.py``.
"""

import os
import tempfile

import numpy as np
import torch

import datapipes as dp

N_SHARDS, PER_SHARD = 12, 50


def write_shards(directory):
    """Shard s holds records s * 50 ... s * 50 + 49; record r is an 8x8 image of mean r."""
    rng = np.random.default_rng(0)
    paths = []
    for s in range(N_SHARDS):
        first = s * PER_SHARD
        means = np.arange(first, first + PER_SHARD, dtype=np.float32)[:, None, None]
        records = (means + rng.normal(size=(PER_SHARD, 8, 8))).astype(np.float32)
        paths.append(os.path.join(directory, f"shard-{s:02d}.npy"))
        np.save(paths[-1], records)
    return paths


def read_shard(path):
    """The records of one shard, one at a time (a memory map: nothing is read up front)."""
    yield from np.load(path, mmap_mode="r")


def to_example(record):
    """A record as a training example: the image with a channel axis, and its index."""
    image = np.array(record)  # out of the memory map
    return {"image": image[None], "index": round(float(image.mean()))}


def shard_pipe(paths):
    return (
        dp.from_sequence(paths)
        | dp.shuffle()
        | dp.interleave(read_shard, cycle_length=4)
        | dp.shuffle(buffer=128)
        | dp.map(to_example)
        | dp.batch(32)
        | dp.collate()
    )


def same_batches(a, b):
    return len(a) == len(b) and all(
        torch.equal(x["image"], y["image"]) and torch.equal(x["index"], y["index"])
        for x, y in zip(a, b, strict=True)
    )


def main():
    with tempfile.TemporaryDirectory() as directory:
        paths = write_shards(directory)
        pipe = shard_pipe(paths)
        reference = list(pipe.iter(epoch=0))
        records = sorted(i for b in reference for i in b["index"].tolist())
        print(f"epoch 0: {len(reference)} batches, every record once: "
              f"{records == list(range(N_SHARDS * PER_SHARD))}")
        first = reference[0]["index"].tolist()
        print(f"the first batch mixes {len({i // PER_SHARD for i in first})} shards")

        with pipe.compile(workers=2) as loader:
            print(loader.explain())
            it = iter(loader)
            head = [next(it) for _ in range(5)]
            state = loader.state_dict()  # after 5 batches
            rest = list(it)
        print(f"compile(workers=2) equals the reference: "
              f"{same_batches(head + rest, reference)}")
        with pipe.compile(workers=2) as resumed:
            resumed.load_state_dict(state)
            print(f"resumed after 5 batches, the rest is the same: "
                  f"{same_batches(list(resumed), rest)}")

        per_rank = []
        for rank in range(2):
            ranked = (
                dp.from_sequence(paths)
                | dp.shard_by_rank(rank=rank, world_size=2)
                | dp.interleave(read_shard, cycle_length=4)
                | dp.map(to_example)
            )
            per_rank.append({x["index"] // PER_SHARD for x in ranked})
        print(f"ranks read disjoint shards that cover all: "
              f"{not per_rank[0] & per_rank[1] and len(per_rank[0] | per_rank[1]) == N_SHARDS}")


if __name__ == "__main__":
    main()
