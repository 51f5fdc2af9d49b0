"""Checkpoints: stop a training run mid-epoch, resume it with another worker count, and get
exactly the batches (and so exactly the model) of a run that never stopped.

The data is synthetic (a noisy linear regression, 512 rows of 4 features), so nothing is
downloaded. The script

- trains a tiny torch model for 2 epochs without interruption, recording every batch;
- trains again with 2 worker processes, saves ``{"model", "optimizer", "loader"}`` with
  ``torch.save`` in the middle of epoch 0, and "crashes";
- starts a new model and a new loader with 3 workers (the state does not depend on who
  computed the run), loads the checkpoint, finishes, and checks that the batches seen and
  the final weights equal the uninterrupted run's;
- compiles a pipe whose map fails on some elements with ``on_error="skip"``, and prints
  ``loader.skipped``: what was dropped, where, and why.

Run it with ``.venv/bin/python examples/checkpoint.py``.
"""

import os
import tempfile

import numpy as np
import torch

import datapipes as dp

EPOCHS = 2
CRASH_AFTER_STEP = 10  # of 16 steps per epoch: mid-epoch 0


class Preempted(Exception):
    """Stands in for the job being killed."""


def jitter(row, rng):
    """A random augmentation: keyed by (seed, epoch, stage, element), so it resumes exactly."""
    x = row["x"] + rng.normal(0.0, 0.01, size=row["x"].shape).astype(np.float32)
    return {"x": x, "y": row["y"]}


def make_pipe():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32))[:, None] + 0.1
    return (
        dp.from_arrays(x=x, y=y)
        | dp.shuffle()
        | dp.map(jitter, rng=True)
        | dp.batch(32)
        | dp.collate()
    )


def new_model():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def train(model, optimizer, loader, seen, checkpoint=None):
    """Train until the loader has run EPOCHS epochs; with ``checkpoint``, save and stop."""
    while loader.epoch < EPOCHS:
        for batch in loader:
            loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen.append(batch)
            if checkpoint and len(seen) == CRASH_AFTER_STEP:
                # Inside the loop, right after the step: the state points at the next batch.
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "loader": loader.state_dict()}, checkpoint)
                raise Preempted
        print(f"  finished epoch {loader.epoch - 1}: loss {loss.item():.4f}")


def same_batches(a, b):
    return len(a) == len(b) and all(
        torch.equal(x["x"], y["x"]) and torch.equal(x["y"], y["y"])
        for x, y in zip(a, b, strict=True)
    )


def resume_demo(pipe, directory):
    print("uninterrupted run, 2 workers:")
    model, optimizer = new_model()
    uninterrupted = []
    with pipe.compile(workers=2) as loader:
        train(model, optimizer, loader, uninterrupted)
    expected_weights = model.weight.detach().clone()

    print(f"interrupted run, 2 workers: crash after step {CRASH_AFTER_STEP}")
    path = os.path.join(directory, "checkpoint.pt")
    model, optimizer = new_model()
    before = []
    try:
        with pipe.compile(workers=2) as loader:
            train(model, optimizer, loader, before, checkpoint=path)
    except Preempted:
        print(f"  crashed; saved {os.path.getsize(path)} bytes to checkpoint.pt")

    print("resumed run, 3 workers:")
    checkpoint = torch.load(path, weights_only=True)
    model, optimizer = new_model()
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    after = []
    with pipe.compile(workers=3) as loader:
        loader.load_state_dict(checkpoint["loader"])
        print(f"  resuming epoch {loader.epoch} after {checkpoint['loader']['delivered']} batches")
        train(model, optimizer, loader, after)

    same = same_batches(before + after, uninterrupted)
    print(f"batches seen: {len(before)} + {len(after)} = {len(before) + len(after)}, "
          f"uninterrupted: {len(uninterrupted)}")
    print(f"resumed run saw exactly the uninterrupted batches: {same}")
    print(f"final weights equal: {torch.equal(model.weight, expected_weights)}")
    assert same, "the resumed run's batches differ from the uninterrupted run's"


def check(x):
    """A decoder that fails on some inputs, like a corrupt file would."""
    if x % 7 == 3:
        raise ValueError(f"corrupt record {x}")
    return float(x)


def skip_demo():
    pipe = dp.from_sequence(range(30)) | dp.shuffle() | dp.map(check) | dp.batch(4) | dp.collate()
    with pipe.compile(workers=2, on_error="skip") as loader:
        batches = list(loader)
        print(f"on_error='skip': {sum(len(b) for b in batches)} of 30 elements in "
              f"{len(batches)} batches; loader.skipped:")
        for skipped in loader.skipped:
            print(f"  {skipped}")


def main():
    pipe = make_pipe()
    print(f"pipe: {pipe!r}")
    with tempfile.TemporaryDirectory() as directory:
        resume_demo(pipe, directory)
    skip_demo()


if __name__ == "__main__":
    main()
