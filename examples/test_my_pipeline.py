"""Property tests of your own pipeline with ``datapipes.testing`` and Hypothesis.

"Your pipeline" here is ``make_pipeline``: images and labels, a full shuffle, a random
augmentation (``augment``: a random flip and a little noise) and batches. The tests state
what must hold for *any* data, seed and epoch, and Hypothesis looks for a counterexample:

- ``augment`` is deterministic per ``(seed, epoch)`` and never changes a label, whatever
  stages come before it (``pipes()`` draws them: filters, shuffles, flat_maps, ...);
- whatever stages come after it (``fragments()``), the result is deterministic and a
  compiled loader yields exactly the in-process reference;
- the whole pipeline: deterministic, changes across epochs, equals the reference with any
  number of thread workers, and resumes exactly from a checkpoint after any batch.

Run it with ``.venv/bin/python -m pytest examples/test_my_pipeline.py``. The loaders use
``backend="thread"`` to keep the tests fast; ``backend="process"`` gives the same results.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import datapipes as dp
from datapipes.testing import (
    assert_deterministic,
    assert_equal_outputs,
    assert_matches_reference,
    assert_resumable,
    fragments,
    pipes,
    reference,
)


# -- the pipeline under test -------------------------------------------------------------------
def augment(example, rng):
    """Flip the image left-right with probability 1/2 and add a little noise."""
    image = example["image"]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = image + rng.normal(0.0, 0.1, size=image.shape).astype(np.float32)
    return {"image": image, "label": example["label"]}


def make_pipeline(images, labels, batch_size=8):
    return (
        dp.from_arrays(image=images, label=labels)
        | dp.shuffle()
        | dp.map(augment, rng=True, name="augment")
        | dp.batch(batch_size)
        | dp.collate()
    )


def to_example(x):
    """An int from a drawn pipe, as one of our examples: a 4x4 image, labelled x."""
    return {"image": np.arange(16, dtype=np.float32).reshape(4, 4) + x, "label": x}


def label(example):
    return example["label"]


def to_int(example):
    """Back to an int for the stages drawn after: the label and a pixel that flips and noise
    change, so a change in the augmentation shows."""
    return 1000 * example["label"] + int(1000 * example["image"][0, 0])


# -- data --------------------------------------------------------------------------------------
@st.composite
def datasets(draw, max_size=40):
    """Images (n, 4, 4) float32 and labels (n,) int64, n from 0 to max_size."""
    n = draw(st.integers(0, max_size))
    images = draw(arrays(np.float32, (n, 4, 4), elements=st.floats(-1, 1, width=32)))
    labels = draw(arrays(np.int64, (n,), elements=st.integers(0, 9)))
    return images, labels


fast = settings(max_examples=25, deadline=None)


# -- the augmentation, after any stages --------------------------------------------------------
@fast
@given(before=pipes(terminal=False), seed=st.integers(0, 2**32), epoch=st.integers(0, 5))
def test_augment_never_changes_a_label(before, seed, epoch):
    pipe = before | dp.map(to_example) | dp.map(augment, rng=True)
    got = reference(pipe, epoch=epoch, seed=seed)
    assert [label(x) for x in got] == reference(before, epoch=epoch, seed=seed)


@fast
@given(before=pipes(terminal=False), after=fragments(terminal=False))
def test_augment_is_deterministic_wherever_it_goes(before, after):
    # `after` is drawn over ints: turn the examples back into ints first.
    pipe = before | dp.map(to_example) | dp.map(augment, rng=True) | dp.map(to_int) | after
    assert_deterministic(pipe, epochs=3)


@fast
@given(before=pipes(terminal=False, max_stages=3), after=fragments(max_stages=3),
       workers=st.integers(1, 3))
def test_loader_yields_the_reference(before, after, workers):
    pipe = before | dp.map(to_example) | dp.map(augment, rng=True) | dp.map(to_int) | after
    assert_matches_reference(pipe, workers=workers, backend="thread")


# -- the whole pipeline ------------------------------------------------------------------------
@fast
@given(data=datasets(), seed=st.integers(0, 2**32))
def test_pipeline_is_deterministic(data, seed):
    assert_deterministic(make_pipeline(*data), epochs=3, seed=seed)


def test_pipeline_changes_across_epochs():
    images, labels = np.zeros((20, 4, 4), np.float32), np.arange(20)
    assert_deterministic(make_pipeline(images, labels), epochs=3, expect_change=True)


@fast
@given(data=datasets(), batch_size=st.integers(1, 9))
def test_pipeline_keeps_every_label_once(data, batch_size):
    images, labels = data
    for epoch in range(2):
        batches = reference(make_pipeline(images, labels, batch_size), epoch=epoch)
        got = [int(y) for batch in batches for y in batch["label"]]
        assert sorted(got) == sorted(labels.tolist())


@fast
@given(data=datasets(), workers=st.integers(0, 3), prefetch=st.integers(1, 3))
def test_pipeline_matches_the_reference_with_thread_workers(data, workers, prefetch):
    assert_matches_reference(make_pipeline(*data), workers=workers, prefetch=prefetch,
                             backend="thread")


@fast
@given(data=datasets(), workers=st.integers(0, 3), resume_workers=st.integers(0, 3),
       choice=st.data())
def test_pipeline_resumes_after_any_batch(data, workers, resume_workers, choice):
    pipe = make_pipeline(*data)
    # `at` counts outputs over both epochs, so draw it once the number of batches is known.
    outputs = 2 * len(pipe)
    at = choice.draw(st.lists(st.integers(0, outputs - 1), max_size=3)) if outputs else []
    assert_resumable(pipe, at=at, workers=workers, backend="thread",
                     resume_with={"workers": resume_workers})


@pytest.mark.parametrize("workers", [1, 2])
def test_pipeline_in_worker_processes(workers):
    # One fixed case with real processes: the same result, through shared memory.
    images = np.random.default_rng(0).normal(size=(50, 4, 4)).astype(np.float32)
    pipe = make_pipeline(images, np.arange(50) % 10)
    with pipe.compile(workers=workers) as loader:
        assert_equal_outputs(reference(pipe), list(loader), f"{workers} process workers")
