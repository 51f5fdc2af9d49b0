"""``mix``, ``concat`` and ``zip``: one stream from several runnable pipes.

Each is a stream source whose inputs are whole pipes, each keeping its own stages: a
random-access input keeps its index arithmetic (a full ``shuffle()`` of it reads only the
elements it yields), a stream input is read in order. The result is an ordinary pipe: any
stage may follow it, it compiles with workers (it is read in the main process, as any stream
source, and the stages after it run in the workers), resumes from a checkpoint (by replaying
the epoch's head) and shards like any stream.

Randomness (DESIGN §4): input ``i`` runs its epoch ``e`` with its own seed,
:func:`input_seed` of ``(seed, stage key, i, pass)``, so two equal inputs do not draw the
same shuffles, and a ``mix`` draws which input comes next from its stage generator
``stage_rng(seed, epoch, stage key)``. Nothing else decides the output.
"""

from __future__ import annotations

import bisect
import builtins
import itertools
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import EpochContext, Item, Pipe, check_int, fail, positional, value_repr
from .sources import Source

#: the domain tag of an input's seed (stage streams use 0, element streams 1, ``split`` 3)
_INPUT = 2
_DRAWS = 1024  # uniform draws taken from the generator at a time
_STOPS = ("first", "all", "never")
_END = object()  # what an input's iterator gives once it is exhausted


def input_seed(seed: int, stage_key: int, index: int, cycle: int = 0) -> int:
    """The seed that input ``index`` of a ``mix``, ``concat`` or ``zip`` (at ``stage_key``)
    runs with in its pass ``cycle`` over an epoch (passes after the first happen only for
    ``mix(..., stop="never")``): a 63-bit int from ``SeedSequence(seed, spawn_key=(stage_key,
    2, index, cycle))``. The pass runs as ``inputs[index].iter(epoch=epoch, seed=that)``.

    >>> input_seed(0, 0, 0) == input_seed(0, 0, 0) != input_seed(0, 0, 1)
    True
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(stage_key, _INPUT, index, cycle))
    return int(sequence.generate_state(1, np.uint64)[0]) >> 1


def run_input(pipe: Pipe[Any], ctx: EpochContext, seed: int) -> Iterator[Any]:
    """One epoch of the input ``pipe`` with ``seed``: the values ``pipe.iter(epoch=ctx.epoch,
    seed=seed)`` yields, under the epoch's error policy (an element skipped inside the input
    is recorded with the epoch's).

    The input runs planned, as ``pipe.iter`` does, not stage by stage: the two are equal (the
    library's central law), and the planned run keeps a random-access input's index
    arithmetic, where the stage-by-stage ``shuffle()`` would read the whole input first.
    """
    # Running a pipe goes through the one door into running code, as Pipe.iter does
    # (imported when an epoch starts: the stages never depend on the planner).
    from .. import running

    inner = EpochContext(seed, ctx.epoch, skip=ctx.skip, train=ctx.train)
    inner.skipped = ctx.skipped
    return running.run_planned(pipe, inner)


def _noted(values: Iterator[Any], note: str) -> Iterator[Any]:
    """``values``, with ``note`` added to an error raised while reading them."""
    try:
        yield from values
    except Exception as exc:
        exc.add_note(note)
        raise


class _Inputs(Source):
    """A stream source over several runnable pipes, ``inputs``."""

    inputs: tuple[Pipe[Any], ...]

    def opened(self, ctx: EpochContext, stage_key: int, index: int, cycle: int = 0
               ) -> Iterator[Any]:
        """Pass ``cycle`` of input ``index`` in this epoch."""
        seed = input_seed(ctx.seed, stage_key, index, cycle)
        return _noted(run_input(self.inputs[index], ctx, seed),
                      f"datapipes: in input {index} of {self.call_name}(...)")

    def lengths(self, indices: Sequence[int] | None = None) -> list[int] | None:
        """The lengths of the inputs (those at ``indices``), or None if one is unknown."""
        chosen = range(len(self.inputs)) if indices is None else indices
        lengths = [self.inputs[i].length() for i in chosen]
        known = [n for n in lengths if n is not None]
        return known if len(known) == len(lengths) else None

    def draws_randomness(self) -> bool:
        return any(stage.draws_randomness() for pipe in self.inputs for stage in pipe.stages)

    def sample_text(self) -> str:
        sources = [pipe.stages[0] for pipe in self.inputs]
        return "|".join(s.sample_text() for s in sources if isinstance(s, Source))

    def run_time_state(self) -> Any:
        found = [[s.run_time_state() for s in pipe.stages] for pipe in self.inputs]
        return found if any(x is not None for states in found for x in states) else None

    def options(self) -> list[str]:
        """The arguments after the inputs, as ``repr`` shows them."""
        return []

    def __repr__(self) -> str:
        args = [repr(pipe) for pipe in self.inputs] + self.options()
        return f"{self.call_name}({', '.join(args)})"


@attrs.frozen(kw_only=True, repr=False)
class Concat(_Inputs):
    call_name: ClassVar[str] = "concat"
    inputs: tuple[Pipe[Any], ...] = positional()

    def length(self, n: int) -> int | None:
        lengths = self.lengths()
        return None if lengths is None else sum(lengths)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        values = itertools.chain.from_iterable(
            self.opened(ctx, stage_key, i) for i in range(len(self.inputs))
        )
        return builtins.enumerate(values)


@attrs.frozen(kw_only=True, repr=False)
class Zip(_Inputs):
    call_name: ClassVar[str] = "zip"
    inputs: tuple[Pipe[Any], ...] = positional()

    def length(self, n: int) -> int | None:
        lengths = self.lengths()
        return None if lengths is None else min(lengths)

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        opened = [self.opened(ctx, stage_key, i) for i in range(len(self.inputs))]
        return builtins.enumerate(builtins.zip(*opened, strict=False))  # to the shortest


class _Draws:
    """Which input comes next: each step takes the next uniform draw ``u`` in ``[0, 1)``
    (``rng.random`` in blocks of 1024) and picks the active input whose share of the active
    weights' running sum holds ``u * total``; dropping an input renormalises the rest."""

    def __init__(self, weights: Sequence[float], rng: np.random.Generator) -> None:
        self.weights = weights
        self.active = [i for i, w in builtins.enumerate(weights) if w > 0]
        self.rng = rng
        self.uniforms: Iterator[float] = iter(())
        self._sums()

    def _sums(self) -> None:
        self.sums = list(itertools.accumulate(self.weights[i] for i in self.active))

    def drop(self, index: int) -> None:
        self.active.remove(index)
        self._sums()

    def __bool__(self) -> bool:
        return bool(self.active)

    def next(self) -> int:
        u = next(self.uniforms, None)
        if u is None:
            self.uniforms = iter(self.rng.random(_DRAWS).tolist())
            u = next(self.uniforms)
        j = bisect.bisect_right(self.sums, u * self.sums[-1])
        return self.active[min(j, len(self.active) - 1)]  # u * total rounded up to total


@attrs.frozen(kw_only=True, repr=False)
class Mix(_Inputs):
    call_name: ClassVar[str] = "mix"
    inputs: tuple[Pipe[Any], ...] = positional()
    weights: tuple[float, ...] | None = None
    stop: str = "first"
    #: ``length=`` of ``mix(..., stop="never")``: the elements of each epoch
    epoch_length: int | None = attrs.field(default=None, alias="length")

    def draws_randomness(self) -> bool:
        return True

    def length(self, n: int) -> int | None:
        if self.stop == "never":
            return self.epoch_length
        drawn = [k for k, w in builtins.enumerate(self.shares()) if w > 0]
        if self.stop == "first" and len(drawn) > 1:
            return None  # where the epoch ends depends on the draws
        lengths = self.lengths(drawn)
        return None if lengths is None else sum(lengths)

    def shares(self) -> tuple[float, ...]:
        return self.weights if self.weights is not None else (1.0,) * len(self.inputs)

    def options(self) -> list[str]:
        shown = [] if self.weights is None else [f"weights={value_repr(self.weights)}"]
        if self.stop != "first":
            shown.append(f"stop={self.stop!r}")
        if self.epoch_length is not None:
            shown.append(f"length={self.epoch_length}")
        return shown

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        draws = _Draws(self.shares(), ctx.stage_rng(stage_key))
        opened: dict[int, Iterator[Any]] = {}  # inputs are opened when first drawn
        passes = [0] * len(self.inputs)
        position = 0
        while draws and (self.epoch_length is None or position < self.epoch_length):
            i = draws.next()
            if i not in opened:
                opened[i] = self.opened(ctx, stage_key, i)
            x = next(opened[i], _END)
            if x is _END:
                if self.stop == "first":
                    return
                if self.stop == "all":
                    draws.drop(i)
                    continue
                passes[i] += 1  # "never": input i starts over, with a seed of its own
                opened[i] = self.opened(ctx, stage_key, i, passes[i])
                x = next(opened[i], _END)
                if x is _END:
                    raise ValueError(
                        f"mix: input {i} ({self.inputs[i]!r}) yielded no element in a pass; "
                        "stop='never' starts an exhausted input over, and cannot with one "
                        "that is empty"
                    )
            yield position, x
            position += 1


def _check_inputs(stage: str, pipes: tuple[Any, ...]) -> tuple[Pipe[Any], ...]:
    if not pipes:
        raise fail(stage, "give at least one input pipe, e.g. "
                   f"{stage}(dp.from_sequence(a), dp.from_sequence(b))")
    for i, pipe in builtins.enumerate(pipes):
        if not isinstance(pipe, Pipe):
            raise fail(stage, f"input {i} must be a pipe, got {type(pipe).__name__}: "
                       f"{value_repr(pipe)}", TypeError)
        if not pipe.is_runnable:
            raise fail(stage, f"input {i} is a fragment, not a runnable pipe: {pipe!r}; give "
                       "it a source first, e.g. dp.from_sequence(data) | fragment", TypeError)
    return tuple(pipes)


def _check_weights(weights: Any, count: int) -> tuple[float, ...] | None:
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise fail("mix", f"weights must be a sequence of numbers, got {weights!r}", TypeError)
    if any(isinstance(w, bool) or not isinstance(w, numbers.Real) for w in weights):
        raise fail("mix", f"weights must be numbers, got {weights!r}", TypeError)
    kept = tuple(float(w) for w in weights)
    if len(kept) != count:
        raise fail("mix", f"weights must have one weight per input ({count}), got {len(kept)}")
    if not all(np.isfinite(w) and w >= 0 for w in kept):
        raise fail("mix", f"weights must be finite and not negative, got {list(kept)}")
    if not sum(kept) > 0:
        raise fail("mix", "weights must not all be 0")
    return kept


def mix(
    *pipes: Pipe[Any],
    weights: Sequence[float] | np.ndarray | None = None,
    stop: str = "first",
    length: int | None = None,
) -> Pipe[Any]:
    """Mix several pipes into one stream: each step draws the input that gives the next
    element, with probability proportional to its weight (equal by default), as tf.data's
    ``sample_from_datasets``.

    The draws come from ``(seed, epoch)``: the same each run, different each epoch. ``stop``
    says when the epoch ends: ``"first"`` when the draw falls on an exhausted input (the
    others' rest is not read); ``"all"`` when every input is exhausted (an exhausted input
    drops out of the draw, and the others' weights are renormalised); ``"never"`` starts an
    exhausted input over, with a seed of its own, so that a shuffled input reshuffles, and
    ends the epoch after exactly ``length`` elements, which it requires. An input of weight
    0 is never drawn, nor read.

    >>> import datapipes as dp
    >>> small, large = dp.from_sequence(["s"] * 5), dp.from_sequence(["L"] * 30)
    >>> "".join(mix(small, large, weights=[1, 3], stop="all"))
    'LLLLLLLsLLLLLLssLLsLLLLLLsLLLLLLLLL'
    >>> "".join(mix(small, large, weights=[1, 3], stop="never", length=12))
    'LLLLLLLsLLLL'
    """
    inputs = _check_inputs("mix", pipes)
    kept = _check_weights(weights, len(inputs))
    if stop not in _STOPS:
        raise fail("mix", f"stop must be 'first', 'all' or 'never', got {stop!r}")
    if stop == "never":
        if length is None:
            raise fail("mix", "stop='never' starts exhausted inputs over without end: give "
                       "length=n, the number of elements of each epoch")
        length = check_int("mix", "length", length, minimum=0)
    elif length is not None:
        raise fail("mix", f"length is only for stop='never', got length={length!r} with "
                   f"stop={stop!r}; to cut an epoch short, put take(n) after the mix")
    return Pipe(Mix(inputs=inputs, weights=kept, stop=stop, length=length))


def concat(*pipes: Pipe[Any]) -> Pipe[Any]:
    """The elements of each pipe in turn: all of the first, then all of the second, ...

    >>> import datapipes as dp
    >>> list(concat(dp.from_sequence([1, 2]), dp.from_iterable([3]), dp.from_sequence([4])))
    [1, 2, 3, 4]
    """
    return Pipe(Concat(inputs=_check_inputs("concat", pipes)))


def zip(*pipes: Pipe[Any]) -> Pipe[Any]:
    """Tuples of one element from each pipe, in step, until the shortest ends.

    >>> import datapipes as dp
    >>> list(zip(dp.from_sequence("abc"), dp.from_sequence(range(5))))
    [('a', 0), ('b', 1), ('c', 2)]
    """
    return Pipe(Zip(inputs=_check_inputs("zip", pipes)))
