"""The one door from the pipe algebra into running code.

``Pipe.iter``, ``Pipe.compile``, ``Pipe.explain``, the drawings and a stage whose inputs
are pipes (``mix``) import this module when they are called, and nothing else of the
planner or the executors: ``_graph`` (the algebra)
imports no running code, so the package's import graph has no circle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import _seeds
from ._graph import EpochContext, Pipe
from .executors.cursor import read_state
from .executors.inline import run_inline
from .loader import Loader
from .plan import Placement, plan


def iterate(pipe: Pipe[Any], epoch: int, seed: int | None, state: dict[str, Any] | None,
            *, train: bool = True) -> Iterator[Any]:
    """One epoch of ``pipe`` in this process (``Pipe.iter``), from ``state`` if given;
    ``train=False`` for evaluation (``augment`` passes elements through)."""
    epoch = _seeds.check_epoch(epoch, "iter")
    seed_value = _seeds.resolve_seed(_seeds.check_seed(seed, "iter"))
    train = _check_train(train, "iter")
    the_plan = plan(pipe, train=train)
    position = None
    if state is not None:
        seed_value, epoch, position, _ = read_state(state, the_plan)
    elif the_plan.pool is None and the_plan.ahead is None:
        return run_inline(the_plan, EpochContext(seed_value, epoch, train=train))
    return Loader(pipe, seed=seed_value, train=train).one_epoch(epoch, position)


def compile_pipe(pipe: Pipe[Any], **options: Any) -> Loader:
    """``Pipe.compile``: a :class:`Loader`."""
    return Loader(pipe, **options)


def explain(pipe: Pipe[Any], *, train: bool = True) -> str:
    return plan(pipe, train=_check_train(train, "explain")).explain()


def _check_train(train: object, where: str) -> bool:
    if not isinstance(train, bool):
        raise TypeError(f"{where}: train must be a bool, got {train!r}")
    return train


def placements(pipe: Pipe[Any]) -> tuple[Placement, ...]:
    """Where each stage of ``pipe`` runs, and why (for the drawings)."""
    return plan(pipe).placements


def run_planned(pipe: Pipe[Any], ctx: EpochContext) -> Iterator[Any]:
    """One epoch of ``pipe`` in this process with ``ctx``'s seed, error policy and mode,
    planned as ``Pipe.iter`` plans it (for a stage whose inputs are pipes: ``mix``)."""
    return run_inline(plan(pipe, skipping=ctx.skip, train=ctx.train), ctx)
