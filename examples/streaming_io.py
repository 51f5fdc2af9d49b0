"""Streaming I/O: a pipe over a stream of files, loaded on a thread pool, in order.

The data is 200 small ``.npy`` files (an 8x8 float32 "image" each) written into a temporary
directory, so nothing is downloaded. The script shows that

- a stream source can be a function that returns a fresh iterator each epoch (here, the sorted
  list of file names), so every epoch reads the files again;
- ``shuffle(buffer=64)`` shuffles a stream without random access, differently in each epoch;
- ``parallel_map(np.load, workers=4)`` reads files on a pool of 4 threads (file I/O releases
  the GIL) and still yields them in order, and ``prefetch(8)`` reads ahead on a background
  thread: neither changes a value;
- the same pipe compiled with ``compile(workers=2)`` yields exactly the in-process batches,
  and ``explain()`` shows what runs where.

Run it with ``.venv/bin/python examples/streaming_io.py``.
"""

import os
import tempfile
import time

import numpy as np
import torch

import datapipes as dp

N_FILES = 200


def write_files(directory):
    """Write N_FILES small arrays; file i holds an 8x8 image of mean i."""
    rng = np.random.default_rng(0)
    for i in range(N_FILES):
        image = (i + rng.normal(size=(8, 8))).astype(np.float32)
        np.save(os.path.join(directory, f"{i:04d}.npy"), image)


def normalise(image):
    """Zero mean and unit variance per image, with a channel axis: (8, 8) -> (1, 8, 8)."""
    return ((image - image.mean()) / (image.std() + 1e-6))[None]


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def main():
    with tempfile.TemporaryDirectory() as directory:
        write_files(directory)
        paths = [os.path.join(directory, name) for name in os.listdir(directory)]
        print(f"wrote {len(paths)} .npy files into a temporary directory")

        def list_files():
            """Called once per epoch: a fresh iterator over the file names, in a fixed order."""
            return iter(sorted(paths))

        pipe = (
            dp.from_iterable(list_files)
            | dp.shuffle(buffer=64)
            | dp.parallel_map(np.load, workers=4)  # I/O-bound: a thread pool, in order
            | dp.map(normalise)
            | dp.prefetch(8)
            | dp.batch(16)
            | dp.collate()
        )
        print(f"pipe: {pipe!r}")

        start = time.perf_counter()
        epoch0 = list(pipe.iter(epoch=0))
        elapsed = time.perf_counter() - start
        n = sum(len(b) for b in epoch0)
        print(f"in-process epoch 0: {len(epoch0)} batches, {n} images, "
              f"first batch {tuple(epoch0[0].shape)} {epoch0[0].dtype}, {elapsed:.2f} s")
        epoch1 = list(pipe.iter(epoch=1))
        print(f"epoch 1 is another shuffle: {not same_batches(epoch0, epoch1)}")

        # progress=True: a tqdm bar per epoch, on stderr
        with pipe.compile(workers=2, progress=True) as loader:
            print(loader.explain())
            compiled = [list(loader), list(loader)]
        equal = same_batches(compiled[0], epoch0) and same_batches(compiled[1], epoch1)
        print(f"compile(workers=2) equals the in-process epochs: {equal}")
        assert equal, "the loader's batches differ from the in-process reference"


if __name__ == "__main__":
    main()
