"""Shards: train a small CNN on JPEGs stored in WebDataset tar shards, and resume mid-epoch.

The data is 3,000 synthetic 32x32 JPEGs of 10 classes (a colour tint per class, plus noise),
written with ``tarfile`` into 8 WebDataset-style shards (``000123.jpg`` and ``000123.cls``
per sample) in a temporary directory, so nothing is downloaded. The script shows that

- ``from_tar(paths)`` streams the samples from the shards in the main process, and
  ``shuffle(buffer=...)`` mixes them, while decoding (``map(decode)``) and a random
  crop and flip (``map(..., rng=True)``) run in the 2 worker processes;
- a small torch CNN trained for 2 epochs from the compiled loader learns the classes;
- a state saved after some batches of epoch 0, with the model and the optimizer, resumes in
  a fresh loader with exactly the rest of the epoch the uninterrupted loader yielded.

Run it with ``.venv/bin/python examples/shards.py``.
"""

import io
import os
import tarfile
import tempfile

import numpy as np
import torch
from PIL import Image

import datapipes as dp

N_IMAGES, N_SHARDS, N_CLASSES = 3000, 8, 10
SIZE, CROP = 32, 28
EPOCHS, BATCH = 2, 64
CHECKPOINT_AFTER = 20  # batches of epoch 0 (of 47)

# One well-separated RGB tint per class.
TINTS = np.array([
    [230, 40, 40], [40, 200, 40], [40, 40, 230], [230, 230, 40], [230, 40, 230],
    [40, 230, 230], [250, 150, 40], [130, 40, 200], [140, 140, 140], [30, 30, 30],
], dtype=np.float32)


def synthetic_jpeg(label, rng):
    """A 32x32 JPEG of the class's tint with per-pixel noise: learnable, never identical."""
    pixels = TINTS[label] + rng.normal(0.0, 90.0, size=(SIZE, SIZE, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def add_member(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_shards(directory):
    """8 tar shards; sample i is the members ``{i:06d}.jpg`` and ``{i:06d}.cls``."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, N_CLASSES, size=N_IMAGES)
    paths = []
    for s, indices in enumerate(np.array_split(np.arange(N_IMAGES), N_SHARDS)):
        paths.append(os.path.join(directory, f"shard-{s:02d}.tar"))
        with tarfile.open(paths[-1], "w") as tar:
            for i in indices:
                add_member(tar, f"{i:06d}.jpg", synthetic_jpeg(labels[i], rng))
                add_member(tar, f"{i:06d}.cls", str(labels[i]).encode())
    return paths


def crop_and_flip(sample, rng):
    """A random 28x28 crop and horizontal flip, as a float32 CHW array in [0, 1]: keyed by
    (seed, epoch, stage, element), so a resumed epoch draws the same crops."""
    top, left = rng.integers(0, SIZE - CROP + 1, size=2)
    image = sample["jpg"][top:top + CROP, left:left + CROP]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
    return {"image": chw, "label": sample["cls"]}


def shard_pipe(pattern):
    return (
        dp.from_tar(pattern)  # the shards the glob matches, sorted
        | dp.shuffle(buffer=500)  # the shards hold samples in order: mix them
        | dp.map(dp.decode)
        | dp.map(crop_and_flip, rng=True)
        | dp.batch(BATCH)
        | dp.collate()
    )


def new_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, N_CLASSES),
    )
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def step(model, optimizer, batch):
    """One training step; returns the loss and the number of correct predictions."""
    logits = model(batch["image"])
    loss = torch.nn.functional.cross_entropy(logits, batch["label"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), (logits.argmax(1) == batch["label"]).sum().item()


def train(loader, checkpoint_path):
    """Train for EPOCHS epochs; save a checkpoint after CHECKPOINT_AFTER batches of epoch 0 and
    return the batches of epoch 0 that came after it."""
    model, optimizer = new_model()
    rest = []
    while loader.epoch < EPOCHS:
        epoch = loader.epoch
        losses, correct, seen = [], 0, 0
        for i, batch in enumerate(loader):
            loss, right = step(model, optimizer, batch)
            losses.append(loss)
            correct, seen = correct + right, seen + len(batch["label"])
            if epoch == 0 and i + 1 == CHECKPOINT_AFTER:
                # Right after the step: the loader's state points at the next batch.
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "loader": loader.state_dict()}, checkpoint_path)
            elif epoch == 0 and i + 1 > CHECKPOINT_AFTER:
                rest.append(batch)
        print(f"epoch {epoch}: {len(losses)} batches, mean loss {np.mean(losses):.3f}, "
              f"training accuracy {correct / seen:.3f}")
    return rest


def same_batches(a, b):
    return len(a) == len(b) and all(
        torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
        for x, y in zip(a, b, strict=True)
    )


def main():
    with tempfile.TemporaryDirectory() as directory:
        paths = write_shards(directory)
        print(f"wrote {N_IMAGES} JPEGs into {len(paths)} tar shards")
        pipe = shard_pipe(os.path.join(directory, "shard-*.tar"))
        checkpoint_path = os.path.join(directory, "checkpoint.pt")
        with pipe.compile(workers=2) as loader:
            print(loader.explain())
            rest = train(loader, checkpoint_path)

        # A fresh model, optimizer and loader, as after a crash: load all three.
        checkpoint = torch.load(checkpoint_path, weights_only=True)
        model, optimizer = new_model()
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        with pipe.compile(workers=2) as resumed:
            resumed.load_state_dict(checkpoint["loader"])
            resumed_rest = list(resumed)
        print(f"resumed epoch 0 after {CHECKPOINT_AFTER} batches: {len(resumed_rest)} batches "
              f"left, uninterrupted: {len(rest)}")
        print(f"resumed exactly: {same_batches(resumed_rest, rest)}")


if __name__ == "__main__":
    main()
