"""How many units a task carries: memory in flight is bounded in bytes, not only in tasks.

The rule (``docs/loader.md``, "Memory in flight"): a task carries at most ``MAX_UNITS``
units (elements, or whole batches when the workers batch) and, once results have shown how
large a unit is, at most about ``TASK_BYTES`` of them, never fewer than one unit. Until the
first result of an epoch arrives the size is unknown, so the first tasks carry one unit each.
At most ``workers × prefetch`` tasks are in flight, so the memory they hold is at most
``workers × prefetch × max(TASK_BYTES, one unit)``.
"""

from __future__ import annotations

from typing import Any

#: the bytes a task aims to carry once the size of a unit is known
TASK_BYTES = 4 << 20
#: results measured per epoch before the estimate of a unit's size is kept
_MEASURED = 4


def approx_nbytes(value: Any, depth: int = 3) -> int:
    """About how many bytes ``value`` holds: arrays and tensors by ``nbytes``, strings and
    bytes by length, containers by a sample of their items (a cheap estimate, no walk).

    >>> import numpy as np
    >>> approx_nbytes({"image": np.zeros((4, 4), np.float32), "label": 3})
    88
    """
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray, str)):
        return len(value)
    if depth and isinstance(value, (list, tuple, dict)):
        items = list(value.values()) if isinstance(value, dict) else value
        sample = items[:16]
        if not sample:
            return 24
        total = sum(approx_nbytes(v, depth - 1) for v in sample)
        return total * len(items) // len(sample)
    return 24  # a number, None, a small object


class ChunkSizer:
    """The units per task for one epoch: starts at one, then follows the measured size."""

    def __init__(self, most: int) -> None:
        self.most = max(1, most)
        self.unit_bytes: int | None = None
        self._measured = 0

    def __call__(self) -> int:
        """The units the next task carries."""
        if self.unit_bytes is None:
            return 1
        return max(1, min(self.most, TASK_BYTES // max(1, self.unit_bytes)))

    def observe(self, per_unit: list[list[tuple[Any, Any]]]) -> None:
        """Learn from one task's outputs (a list of ``(key, value)`` per unit)."""
        if self._measured >= _MEASURED or not per_unit:
            return
        self._measured += 1
        size = sum(approx_nbytes(x) for outputs in per_unit for _, x in outputs)
        per = -(-size // len(per_unit))
        self.unit_bytes = per if self.unit_bytes is None else max(self.unit_bytes, per)
