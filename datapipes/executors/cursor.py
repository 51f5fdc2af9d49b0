"""Where an epoch stands, as plain data: what a checkpoint records and resumes from.

Every output of an epoch comes with a *token*: the position right after it. The segment's
token is ``[p, j]`` (next: output ``j`` of unit ``p``, see ``segment.segment_stream``). Each
stage of the tail wraps the token of its input with a little state of its own, so the token
of a final output says where every stage stands: ``[upstream token, local state]``. Tokens
travel with the items, so a stage that reads ahead (``prefetch``, ``parallel_map``) still
reports the position of what the consumer got.

Tail stages whose state is not a few counters (a buffer shuffle after the workers) cannot
be resumed this way; for those pipes the token is ``["replay", n]``: the epoch is run again
from its start and its first ``n`` outputs dropped. ``explain()`` says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import _seeds
from .._graph import EpochContext, Stage
from .segment import tail_stream

if TYPE_CHECKING:
    from ..plan import Plan

Triple = tuple[Any, Any, Any]  # (key, value, token)


def resumable(stage: Stage) -> bool:
    """Whether a tail stage's position is a few counters (see the module docstring)."""
    return stage.resumable


def start_tokens(tail: tuple[tuple[int, Stage], ...], token: Any) -> tuple[Any, list[Any]]:
    """Split a final token into the segment's position and each tail stage's local state."""
    locals_: list[Any] = []
    for _ in tail:
        token, local = token
        locals_.append(local)
    locals_.reverse()
    p, j = token
    return (int(p), int(j)), locals_


def initial_locals(tail: tuple[tuple[int, Stage], ...]) -> list[Any]:
    """Each tail stage's local state at the start of an epoch: every counter at 0."""
    return [0 for _ in tail]


def run_tail(
    items: Iterator[Triple],
    tail: tuple[tuple[int, Stage], ...],
    ctx: EpochContext,
    locals_: list[Any],
    start: Any,
) -> Iterator[Triple]:
    """Run the tail on ``(key, value, token)`` triples, from each stage's local state."""
    for (stage_key, stage), local in zip(tail, locals_, strict=True):
        items = stage.resume(items, ctx, stage_key, int(local), start)
        start = [start, local]
    return items


def epoch_from(
    plan: Plan,
    ctx: EpochContext,
    start: Any,
    segment: Callable[[EpochContext, tuple[int, int]], Iterator[Triple]],
) -> Iterator[Triple]:
    """One epoch of ``plan`` from position ``start`` (None: its beginning), each output with
    the position after it. ``segment(ctx, (p, j))`` runs head and segment from ``(p, j)``:
    in this process or in workers."""
    tail = plan.tail
    if not all(resumable(stage) for _, stage in tail):
        # Replay: the whole epoch again, numbered, its first outputs dropped.
        skip = 0 if start is None else int(start[1])
        items = tail_stream(plan, ((k, x) for k, x, _ in segment(ctx, (0, 0))), ctx)
        numbered = ((k, x, ["replay", n + 1]) for n, (k, x) in enumerate(items))
        return itertools.islice(numbered, skip, None)
    if start is None:
        segment_start, locals_ = (0, 0), initial_locals(tail)
    else:
        segment_start, locals_ = start_tokens(tail, start)
    return run_tail(segment(ctx, segment_start), tail, ctx, locals_, list(segment_start))


# -- checkpoints ----------------------------------------------------------------------
#: the layout ``state_dict()`` writes. 1: the first (0.1.0, no ``on_error``; later 0.1.x
#: added ``on_error`` without changing the number); 2: the same keys as the later 1, and
#: positions checked against the pipe when loaded. Both 1 and 2 load.
STATE_FORMAT = 2
_READS = (1, 2)
_KEYS = frozenset({"format", "pipe", "fingerprint", "on_error", "seed", "epoch", "position",
                   "delivered", "checksum"})


def fingerprint(pipe: Any) -> str:
    """A digest of a pipe's stages and parameters (and its source's length and a sample of
    its elements, when in memory)."""
    source = pipe.stages[0]
    size = source.length(0)
    # what stages read when the pipe runs (a shard's rank) is part of the state too
    read = [state for s in pipe.stages if (state := s.run_time_state()) is not None]
    text = f"{pipe!r}|{type(source).__qualname__}|{size}|{read}|{source.sample_text()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def make_state(
    pipe: Any, seed: int, epoch: int, position: Any, delivered: int, on_error: str = "raise"
) -> dict[str, Any]:
    """A checkpoint as plain data (ints, strings, lists), with a checksum over it."""
    body = {
        "format": STATE_FORMAT,
        "pipe": repr(pipe),
        "fingerprint": fingerprint(pipe),
        "on_error": on_error,
        "seed": seed,
        "epoch": epoch,
        "position": _plain(position),
        "delivered": delivered,
    }
    return {**body, "checksum": _checksum(body)}


def _plain(token: Any) -> Any:
    if isinstance(token, (list, tuple)):
        return [_plain(t) for t in token]
    return token


def read_state(
    state: Any, plan: Plan, on_error: str = "raise"
) -> tuple[int, int, Any, int]:
    """Check a checkpoint against ``plan``'s pipe: ``(seed, epoch, position, delivered)``.

    Raises ``ValueError`` saying what does not match, for a state of another pipe or of an
    unknown format, or a corrupted or edited one: a wrong checkpoint never yields wrong data.
    """
    pipe = plan.pipe
    body = _checked_body(state)
    if body["fingerprint"] != fingerprint(pipe):
        raise ValueError(
            "load_state_dict: the state was taken from a different pipe:\n"
            f"  state: {body['pipe']}\n  this:  {pipe!r}"
        )
    saved_on_error = body.get("on_error", "raise")  # format 1 before on_error: always raise
    if saved_on_error != on_error:
        raise ValueError(
            f"load_state_dict: the state was taken with on_error={saved_on_error!r}, which "
            f"plans the pipe differently; resume it with compile(on_error={saved_on_error!r})"
        )
    seed, epoch, delivered = body["seed"], body["epoch"], body["delivered"]
    for name, value in (("seed", seed), ("epoch", epoch), ("delivered", delivered)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"load_state_dict: {name} must be an int >= 0, got {value!r}")
    try:
        _seeds.check_epoch(epoch, "load_state_dict")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    position = body["position"]
    if position is not None:
        _check_position(position, plan, delivered, on_error)
    return seed, epoch, position, delivered


def _checked_body(state: Any) -> dict[str, Any]:
    """The state without its checksum, once its layout, format and checksum are right."""
    if not isinstance(state, dict):
        raise ValueError(f"load_state_dict: expected the dict from state_dict(), got "
                         f"{type(state).__name__}")
    if "format" in state and state["format"] not in _READS:
        raise ValueError(
            f"load_state_dict: the state has format {state['format']!r}, and this version of "
            f"datapipes reads formats {' and '.join(map(str, _READS))} (it writes "
            f"{STATE_FORMAT}); a state of a newer datapipes needs that version to load"
        )
    keys = _KEYS - {"on_error"} if state.get("format") == 1 else _KEYS
    if not keys <= set(state) or not set(state) <= _KEYS:
        raise ValueError(
            f"load_state_dict: not a datapipes state: missing {sorted(keys - set(state))}, "
            f"unexpected {sorted(map(str, set(state) - _KEYS))}"
        )
    body = {k: v for k, v in state.items() if k != "checksum"}
    try:
        checksum = _checksum(body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"load_state_dict: the state does not hold plain data: {exc}") from exc
    if state["checksum"] != checksum:
        raise ValueError("load_state_dict: the state was corrupted or edited (its checksum "
                         "does not match its contents)")
    return body


def _check_position(position: Any, plan: Plan, delivered: int, on_error: str) -> None:
    """Refuse a position this pipe cannot reach: past the end of the epoch, or not of the
    shape its stages write (so an edited state never silently drops outputs)."""
    length = plan.pipe.length() if on_error == "raise" else None
    if not _valid_position(position, len(plan.tail)):
        raise ValueError(f"load_state_dict: position {position!r} does not fit this pipe")
    if length is not None and delivered > length:
        raise ValueError(f"load_state_dict: the state says {delivered} outputs were delivered, "
                         f"but an epoch of this pipe has {length}")
    if position[0] == "replay":
        if length is not None and position[1] > length:
            raise ValueError(f"load_state_dict: position {position!r} is past the end of the "
                             f"epoch ({length} outputs)")
        return
    (p, j), locals_ = start_tokens(plan.tail, position)
    units = plan.unit_count()
    if units is not None and (p > units or (p == units and j > 0)):
        raise ValueError(f"load_state_dict: position {position!r} is past the end of the "
                         f"epoch (unit {p}, output {j}; the epoch has {units} units)")
    for (_, stage), local in zip(plan.tail, locals_, strict=True):
        limit = stage.counter_limit()
        if limit is not None and local > limit:
            raise ValueError(f"load_state_dict: position {position!r} says {stage!r} is at "
                             f"{local}, past its {limit}")


def _valid_position(token: Any, depth: int) -> bool:
    if isinstance(token, list) and len(token) == 2 and token[0] == "replay":
        return isinstance(token[1], int) and not isinstance(token[1], bool) and token[1] >= 0
    for _ in range(depth):
        if not (isinstance(token, list) and len(token) == 2):
            return False
        token, local = token
        if not isinstance(local, int) or isinstance(local, bool) or local < 0:
            return False
    return (
        isinstance(token, list) and len(token) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in token)
    )
