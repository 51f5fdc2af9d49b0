"""The workers' segment of one epoch: tasks out to a pool, results back in order.

The head's units are cut into tasks (``segment.unit_chunks``), each sent to the least busy
worker while fewer than ``workers × prefetch`` are in flight; results come back in any
order and are delivered in sequence (or as they come, when nothing after the workers needs
the order), each output with the position after it (what a checkpoint records).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .._graph import EpochContext
from ..plan import Plan
from ..stats import Tally
from .protocol import Pool, Task
from .segment import unit_chunks, with_positions
from .sizing import ChunkSizer

#: how long one wait for results lasts before the checks run again (seconds)
POLL_SECONDS = 1.0

Triple = tuple[Any, Any, tuple[int, int]]


class ParallelEpoch:
    """One epoch of ``plan``'s segment on ``pool``, from position ``start``."""

    def __init__(
        self, pool: Pool, plan: Plan, ctx: EpochContext, start: tuple[int, int], *,
        epoch_id: int, prefetch: int, outstanding: list[int], sizer: ChunkSizer,
        unordered: bool, tally: Tally, rebuild: Callable[[Any], BaseException],
    ) -> None:
        self.pool, self.ctx, self.start, self.epoch_id = pool, ctx, start, epoch_id
        self.prefetch, self.outstanding, self.sizer = prefetch, outstanding, sizer
        self.unordered, self.tally, self.rebuild = unordered, tally, rebuild
        self.tasks = unit_chunks(plan, ctx, start[0], sizer)
        self.limit = len(outstanding) * prefetch
        self.firsts: dict[int, int] = {}  # seq -> the first unit of its task
        self.pending: dict[int, Any] = {}  # seq -> its result, until delivered
        self.sent = self.delivered = 0
        self.exhausted = self.finished = False
        self.looked = self.waited = False

    def outputs(self, still_current: Callable[[], None]) -> Iterator[Triple]:
        """The epoch's outputs in order, each with its position; ``still_current`` raises
        when the pass must stop (the loader closed, a newer pass began)."""
        try:
            while True:
                still_current()
                self._send()
                ready = next(iter(self.pending), None) if self.unordered else self.delivered
                if ready in self.pending:
                    yield from self._deliver(ready)
                    continue  # refill before waiting
                if self.exhausted and self.delivered == self.sent:
                    self.finished = True
                    return
                self._collect()
        finally:
            if not self.finished:
                self.pending.clear()
                self.pool.cancel(self.epoch_id)

    def _send(self) -> None:
        """Send tasks while fewer than ``workers × prefetch`` are in flight."""
        outstanding = self.outstanding
        while not self.exhausted and self.sent - self.delivered < self.limit:
            w = min(range(len(outstanding)), key=outstanding.__getitem__)
            if outstanding[w] >= self.prefetch:
                return
            task = next(self.tasks, None)
            if task is None:
                self.exhausted = True
                return
            first, kind, payload = task
            self.firsts[self.sent] = first
            ctx = self.ctx
            self.pool.send(w, Task(self.epoch_id, self.sent, ctx.seed, ctx.epoch, ctx.skip,
                                   kind, payload))
            outstanding[w] += 1
            self.sent += 1

    def _deliver(self, seq: int) -> Iterator[Triple]:
        """The outputs of result ``seq``, then its error if it has one."""
        # was it here already (the workers are ahead), or did we wait for it?
        if self.waited:
            self.tally.results_waited += 1
        else:
            self.tally.results_ready += 1
        self.looked = self.waited = False
        per_unit, skipped, error = self.pending.pop(seq)
        first = self.firsts.pop(seq)
        self.delivered += 1
        self.ctx.skipped.extend(skipped)
        p0, j0 = self.start
        for i, outputs in enumerate(per_unit):
            p = first + i
            yield from with_positions(p, outputs, j0 if p == p0 else 0)
        del per_unit
        if error is not None:  # after the outputs before it, as in the reference
            raise self.rebuild(error)

    def _collect(self) -> None:
        """First a look at what has arrived, then a wait (the results queue was empty)."""
        self.waited, self.looked = self.looked, True
        wait = POLL_SECONDS if self.waited else 0.0
        for reply in self.pool.poll(self.epoch_id, wait, self.outstanding):
            self.outstanding[reply.worker] -= 1
            if reply.epoch_id != self.epoch_id or reply.kind == "dropped":
                continue
            if reply.kind == "error":
                raise self.rebuild(reply.payload)
            self.tally.tasks += 1
            self.sizer.observe(reply.payload[0])
            self.pending[reply.seq] = reply.payload
