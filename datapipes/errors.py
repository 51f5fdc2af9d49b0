"""Exceptions raised by datapipes."""

from __future__ import annotations

__all__ = ["StageError", "WorkerError"]


class StageError(RuntimeError):
    """A stage failed in a way that could not be re-raised as the user's own exception
    (it could not be pickled in a worker, or too many elements were skipped).

    The original error, where there is one, is chained as ``__cause__``.

    >>> import datapipes as dp
    >>> issubclass(dp.StageError, RuntimeError)
    True
    """


class WorkerError(RuntimeError):
    """A worker process or thread died, hung or could not be reached.

    The message names the worker's pid and the signal or exit code.

    >>> import datapipes as dp
    >>> str(dp.WorkerError("worker 0 (pid 4242) was killed by signal 9 (SIGKILL)"))
    'worker 0 (pid 4242) was killed by signal 9 (SIGKILL)'
    """
