"""Output buffers: where a stage that makes batches writes them, once.

A stage that builds a batch (``collate``, a padding collate, a ``collate(fn=...)`` of your
own) asks for its output array with :func:`output_array` and writes into it. In a worker
process the array lies in shared memory, so the batch crosses to the main process as it
is, without being copied again; anywhere else it is ordinary memory. The executor decides
(:func:`allocating`), the stage does not need to know where it runs.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

Allocate = Callable[[tuple[int, ...], np.dtype[Any]], np.ndarray]

#: the allocator in force in this context: ``alloc(shape, dtype) -> array``, or None for
#: ordinary memory
allocator: contextvars.ContextVar[Allocate | None]
allocator = contextvars.ContextVar("datapipes_output_allocator", default=None)


def output_array(shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
    """An uninitialised array to write a batch into: shared memory in a worker process
    (the batch then reaches the main process without a copy), ordinary memory elsewhere.
    Use it for the array a ``collate(fn=...)`` of yours returns (``torch.from_numpy`` of it
    for a tensor: the tensor shares the memory).

    >>> import numpy as np, datapipes as dp
    >>> def stack_rows(batch):
    ...     out = dp.output_array((len(batch), 2), np.float32)
    ...     for i, row in enumerate(batch):
    ...         out[i] = row
    ...     return out
    >>> pipe = dp.from_sequence([[1, 2], [3, 4], [5, 6]]) | dp.batch(2) | dp.collate(stack_rows)
    >>> [b.tolist() for b in pipe]
    [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0]]]
    """
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(map(int, shape))
    dtype = np.dtype(dtype)
    alloc = allocator.get()
    return np.empty(shape, dtype) if alloc is None else alloc(shape, dtype)


@contextmanager
def allocating(alloc: Allocate) -> Iterator[None]:
    """Within the block, :func:`output_array` allocates with ``alloc`` (an executor's)."""
    token = allocator.set(alloc)
    try:
        yield
    finally:
        allocator.reset(token)
