"""``shard_by_rank``: each rank of a distributed job takes its own share of every epoch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from numbers import Integral
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, fail
from ._kinds import IndexStage

_EVEN = ("drop", "pad", None)


def current_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: as given, else from ``torch.distributed`` when it is
    initialised, else from the ``RANK`` and ``WORLD_SIZE`` environment variables, else
    ``(0, 1)``.

    >>> current_rank(1, 4)
    (1, 4)
    """
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            found = dist.get_rank(), dist.get_world_size()
        else:
            found = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_by_rank: rank must be in [0, world_size), got rank {rank} "
                         f"of world_size {world_size}")
    return rank, world_size


def shard_positions(n: int, rank: int, world_size: int, even: str | None) -> np.ndarray:
    """The positions rank ``rank`` takes from ``n``: every ``world_size``-th from ``rank``.

    ``even="drop"`` drops the last ``n % world_size`` so that every rank gets as many;
    ``even="pad"`` instead wraps around to the first positions, as ``DistributedSampler``.

    >>> shard_positions(10, 1, 4, "drop").tolist(), shard_positions(10, 1, 4, "pad").tolist()
    ([1, 5], [1, 5, 9])
    >>> shard_positions(10, 3, 4, "pad").tolist(), shard_positions(10, 3, 4, None).tolist()
    ([3, 7, 1], [3, 7])
    """
    if even == "drop":
        return np.arange(rank, n - n % world_size, world_size)
    if even == "pad" and n:
        return np.arange(rank, -(-n // world_size) * world_size, world_size) % n
    return np.arange(rank, n, world_size)


@attrs.frozen(kw_only=True, repr=False)
class ShardByRank(IndexStage):
    call_name: ClassVar[str] = "shard_by_rank"
    keeps_random_access: ClassVar[bool] = True
    # no stage key: sharding never changes what an element looks like
    transparent: ClassVar[bool] = True
    rank: int | None = None
    world_size: int | None = None
    even: str | None = "drop"

    def length(self, n: int) -> int:
        rank, world_size = current_rank(self.rank, self.world_size)
        return len(shard_positions(n, rank, world_size, self.even))

    def select(self, n: int, ctx: EpochContext, stage_key: int) -> np.ndarray:
        return shard_positions(n, *current_rank(self.rank, self.world_size), self.even)

    def run_time_state(self) -> tuple[int, int]:
        return current_rank(self.rank, self.world_size)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        # In groups of world_size: the rank takes its member of each whole group; the last,
        # partial group is dropped, padded from the stream's start, or taken as it falls.
        rank, world_size = current_rank(self.rank, self.world_size)
        first: list[Item] = []  # the stream's first elements, to pad with
        group: list[Item] = []
        for item in items:
            if self.even == "pad" and len(first) < world_size:
                first.append(item)
            group.append(item)
            if len(group) == world_size:
                yield group[rank]
                group = []
        if not group:
            return
        if self.even is None and rank < len(group):
            yield group[rank]
        elif self.even == "pad":
            padding = iter(first * world_size)
            while len(group) < world_size:
                group.append(next(padding))
            yield group[rank]


def shard_by_rank(
    *, rank: int | None = None, world_size: int | None = None, even: str | None = "drop"
) -> Pipe[Any]:
    """Keep this rank's share of each epoch: every ``world_size``-th element from ``rank``.

    Put it after the shuffle (all ranks shuffle alike, with the same seed) so that the
    ranks' shares are disjoint and together cover the epoch. ``rank`` and ``world_size``
    default to ``torch.distributed``'s, when it is initialised, else the ``RANK`` and
    ``WORLD_SIZE`` environment variables, else rank 0 of 1. ``even="drop"`` gives every
    rank the same count by dropping at most ``world_size - 1`` elements per epoch (with a
    shuffle, different ones each epoch); ``even="pad"`` repeats the first ones instead;
    ``even=None`` keeps the shares as they fall. Sharding never changes an element's random
    draws: the ranks' outputs together are the unsharded output.

    >>> import datapipes as dp
    >>> pipe = dp.from_sequence(range(10)) | dp.shard_by_rank(rank=1, world_size=4)
    >>> list(pipe)
    [1, 5]
    """
    for name, value in (("rank", rank), ("world_size", world_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral)):
            raise fail("shard_by_rank", f"{name} must be an int or None, got {value!r}",
                       TypeError)
    rank = None if rank is None else int(rank)
    world_size = None if world_size is None else int(world_size)
    if world_size is not None and world_size < 1:
        raise fail("shard_by_rank", f"world_size must be >= 1, got {world_size}")
    if rank is not None and (rank < 0 or (world_size is not None and rank >= world_size)):
        raise fail("shard_by_rank", f"rank must be in [0, world_size), got {rank} of "
                   f"{world_size}")
    if even not in _EVEN:
        raise fail("shard_by_rank", f"even must be 'drop', 'pad' or None, got {even!r}")
    return Pipe(ShardByRank(rank=rank, world_size=world_size, even=even))
