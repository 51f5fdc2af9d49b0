"""Exceptions raised by datapipes."""

from __future__ import annotations

__all__ = ["StageError", "WorkerError"]


class StageError(RuntimeError):
    """A stage failed in a way that could not be re-raised as the user's own exception.

    The original error is chained as ``__cause__``.
    """


class WorkerError(RuntimeError):
    """A worker process or thread died, hung or could not be reached."""
