"""Quickstart: a deterministic, augmented training pipeline over scikit-learn's digits.

The data is ``sklearn.datasets.load_digits()``: 1797 grey 8x8 images of handwritten digits,
bundled with scikit-learn, so nothing is downloaded. The script shows that

- a pipe is a value: its ``repr`` reads like the code that built it, and ``len`` is known
  without iterating; ``split`` keeps a fixed validation part out of training (checked with
  ``assert_disjoint``), and ``sample`` draws a few of its images for a quick check;
- ``augment`` runs only in training: validation runs the same stages with ``train=False``,
  which passes its images through unaugmented (``docs/leakage.md``);
- each epoch is a different shuffle and different random augmentations, yet the same
  ``(seed, epoch)`` always gives the same batches, bit for bit;
- ``pipe.compile(workers=2)`` runs the same pipe in worker processes and yields exactly the
  in-process (reference) sequence; ``loader.stats()`` then says where the time went (with
  ``stats=True``: per stage) and whether the loader or the training loop is the bottleneck.

Run it with ``make demo``.
"""

import time

import numpy as np
import torch
from sklearn.datasets import load_digits

import datapipes as dp
from datapipes.testing import assert_disjoint


def shift_and_noise(example, rng):
    """Shift the image by up to one pixel each way and add a little noise.

    No flips: a mirrored 2 or 7 is not a 2 or 7 any more.
    """
    dy, dx = rng.integers(-1, 2, size=2)
    image = np.roll(example["image"], (dy, dx), axis=(0, 1))
    image = image + rng.normal(0.0, 0.05, size=image.shape).astype(np.float32)
    return {"image": image, "label": example["label"]}


def add_channel(example):
    """(8, 8) -> (1, 8, 8), the layout a convolution expects."""
    return {"image": example["image"][None], "label": example["label"]}


def run_epoch(pipe, epoch, seed=0):
    start = time.perf_counter()
    batches = list(pipe.iter(epoch=epoch, seed=seed))
    elapsed = time.perf_counter() - start
    n = sum(len(b["label"]) for b in batches)
    print(f"epoch {epoch}: {len(batches)} batches, {n} elements, {n / elapsed:,.0f} elements/s")
    return batches


def same_batches(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def main():
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # pixel values 0..16 -> 0..1
    labels = digits.target.astype(np.int64)

    digits = dp.from_arrays(image=images, label=labels)
    # A fixed 90/10 train/validation split: the same parts in every epoch and every run, and
    # no image in both (assert_disjoint compares them by value and names one if there is).
    training = digits | dp.split([0.9, 0.1], 0)
    held_out = digits | dp.split([0.9, 0.1], 1)
    assert_disjoint(training, held_out)
    # One preparation for both parts: augment runs in training only; with train=False (the
    # validation runs below) it passes the images through unchanged.
    prepare = dp.augment(shift_and_noise) | dp.map(add_channel)
    pipe = training | dp.shuffle() | prepare | dp.batch(64) | dp.collate()
    validation = held_out | prepare
    # A quick check between epochs: 64 validation images drawn at random, new ones each epoch.
    quick_check = validation | dp.sample(64) | dp.batch(64) | dp.collate()
    print(f"pipe: {pipe!r}")
    print(f"len(pipe) = {len(pipe)} batches; validation: {len(validation)} images")
    print("assert_disjoint(training, held_out): no image in both parts")

    epochs = [run_epoch(pipe, epoch) for epoch in range(2)]
    first = epochs[0][0]
    for key, value in first.items():
        print(f"first batch {key!r}: shape {tuple(value.shape)}, dtype {value.dtype}")
    for epoch, batches in enumerate(epochs):
        print(f"epoch {epoch} first 10 labels: {batches[0]['label'][:10].tolist()}")

    checks = [next(iter(quick_check.iter(epoch=e, train=False)))["label"] for e in range(2)]
    print(f"quick checks draw 64 validation images, new ones each epoch: "
          f"{not torch.equal(checks[0], checks[1])}")
    plain = [x["image"] for x in held_out | dp.map(add_channel)]
    evaluated = [x["image"] for x in validation.iter(train=False)]
    print(f"validation with train=False is not augmented: "
          f"{all(np.array_equal(a, b) for a, b in zip(plain, evaluated, strict=True))}")

    again = list(pipe.iter(epoch=0, seed=0))
    print(f"same (seed, epoch) gives identical batches: {same_batches(again, epochs[0])}")

    if hasattr(pipe, "compile"):
        # The loader's defaults are the reference's: seed 0, first epoch 0.
        with pipe.compile(workers=2, stats=True) as loader:
            compiled = list(loader)
        print(f"compile(workers=2) equals the reference: {same_batches(compiled, epochs[0])}")
        # Evaluation: the validation batches, in worker processes, without augmentation.
        batched = validation | dp.batch(64) | dp.collate()
        with batched.compile(workers=2, train=False) as evaluation:
            evaluated_batches = list(evaluation)
        print(f"compile(workers=2, train=False) equals the reference with train=False: "
              f"{same_batches(evaluated_batches, list(batched.iter(train=False)))}")
        print(f"\nloader.stats() with compile(stats=True):\n{loader.stats()}")


if __name__ == "__main__":
    main()
