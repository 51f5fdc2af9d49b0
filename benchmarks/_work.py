"""The work ``loader.py`` gives every system, in a module of its own.

Spawned workers import the functions they run by module and name; functions defined in the
script itself would be looked up in ``__mp_main__``, which works for some systems and not
others. Everything here is importable by every system's workers, and cheap to import (NumPy
only), so that the time to first batch with ``spawn`` measures each system, not this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: the image every element of the large-array workload is: float32, 3 × 224 × 224
IMAGE_SHAPE = (3, 224, 224)
IMAGE_BYTES = int(np.prod(IMAGE_SHAPE)) * 4


def spin(i: int, loops: int) -> int:
    """Pure-Python work: ``loops`` rounds of integer arithmetic (holds the GIL throughout)."""
    acc = i
    for k in range(loops):
        acc = (acc * 31 + k) & 0xFFFF
    return acc


def calibrate_spin(seconds: float) -> int:
    """The ``loops`` for which ``spin`` takes about ``seconds`` here (best of a few runs)."""
    loops = 1_000
    while True:
        took = min(_timed(spin, 0, loops) for _ in range(3))
        if took > 0.02:
            break
        loops *= 4
    loops = max(1, round(loops * seconds / took))
    took = min(_timed(spin, 0, loops) for _ in range(5))
    return max(1, round(loops * seconds / took))


def _timed(fn: Callable[..., object], *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def image(i: int) -> np.ndarray:
    """Element ``i`` of the large-array workload: a float32 3 × 224 × 224 array of ``i``."""
    return np.full(IMAGE_SHAPE, i, dtype=np.float32)


def record(i: int) -> dict[str, Any]:
    """Element ``i`` of the memory workload: a small dict, as a metadata list holds."""
    return {"id": i, "name": "x" * 16, "tags": [i, i + 1]}


def pick_id(r: dict[str, Any]) -> int:
    return r["id"]  # type: ignore[no-any-return]


class Mapped:
    """A map-style Dataset (for DataLoader): element ``i`` is ``fn(source[i])``."""

    def __init__(self, source: Sequence[Any], fn: Callable[[Any], Any]) -> None:
        self.source = source
        self.fn = fn

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Any:
        return self.fn(self.source[i])


class FetchAndCollate:
    """For torchdata.nodes: a list of indices to one collated batch (what a DataLoader worker
    does for one batch, and torchdata's migration guide's ``MapAndCollate``)."""

    def __init__(self, dataset: Mapped, collate: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.collate = collate

    def __call__(self, indices: list[int]) -> Any:
        return self.collate([self.dataset[i] for i in indices])
