"""Two stages of your own, written outside datapipes (see docs/extending.md).

* ``clip_scale(low, high, scale)``: a 1:1 element stage (``dp.MapStage``): it is planned like
  ``map``, fused with the maps around it, run in the workers, resumed by index arithmetic.
* ``sliding_window(size, step)``: a stream stage that keeps a buffer (``dp.Stage``): it runs
  after the workers, in the main process, on the stream in order; a checkpoint taken in
  its epoch replays the epoch up to its position.

Run it to see both in a compiled loader, checked against the stage-by-stage reference:

    python examples/custom_stages.py
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

import datapipes as dp


@attrs.frozen(kw_only=True, repr=False)
class ClipScale(dp.MapStage):
    """Clip each number to ``[low, high]``, then multiply it by ``scale``."""

    call_name: ClassVar[str] = "clip_scale"
    low: float
    high: float
    scale: float = 1.0

    def apply(self, x: Any) -> Any:
        return min(max(x, self.low), self.high) * self.scale


def clip_scale(low: float, high: float, *, scale: float = 1.0) -> dp.Pipe[Any]:
    """A one-stage pipe: ``min(max(x, low), high) * scale`` for each element."""
    if not low <= high:
        raise ValueError(f"clip_scale: low must be <= high, got {low} and {high}")
    return dp.Pipe(ClipScale(low=low, high=high, scale=scale))


@attrs.frozen(kw_only=True, repr=False)
class SlidingWindow(dp.Stage):
    """Tuples of ``size`` consecutive elements, a new one every ``step`` elements."""

    call_name: ClassVar[str] = "sliding_window"
    size: int
    step: int = 1

    def stream(self, items: Iterator[Any], ctx: dp.EpochContext, stage_key: int
               ) -> Iterator[Any]:
        window: collections.deque[Any] = collections.deque(maxlen=self.size)
        number = 0  # windows made so far: the key of the next one
        for seen, (_, x) in enumerate(items, 1):
            window.append(x)
            if seen >= self.size and (seen - self.size) % self.step == 0:
                yield number, tuple(window)
                number += 1


def sliding_window(size: int, *, step: int = 1) -> dp.Pipe[Any]:
    """A one-stage pipe of windows of ``size`` consecutive elements, every ``step``."""
    for name, value in (("size", size), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"sliding_window: {name} must be an int >= 1, got {value!r}")
    return dp.Pipe(SlidingWindow(size=size, step=step))


def main() -> None:
    from datapipes.testing import assert_matches_reference, reference

    pipe = (dp.from_sequence(range(12)) | dp.shuffle() | clip_scale(2, 9, scale=10)
            | sliding_window(3, step=2))
    print(pipe.explain())
    print(reference(pipe, epoch=0))
    assert_matches_reference(pipe, workers=2)
    print("compile(workers=2) equals the reference: True")


if __name__ == "__main__":
    main()
