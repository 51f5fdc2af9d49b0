"""``prefetch``: compute what comes before it on a background thread, ahead of use."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from .._graph import EpochContext, Item, Pipe, Stage, check_int, positional

_END = object()


def background(items: Iterator[Any], n: int, *, name: str = "datapipes-prefetch") -> Iterator[Any]:
    """Yield ``items``, computed on a thread up to ``n`` ahead. Errors arrive in order; closing
    the generator stops the thread.

    >>> list(background(iter(range(5)), 2))
    [0, 1, 2, 3, 4]
    """
    out: queue.Queue[tuple[Any, Any]] = queue.Queue(maxsize=n)
    stop = threading.Event()

    def put(entry: tuple[Any, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def feed() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # re-raised in the consumer
            put((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=feed, daemon=True, name=name)
    thread.start()
    try:
        while True:
            item, exc = out.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(10.0)


@attrs.frozen(kw_only=True, repr=False)
class Prefetch(Stage):
    call_name: ClassVar[str] = "prefetch"
    keeps_random_access: ClassVar[bool] = True
    transparent: ClassVar[bool] = True
    n: int = positional()

    def length(self, n: int) -> int:
        return n

    resumable: ClassVar[bool] = True
    order_free: ClassVar[bool] = True

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return background(items, self.n)

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        return bool(planner.add_ahead(self, self.n))

    def resume(
        self, items: Iterator[Any], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Any]:
        # tokens travel with the items: the position is that of what the consumer got
        return ((k, x, [t, 0]) for k, x, t in background(items, self.n))

    def tail_reason(self, one_to_one: bool) -> str:
        return "runs what comes before it on a background thread"


def prefetch(n: int) -> Pipe[Any]:
    """Run everything before this stage on a background thread, ``n`` elements ahead.

    It changes no value. In a compiled :class:`Loader` with workers it has nothing to
    add: the workers already run ahead (``prefetch=`` of ``compile``).

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(4)) | dp.map(abs) | dp.prefetch(2))
    [0, 1, 2, 3]
    """
    return Pipe(Prefetch(n=check_int("prefetch", "n", n, minimum=1)))
