"""``interleave``: read several inputs' streams at once, a few elements from each in turn.

The way to mix shards (files, tar archives, JSON-lines files) into one stream, as tf.data's
``interleave(cycle_length=...)`` does: ``dp.from_sequence(paths) | dp.shuffle() |
dp.interleave(read_records, cycle_length=8)``. Its output depends on its parameters and its
inputs only, never on a worker count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import attrs

from .._graph import EpochContext, Item, Pipe, Stage, check_callable, check_int, positional
from .._seeds import Key, sub_key


@attrs.frozen(kw_only=True, repr=False)
class Interleave(Stage):
    call_name: ClassVar[str] = "interleave"
    fn: Callable[[Any], Iterable[Any]] = positional()
    cycle_length: int
    block_length: int = 1

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        return bool(planner.add_reader(self, stage_key))

    def head_stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int
                    ) -> Iterator[Item]:
        # it reads values, and the plan puts no position before it
        values = self.stream(((k, x) for k, (x, _) in items), ctx, stage_key)
        return ((k, (y, ())) for k, y in values)

    def tail_reason(self, one_to_one: bool) -> str:
        return ("mixes its inputs' streams, here after the workers (it runs before them only "
                "right after the source and stages on indices: no map or enumerate before it)")

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        inputs = iter(items)
        # each slot: (the input's key, its outputs numbered from 0)
        slots: list[tuple[Key, Iterator[tuple[int, Any]]]] = []

        def open_next() -> tuple[Key, Iterator[tuple[int, Any]]] | None:
            for key, x in inputs:
                try:
                    return key, enumerate(iter(self.fn(x)))
                except Exception as exc:
                    ctx.failed(exc, self, key)  # under skip: the input is dropped
            return None

        while len(slots) < self.cycle_length and (opened := open_next()) is not None:
            slots.append(opened)
        i = 0
        while slots:
            key, outputs = slots[i]
            done = False
            for _ in range(self.block_length):
                try:
                    j, y = next(outputs)
                except StopIteration:
                    done = True
                    break
                except Exception as exc:
                    ctx.failed(exc, self, key)  # under skip: the rest of this input is lost
                    done = True
                    break
                yield sub_key(key, j), y
            if done:  # the next input takes this slot, and has its turn next round
                opened = open_next()
                if opened is None:
                    del slots[i]
                    if slots:
                        i %= len(slots)
                    continue
                slots[i] = opened
            i = (i + 1) % len(slots)


def interleave(
    fn: Callable[[Any], Iterable[Any]], *, cycle_length: int, block_length: int = 1
) -> Pipe[Any]:
    """Turn each element into the stream ``fn(x)`` and mix ``cycle_length`` of them at a
    time: ``block_length`` elements from the first, then from the second, and so on round
    the cycle; when a stream ends, the next element's stream takes its place.

    The output key of element ``j`` of the stream of the element with key ``k`` is ``(k,
    j)``, as for ``flat_map``. Right after the source (and stages on indices, such as
    ``shuffle()`` of the shards), it runs in the main process, and the stages after it run
    in the workers; it ends random access.

    >>> import datapipes as dp
    >>> shards = {"a": ["a0", "a1", "a2"], "b": ["b0"], "c": ["c0", "c1"]}
    >>> list(dp.from_sequence(["a", "b", "c"]) | dp.interleave(shards.get, cycle_length=2))
    ['a0', 'b0', 'a1', 'a2', 'c0', 'c1']
    """
    check_callable("interleave", "fn", fn)
    cycle_length = check_int("interleave", "cycle_length", cycle_length, minimum=1)
    block_length = check_int("interleave", "block_length", block_length, minimum=1)
    return Pipe(Interleave(fn=fn, cycle_length=cycle_length, block_length=block_length))
