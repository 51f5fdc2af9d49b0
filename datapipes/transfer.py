"""Pinning batches and moving them to an accelerator ahead of use, on a side thread."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .stages.prefetch import background


def _map_tensors(value: Any, fn: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(v, fn) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


class Transfer:
    """Pins tensors (``pin_memory``) and copies them to ``device`` on a CUDA side stream."""

    def __init__(self, pin_memory: bool, device: torch.device | None) -> None:
        self.pin_memory = pin_memory
        self.device = device

    @classmethod
    def create(cls, *, pin_memory: bool, device: Any) -> Transfer | None:
        if not isinstance(pin_memory, bool):
            raise TypeError(f"compile: pin_memory must be a bool, got {pin_memory!r}")
        if not pin_memory and device is None:
            return None
        target = None if device is None else torch.device(device)
        if target is not None and target.type == "cpu":
            return cls(pin_memory, None) if pin_memory else None
        if not torch.cuda.is_available():
            wanted = "pin_memory=True" if target is None else f"device={device!r}"
            raise RuntimeError(
                f"compile: {wanted} needs a CUDA device, and torch finds none here "
                f"(torch {torch.__version__}, cuda available: False)"
            )
        if target is not None and target.type != "cuda":
            raise ValueError(f"compile: device must be a CUDA device or 'cpu', got {device!r}")
        return cls(pin_memory or target is not None, target)

    def _move(self, value: Any, stream: Any) -> Any:
        if self.pin_memory:
            value = _map_tensors(value, lambda t: t if t.is_pinned() else t.pin_memory())
        if self.device is not None:
            with torch.cuda.stream(stream):
                value = _map_tensors(value, lambda t: t.to(self.device, non_blocking=True))
            event = torch.cuda.Event()
            event.record(stream)
            return value, event
        return value, None

    def run(self, items: Iterator[tuple[Any, Any, Any]], depth: int) -> Iterator[Any]:
        """Yield ``(key, value, position)`` items with each value pinned (and on the device),
        prepared ``depth`` ahead on a side thread."""
        stream = torch.cuda.Stream(self.device) if self.device is not None else None

        def moved() -> Iterator[tuple[Any, Any]]:
            try:
                for key, value, position in items:
                    value, event = self._move(value, stream)
                    yield (key, value, position), event
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()

        for item, event in background(moved(), depth, name="datapipes-transfer"):
            if event is not None:  # the copy ran on the side stream: wait for it, not more
                torch.cuda.current_stream(self.device).wait_event(event)
            yield item
