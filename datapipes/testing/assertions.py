"""Assertions about pipes: equality of outputs by value, and determinism per (seed, epoch).

Outputs are compared by value and by type: NumPy arrays and torch tensors by dtype, shape and
contents (NaN equals NaN: a NaN made the same way twice is deterministic), dicts, lists and
tuples recursively. A failure names the first position that differs and shows both values.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .._graph import EpochContext, Pipe, stage_by_stage
from .._seeds import check_epoch, check_seed

__all__ = [
    "assert_deterministic",
    "assert_equal_elements",
    "assert_equal_outputs",
    "has_randomness",
    "reference",
]

#: ``expect_change=None`` asks for a change between epochs only when the visible permutation
#: holds at least this many distinct elements (see :func:`assert_deterministic`).
MIN_DISTINCT_FOR_CHANGE = 8

# Stages after a full shuffle() that keep its permutation visible: each output sequence is a
# prefix, a suffix or a grouping of an exchangeable (uniformly shuffled) sequence.
_KEEPS_PERMUTATION_VISIBLE = frozenset({"take", "skip", "batch", "prefetch", "shuffle"})

_NUMPY = (np.ndarray, np.generic)

_short = reprlib.Repr()
_short.maxlist = _short.maxtuple = _short.maxdict = 8
_short.maxstring = _short.maxother = 120


def _show(value: object) -> str:
    if _is_tensor(value) or isinstance(value, np.ndarray):
        return f"{type(value).__name__}(dtype={value.dtype}, shape={tuple(value.shape)}) " + (  # type: ignore[attr-defined]
            _short.repr(value.tolist())  # type: ignore[attr-defined]
        )
    return _short.repr(value)


def _is_tensor(value: object) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype")


def reference(
    pipe: Pipe[Any], epoch: int = 0, seed: int = 0, *, on_error: str = "raise",
    train: bool = True,
) -> list[Any]:
    """The elements of one epoch by the definition every executor must match: each stage's
    ``stream`` over the one before, in this process, with no planning or fusion (so it also
    checks ``pipe.iter``, which runs the planned path). ``on_error="skip"`` drops the
    elements whose stage raised, as ``compile(on_error="skip")`` does; ``train=False`` runs
    it for evaluation, as ``compile(train=False)`` does (``augment`` passes elements through).

    >>> import datapipes as dp
    >>> reference(dp.from_sequence(range(5)) | dp.batch(2))
    [[0, 1], [2, 3], [4]]
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"reference: on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(train, bool):
        raise TypeError(f"reference: train must be a bool, got {train!r}")
    ctx = EpochContext(check_seed(seed, "reference") or 0, check_epoch(epoch, "reference"),
                       skip=on_error == "skip", train=train)
    return list(stage_by_stage(pipe, ctx))


def assert_equal_elements(a: object, b: object, where: str = "element") -> None:
    """Raise ``AssertionError`` unless ``a`` and ``b`` are equal by type and value, recursively.

    The message names the path to the first difference (``where`` is its start).

    >>> import numpy as np
    >>> assert_equal_elements({"x": np.arange(3)}, {"x": np.arange(3)})
    >>> assert_equal_elements({"x": [1, 2]}, {"x": [1, 3]}, "position 4")
    Traceback (most recent call last):
        ...
    AssertionError: position 4['x'][1]: values differ: 2 != 3
    """
    inside: Iterable[tuple[object, object, str]] = ()
    if _is_tensor(a) or _is_tensor(b):
        _compare_tensors(a, b, where)
    elif isinstance(a, _NUMPY) or isinstance(b, _NUMPY):
        _compare_arrays(a, b, where)
    elif type(a) is not type(b):
        raise _types_differ(a, b, where)
    elif isinstance(a, Mapping):
        inside = _mapping_pairs(a, b, where)
    elif isinstance(a, (list, tuple)):
        inside = _sequence_pairs(a, b, where)
    else:
        _compare_values(a, b, where)
    # the recursion stays in this function, one frame per level of nesting, so that it goes
    # as deep as Python's recursion limit allows
    for x, y, at in inside:
        assert_equal_elements(x, y, at)


def _types_differ(a: object, b: object, where: str) -> AssertionError:
    return AssertionError(
        f"{where}: types differ: {type(a).__name__} != {type(b).__name__} "
        f"({_show(a)} != {_show(b)})"
    )


def _mapping_pairs(
    a: Mapping[Any, Any], b: object, where: str
) -> Iterator[tuple[object, object, str]]:
    """The values of two mappings of one type to compare, key by key, once their keys agree."""
    assert isinstance(b, Mapping)
    if set(a) != set(b):
        raise AssertionError(
            f"{where}: keys differ: {sorted(a, key=repr)} != {sorted(b, key=repr)}"
        )
    return ((a[key], b[key], f"{where}[{key!r}]") for key in a)


def _sequence_pairs(
    a: Sequence[Any], b: object, where: str
) -> Iterator[tuple[object, object, str]]:
    """The items of two lists or two tuples to compare, position by position, once their
    lengths agree."""
    assert isinstance(b, (list, tuple))
    if len(a) != len(b):
        raise AssertionError(
            f"{where}: lengths differ: {len(a)} != {len(b)} ({_show(a)} != {_show(b)})"
        )
    return ((x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True)))


def _compare_values(a: object, b: object, where: str) -> None:
    """Anything but containers, arrays and tensors: by ``==``, by ``repr`` where ``==``
    fails; NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float):
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            raise AssertionError(f"{where}: values differ: {a!r} != {b!r}")
        return
    try:
        same = bool(a == b)
    except Exception:
        same = repr(a) == repr(b)
    if not same:
        raise AssertionError(f"{where}: values differ: {_show(a)} != {_show(b)}")


def _compare_tensors(a: Any, b: Any, where: str) -> None:
    import torch

    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise _types_differ(a, b, where)
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        raise AssertionError(
            f"{where}: tensors differ in dtype, shape or device: "
            f"{a.dtype} {tuple(a.shape)} {a.device} != {b.dtype} {tuple(b.shape)} {b.device}"
        )
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.is_floating_point() or a.is_complex():
        same = bool(torch.equal(a, b)) or bool(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))
    else:
        same = bool(torch.equal(a, b))
    if not same:
        raise AssertionError(f"{where}: tensor values differ: {_show(a)} != {_show(b)}")


def _compare_arrays(a: Any, b: Any, where: str) -> None:
    if type(a) is not type(b):
        raise _types_differ(a, b, where)
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        raise AssertionError(
            f"{where}: arrays differ in dtype or shape: "
            f"{a.dtype} {a.shape} != {b.dtype} {b.shape}"
        )
    if a.dtype.kind == "O":
        for i, (x, y) in enumerate(zip(a.ravel().tolist(), b.ravel().tolist(), strict=True)):
            assert_equal_elements(x, y, f"{where}.flat[{i}]")
        return
    equal_nan = a.dtype.kind in "fc"
    if not np.array_equal(a, b, equal_nan=equal_nan):
        raise AssertionError(f"{where}: array values differ: {_show(a)} != {_show(b)}")


def assert_equal_outputs(
    expected: Sequence[Any], got: Sequence[Any], what: str = "outputs differ"
) -> None:
    """Raise ``AssertionError`` unless two outputs (lists of elements) are equal element by
    element; the message starts with ``what`` and names the first differing position.

    >>> assert_equal_outputs([1, 2, 3], [1, 2, 4], "epoch 0")
    Traceback (most recent call last):
        ...
    AssertionError: epoch 0: position 2: values differ: 3 != 4
    >>> assert_equal_outputs([1, 2], [1, 2, 5], "epoch 0")
    Traceback (most recent call last):
        ...
    AssertionError: epoch 0: lengths differ: 2 != 3; the longer goes on with 5 at position 2
    """
    for i, (x, y) in enumerate(zip(expected, got, strict=False)):
        assert_equal_elements(x, y, f"{what}: position {i}")
    if len(expected) != len(got):
        n = min(len(expected), len(got))
        longer = expected if len(expected) > len(got) else got
        raise AssertionError(
            f"{what}: lengths differ: {len(expected)} != {len(got)}; the longer goes on "
            f"with {_show(longer[n])} at position {n}"
        )


def has_randomness(pipe: Pipe[Any]) -> bool:
    """Whether a pipe draws random numbers: a ``shuffle`` (other than ``buffer=1``, which is the
    identity) or a ``map(..., rng=True)``.

    >>> import datapipes as dp
    >>> has_randomness(dp.from_sequence(range(3)) | dp.shuffle())
    True
    >>> has_randomness(dp.from_sequence(range(3)) | dp.shuffle(buffer=1))
    False
    """
    for stage in pipe.stages:
        if stage.call_name == "shuffle" and getattr(stage, "buffer", None) != 1:
            return True
        if getattr(stage, "rng", False) is True:
            return True
    return False


def _canonical(value: object) -> object:
    """A hashable stand-in for an element, equal for elements equal by value and type."""
    if _is_tensor(value) or isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value.detach().cpu() if _is_tensor(value) else value)  # type: ignore[attr-defined]
        return (type(value).__name__, str(array.dtype), array.shape, repr(array.tolist()))
    if isinstance(value, Mapping):
        return (type(value).__name__,
                tuple(sorted((repr(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_canonical(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)


def _distinct(elements: Iterable[Any]) -> int:
    return len({_canonical(x) for x in elements})


def _visible_permutation_depth(pipe: Pipe[Any]) -> int | None:
    """How many ``batch`` levels wrap the permutation of the pipe's last full ``shuffle()``,
    or None when no such permutation is visible in the output."""
    depth = None
    for stage in pipe.stages:
        if stage.call_name == "shuffle" and getattr(stage, "buffer", None) is None:
            depth = 0
        elif depth is not None and stage.call_name in _KEEPS_PERMUTATION_VISIBLE:
            depth += stage.call_name == "batch"
        else:
            depth = None
    return depth


def _flatten(elements: list[Any], depth: int) -> list[Any]:
    for _ in range(depth):
        elements = [x for batch in elements for x in batch]
    return elements


def assert_deterministic(
    pipe: Pipe[Any],
    *,
    epochs: int = 2,
    seed: int = 0,
    expect_change: bool | None = None,
) -> None:
    """Check that each ``(seed, epoch)`` gives the same output every time it is run.

    Epochs ``0 .. epochs - 1`` are each iterated twice and must agree element by element.
    Then, whether epochs differ from each other:

    * ``expect_change=True``: some epoch's output must differ from epoch 0's (needs
      ``epochs >= 2``);
    * ``expect_change=False``: every epoch must equal epoch 0;
    * ``expect_change=None`` (the default) asks for a change only where a repeat is all but
      impossible for a correct library: the pipe ends with a full ``shuffle()`` followed only
      by ``take``, ``skip``, ``batch``, ``prefetch`` or more shuffles, and epoch 0's output
      holds at least 8 distinct elements (counted inside the batches). The output is then
      (a part of) a uniform random order of those elements, so each later epoch repeats it
      with probability at most 1/8! (2.5e-5), independently: ``epochs=4`` makes a false
      alarm a 1e-14 event. Nothing is asserted about other pipes: their randomness may be
      weak (a ``shuffle(buffer=2)`` of 8 elements has 128 outcomes) or thrown away by later
      stages (a random sign followed by ``x % 4``, a sum of the whole epoch, a shuffle of
      one element). Pass ``expect_change=True`` where you know the output must change.

    >>> import datapipes as dp
    >>> assert_deterministic(dp.from_sequence(range(20)) | dp.shuffle())
    >>> assert_deterministic(dp.from_sequence(range(20)), expect_change=True)
    Traceback (most recent call last):
        ...
    AssertionError: every one of epochs 0..1 (seed 0) gave the same output, expected a change
    """
    _check_epochs(epochs, expect_change)
    outputs = []
    for epoch in range(epochs):
        first = reference(pipe, epoch, seed)
        again = reference(pipe, epoch, seed)
        assert_equal_outputs(
            first, again, f"not deterministic: two runs of epoch {epoch} (seed {seed}) differ"
        )
        outputs.append(first)

    if expect_change is None:
        expect_change = _must_change(pipe, outputs)
        if not expect_change:
            return
    changed = []
    for epoch in range(1, epochs):
        try:
            assert_equal_outputs(outputs[0], outputs[epoch], f"epoch 0 and epoch {epoch}")
        except AssertionError as diff:
            changed.append(str(diff))
    _check_change(expect_change, changed, epochs, seed)


def _check_epochs(epochs: object, expect_change: bool | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"assert_deterministic: epochs must be an int >= 1, got {epochs!r}")
    if expect_change is True and epochs < 2:
        raise ValueError("assert_deterministic: expect_change=True needs epochs >= 2")


def _must_change(pipe: Pipe[Any], outputs: list[list[Any]]) -> bool:
    """Whether ``expect_change=None`` asks for a change between epochs: only where a correct
    library all but never repeats an output (see :func:`assert_deterministic`)."""
    depth = _visible_permutation_depth(pipe)
    return (
        len(outputs) >= 2
        and depth is not None
        and _distinct(_flatten(outputs[0], depth)) >= MIN_DISTINCT_FOR_CHANGE
    )


def _check_change(expect_change: bool, changed: list[str], epochs: int, seed: int) -> None:
    """Raise unless the epochs changed (``changed``: how each differs from epoch 0) as
    ``expect_change`` says."""
    if expect_change and not changed:
        raise AssertionError(
            f"every one of epochs 0..{epochs - 1} (seed {seed}) gave the same output, "
            "expected a change"
        )
    if not expect_change and changed:
        raise AssertionError(f"expected every epoch to give the same output, but {changed[0]}")
