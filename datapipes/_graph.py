"""The pipe algebra: stages as frozen values, pipes as immutable tuples of stages."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import attrs

from . import _seeds

if TYPE_CHECKING:
    from .loader import Loader

T = TypeVar("T")
Item = tuple[Any, Any]  # (element key, value): what flows between stages


class EpochContext:
    """What a running stage may know about its epoch: the seed, the epoch number, the
    error policy (``skip``: drop an element whose stage raised, and record it) and the mode
    (``train``: False for evaluation, where ``augment`` passes elements through). A stage of
    your own gets it in ``stream`` and draws its randomness from it.

    >>> import datapipes as dp
    >>> ctx = dp.EpochContext(seed=0, epoch=1)
    >>> rng = ctx.element_rng(stage_key=2, key=7)  # the same for every run and worker
    >>> int(rng.integers(100)) == int(ctx.element_rng(2, 7).integers(100))
    True
    >>> ctx.train, dp.EpochContext(0, 1, train=False).train
    (True, False)
    """

    __slots__ = ("epoch", "key", "progress", "seed", "skip", "skipped", "stage", "train")

    def __init__(self, seed: int, epoch: int, *, skip: bool = False, train: bool = True) -> None:
        self.seed = seed
        self.epoch = epoch
        self.skip = skip
        self.train = train
        #: the elements dropped under ``skip``, in the order they failed
        self.skipped: list[Skipped] = []
        #: where a running task is, for a timeout's report: the stage and the element key it
        #: is on; in a fused run, ``progress`` is ``(units, values made so far)`` instead
        self.stage: Stage | None = None
        self.key: Any = None
        self.progress: tuple[list[Any], list[Any]] | None = None

    def failed(self, exc: BaseException, stage: Stage, key: object) -> None:
        """Handle a user error on one element: note where it happened, then re-raise it, or
        under ``skip`` record it so the caller drops the element. What is not an
        ``Exception`` (``KeyboardInterrupt``, ``sys.exit()``) is never skipped."""
        add_note(exc, stage, key)
        if not self.skip or not isinstance(exc, Exception):
            raise exc
        self.skipped.append(Skipped(repr(stage), key, type(exc).__qualname__, str(exc), exc))

    def stage_rng(self, stage_key: int) -> Any:
        return _seeds.stage_rng(self.seed, self.epoch, stage_key)

    def element_rng(self, stage_key: int, key: _seeds.Key) -> Any:
        return _seeds.element_rng(self.seed, self.epoch, stage_key, key)


@attrs.frozen
class Skipped:
    """An element dropped by ``on_error="skip"``: where, which, and what went wrong."""

    stage: str
    key: Any
    error: str
    message: str
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    def plain(self) -> Skipped:
        """The record without the exception object (to send it between processes)."""
        return Skipped(self.stage, self.key, self.error, self.message)


def fn_repr(fn: object) -> str:
    """How a user function shows in a pipe's repr: its name when it has one."""
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str) and getattr(fn, "__module__", None) is not None:
        return name
    return repr(fn)


def value_repr(value: object) -> str:
    """A short repr of a parameter: full when small, summarised when large.

    It costs the same whatever the size of ``value``: a long container is summarised by its
    type and length without looking at its items (a pipe's repr is taken per step, in error
    messages and checkpoints, so it must never walk a dataset).

    >>> value_repr([1, 2, 3]), value_repr(list(range(10**6)))
    ('[1, 2, 3]', '<list of 1000000>')
    """
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"<{type(value).__name__} {value.dtype} {tuple(shape)}>"
    if callable(value):
        return fn_repr(value)
    text = _short_repr(value, _SHORT)
    if text is not None:
        return text
    size = ""
    with contextlib.suppress(Exception):
        size = f" of {len(value)}"  # type: ignore[arg-type]
    return f"<{type(value).__name__}{size}>"  # not evaluable on purpose: never a different pipe


#: the longest repr a parameter shows in full
_SHORT = 60
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _longer_than(value: object, limit: int) -> bool:
    try:
        return len(value) > limit  # type: ignore[arg-type]
    except Exception:  # no len, or one that fails
        return False


def _short_repr(value: Any, limit: int) -> str | None:
    """``repr(value)`` when it has at most ``limit`` characters, else None; a container is
    looked into only as far as ``limit`` allows (each item takes at least one character)."""
    if isinstance(value, (str, bytes, bytearray)):
        return repr(value) if len(value) <= limit else None
    if type(value) not in _CONTAINERS:
        if type(value) is not range and _longer_than(value, limit):
            return None  # a dataset, a deque, a list subclass: its repr may walk it
        text = repr(value)  # a scalar, a range, a small object: its own repr decides
        return text if len(text) <= limit else None
    if len(value) > limit:
        return None
    if not value:
        return repr(value)
    parts: list[str] = []
    budget = limit
    for item in value.items() if isinstance(value, dict) else value:
        part = _pair_repr(item, budget) if isinstance(value, dict) else _short_repr(item, budget)
        budget -= 2 + (len(part) if part is not None else limit)
        if part is None or budget < 0:
            return None
        parts.append(part)
    inner = ", ".join(parts)
    if isinstance(value, list):
        text = f"[{inner}]"
    elif isinstance(value, tuple):
        text = f"({inner},)" if len(parts) == 1 else f"({inner})"
    elif isinstance(value, frozenset):
        text = f"frozenset({{{inner}}})"
    else:  # a dict or a set
        text = f"{{{inner}}}"
    return text if len(text) <= limit else None


def _pair_repr(pair: tuple[Any, Any], limit: int) -> str | None:
    key = _short_repr(pair[0], limit)
    value = None if key is None else _short_repr(pair[1], limit - len(key) - 2)
    return None if key is None or value is None else f"{key}: {value}"


def positional(**kwargs: Any) -> Any:
    """An attrs field shown without its name in the stage's repr."""
    return attrs.field(metadata={"positional": True}, **kwargs)


@attrs.frozen(kw_only=True, repr=False)
class Stage:
    """One step of a pipe: a frozen value holding its parameters and nothing else.

    Subclasses say how they compose (the class variables) and give their semantics as
    ``stream``: a generator over ``(key, value)`` items. ``stream`` is the plain,
    stage-by-stage definition that every executor must reproduce. The methods below it
    (``plan_into``, ``resume``, ...) say how the stage runs; a stage of your own that only
    writes ``stream`` runs after the workers, in the main process, and a checkpoint taken
    in its epoch replays the epoch up to its position (``docs/extending.md``).

    >>> import attrs, datapipes as dp
    >>> @attrs.frozen(kw_only=True, repr=False)
    ... class Pairs(dp.Stage):
    ...     call_name = "pairs"
    ...     def stream(self, items, ctx, stage_key):
    ...         last = None
    ...         for key, x in items:
    ...             if last is not None:
    ...                 yield key, (last, x)
    ...             last = x
    >>> list(dp.from_sequence([1, 2, 3]) | Pairs())
    [(1, 2), (2, 3)]
    """

    #: the public function that builds this stage, as it shows in ``repr``
    call_name: ClassVar[str] = ""
    is_source: ClassVar[bool] = False
    #: 1:1 and order-free: random access to the elements survives this stage
    keeps_random_access: ClassVar[bool] = False
    #: the stage takes no stage key and does not change any value (prefetch, sharding)
    transparent: ClassVar[bool] = False

    #: after the workers, its position is a counter (see ``resume``); else a checkpoint taken
    #: while it runs there replays the epoch up to the position
    resumable: ClassVar[bool] = False
    #: it gives the same multiset of outputs whatever the order of its inputs (so the
    #: workers before it may deliver as results come, with ``ordered=False``)
    order_free: ClassVar[bool] = False

    def needs_random_access(self) -> bool:
        return False

    def replace_before(
        self, keyed: list[tuple[int, Stage]], *, skipping: bool, train: bool
    ) -> list[tuple[int, Stage]] | None:
        """When planned: the keyed stages up to and including this one (``keyed``) as they
        are to be planned instead, each keeping its place and stage key (``cache`` reads
        what the stages before it make from disk); None (the default) changes nothing."""
        return None

    def check_after(self, before: tuple[Stage, ...]) -> None:
        """Refuse, with a ``TypeError`` that says why, to follow the stages ``before`` it in
        a pipe (of a fragment: those of the fragment). Called whenever a pipe is built."""

    def draws_randomness(self) -> bool:
        """Whether its output depends on the seed or the epoch (a shuffle, a random map)."""
        return False

    # -- how it runs: what the planner and the executors ask a stage ---------------------
    def plan_into(self, planner: Any, stage_key: int) -> bool:
        """Place this stage in the plan being built, by calling ``planner``
        (:class:`datapipes.plan.Planner`): in the head, the workers' segment, or nowhere
        (False, the default), which starts the tail: the stage then runs after the
        workers, in the main process, on the stream in order."""
        return False

    def head_stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int
                    ) -> Iterator[Item]:
        """On a stream head: this stage over ``(key, (element, positions))`` items."""
        return self.stream(items, ctx, stage_key)

    def resume(
        self, items: Iterator[Any], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Any]:
        """After the workers (``resumable`` stages only): this stage over ``(key, value,
        token)`` triples, from its counter ``local``; each output's token is ``[token of the
        input that completed it, counter after it]`` (``before``: the token before the
        first input, for an output that comes halfway through one)."""
        raise NotImplementedError(f"{self!r} cannot resume from a counter")

    def counter_limit(self) -> int | None:
        """The largest counter ``resume`` can be at, when there is one (``take(n)``: n)."""
        return None

    def tail_reason(self, one_to_one: bool) -> str:
        """Why the tail starts at this stage (for ``explain``)."""
        if not one_to_one:
            return "needs the stream in order: a filter or flat_map before it changes the count"
        return "needs the stream in order"

    def run_time_state(self) -> Any:
        """What this stage reads when the pipe runs rather than from its parameters (the
        rank of ``shard_by_rank``), to be recorded in a checkpoint; None if nothing."""
        return None

    def hands_over_as_is(self) -> bool:
        """Whether its output (tensors only) goes to the consumer untouched when it ends a
        worker's segment: it can then be written straight into shared memory."""
        return False

    def random_access_error(self) -> str:
        """What follows the stage's repr when it is refused after random access ended."""
        return (
            "permutes the whole dataset and needs random access, which ended before it; use "
            "a buffer shuffle instead, e.g. shuffle(buffer=10_000)"
        )

    def length(self, n: int) -> int | None:
        """Output count for ``n`` inputs, or None when it depends on the data."""
        return None

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        raise NotImplementedError

    def name_key(self) -> int | None:
        """The stage key from a user-given name, if this stage has one."""
        name = getattr(self, "name", None)
        return None if name is None else _seeds.name_key(name)

    def __repr__(self) -> str:
        args = []
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.default is not attrs.NOTHING and _same(value, field.default):
                continue
            shown = value_repr(value)
            # by the name the public function takes (attrs' alias: a field ``length_fn``
            # with alias ``length``, since a field ``length`` would hide ``Stage.length``)
            args.append(shown if field.metadata.get("positional") else f"{field.alias}={shown}")
        return f"{self.call_name}({', '.join(args)})"


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def fail(stage: str, message: str, exc: type[Exception] = ValueError) -> Exception:
    """An argument error naming the stage: ``batch: size must be a positive int, got 0``."""
    return exc(f"{stage}: {message}")


def check_int(stage: str, name: str, value: object, *, minimum: int) -> int:
    """``value`` as a plain int: any integer type (``numpy.int64`` too), never a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(stage, f"{name} must be an int >= {minimum}, got {value!r}", TypeError)
    if value < minimum:
        raise fail(stage, f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_callable(stage: str, name: str, value: object) -> None:
    if not callable(value):
        raise fail(stage, f"{name} must be callable, got {value!r}", TypeError)


def add_note(exc: BaseException, stage: Stage, key: object) -> None:
    """Attach where a user error happened (PEP 678), once."""
    if getattr(exc, "__datapipes_located__", False):
        return
    exc.add_note(f"datapipes: raised in stage {stage!r} on the element with key {key!r}")
    with contextlib.suppress(AttributeError):  # exceptions with __slots__
        exc.__datapipes_located__ = True  # type: ignore[attr-defined]


class Pipe(Generic[T]):
    """An immutable tuple of stages; ``a | b`` composes.

    A pipe that starts with a source is runnable; one that does not is a fragment, to be
    composed after a source. Pipes compare, hash and pickle by value.

    >>> import datapipes as dp
    >>> dp.Pipe() | dp.batch(2) == dp.batch(2)
    True
    >>> list(dp.from_sequence(range(5)) | dp.batch(2))
    [[0, 1], [2, 3], [4]]
    """

    __slots__ = ("_hash", "stages")
    stages: tuple[Stage, ...]
    _hash: int | None

    def __init__(self, *stages: Stage) -> None:
        for stage in stages:
            if not isinstance(stage, Stage):
                raise TypeError(f"Pipe: expected stages, got {stage!r}")
        _check_composition(stages)
        object.__setattr__(self, "stages", tuple(stages))
        object.__setattr__(self, "_hash", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise attrs.exceptions.FrozenInstanceError()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pipe, self.stages)

    # -- algebra -------------------------------------------------------------
    @property
    def is_runnable(self) -> bool:
        return bool(self.stages) and self.stages[0].is_source

    def __or__(self, other: object) -> Pipe[Any]:
        if isinstance(other, Stage):
            other = Pipe(other)
        if not isinstance(other, Pipe):
            if callable(other) and not isinstance(other, type):
                raise TypeError(
                    f"cannot compose a pipe with the function {fn_repr(other)}: a function is "
                    f"not a stage; wrap it in a stage, e.g. `pipe | dp.map({fn_repr(other)})`"
                )
            return NotImplemented
        if other.is_runnable:
            if self.stages:
                raise TypeError(
                    f"cannot put a source after other stages: {other!r} starts with a source; "
                    "a pipe has one source, first: write `source | stages`"
                )
            return other
        return Pipe(*self.stages, *other.stages)

    def __ror__(self, other: object) -> Pipe[Any]:
        if isinstance(other, Stage):
            return Pipe(other) | self
        if callable(other) and not isinstance(other, type):
            raise TypeError(
                f"cannot compose the function {fn_repr(other)} with a pipe: a function is not a "
                f"stage; wrap it in a stage, e.g. `dp.map({fn_repr(other)}) | pipe`"
            )
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipe):
            return NotImplemented
        return self.stages == other.stages

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(("Pipe", self.stages)))
        return self._hash  # type: ignore[return-value]

    def __repr__(self) -> str:
        if not self.stages:
            return "Pipe()"
        return " | ".join(repr(s) for s in self.stages)

    # -- facts -----------------------------------------------------------------
    def keyed_stages(self) -> list[tuple[int, Stage]]:
        """Each stage with its stage key: its position (counting only stages that take
        a key), or the key of its ``name``."""
        out = []
        position = 0
        for stage in self.stages:
            named = stage.name_key()
            out.append((position if named is None else named, stage))
            if not stage.transparent:
                position += 1
        return out

    def __len__(self) -> int:
        n = self.length()
        if n is None:
            raise TypeError(f"the length of this pipe is not known without iterating it: {self!r}")
        return n

    def length(self) -> int | None:
        """The number of elements an epoch yields, or None when it depends on the data."""
        if not self.is_runnable:
            raise TypeError(f"a fragment has no length; compose it after a source: {self!r}")
        n: int | None = self.stages[0].length(0)
        for stage in self.stages[1:]:
            if n is None:
                return None
            n = stage.length(n)
        return n

    # -- running -------------------------------------------------------------
    def __iter__(self) -> Iterator[T]:
        return self.iter()

    def iter(
        self,
        *,
        epoch: int = 0,
        seed: int | None = 0,
        state: dict[str, Any] | None = None,
        train: bool = True,
    ) -> Iterator[T]:
        """Iterate one epoch in this process: the reference every executor reproduces.

        With ``state`` (from ``Loader.state_dict()``), yield the rest of the epoch it was
        taken in; its epoch and seed win over the arguments. ``train=False`` iterates for
        evaluation: every ``augment`` passes its elements through unchanged.

        >>> import datapipes as dp
        >>> p = dp.from_sequence(range(6)) | dp.shuffle()
        >>> list(p.iter(epoch=1)) == list(p.iter(epoch=1)) != list(p.iter(epoch=2))
        True
        """
        from . import running

        self._require_runnable("iterate")
        return running.iterate(self, epoch, seed, state, train=train)

    def compile(self, **kwargs: Any) -> Loader:
        """Build a :class:`Loader` that runs this pipe in parallel (see ``docs/loader.md``)."""
        from . import running

        self._require_runnable("compile")
        return running.compile_pipe(self, **kwargs)

    def explain(self, *, train: bool = True) -> str:
        """Say how this pipe would run: which stages the planner fuses and where each runs
        (``train=False``: as ``compile(train=False)`` runs it, for evaluation)."""
        from . import running

        self._require_runnable("explain")
        return running.explain(self, train=train)

    def to_dot(self) -> str:
        """Draw this pipe as Graphviz DOT text: one box per stage, in order, grouped by
        where each stage runs (a fragment is a plain chain); a stage's tooltip says why.

        Render it with ``dot -Tsvg pipe.dot -o pipe.svg``.

        >>> import datapipes as dp
        >>> print((dp.from_iterable([1, 2]) | dp.map(float) | dp.batch(2)).to_dot())
        digraph pipe {
          node [shape=box];
          subgraph cluster_0_main {
            label="main process (head)";
            s0 [label="from_iterable([1, 2])", tooltip="reads the stream in order"];
          }
          subgraph cluster_1_workers {
            label="worker processes";
            s1 [label="map(float)", tooltip="per element"];
            s2 [label="batch(2)", tooltip="membership follows from the head"];
          }
          s0 -> s1;
          s1 -> s2;
        }
        """
        lines = ["digraph pipe {", "  node [shape=box];"]
        for g, (where, run) in enumerate(self._runs()):
            indent = "  "
            if where is not None:
                lines.append(f"  subgraph cluster_{g}_{where} {{")
                lines.append(f'    label="{_dot_text(_RUNS_IN[where])}";')
                indent = "    "
            for i, stage, why in run:
                tooltip = f', tooltip="{_dot_text(why)}"' if why else ""
                lines.append(f'{indent}s{i} [label="{_dot_text(repr(stage))}"{tooltip}];')
            if where is not None:
                lines.append("  }")
        lines.extend(f"  s{i} -> s{i + 1};" for i in range(len(self.stages) - 1))
        lines.append("}")
        return "\n".join(lines)

    def to_mermaid(self) -> str:
        """Draw this pipe as a Mermaid flowchart: one node per stage, in order, in one
        subgraph per run of stages that run in the same place (a fragment is a plain chain).

        GitHub renders it inside a fenced ``mermaid`` block in Markdown.

        >>> import datapipes as dp
        >>> print((dp.from_iterable([1, 2]) | dp.map(float) | dp.batch(2)).to_mermaid())
        flowchart TD
          subgraph main_0 ["main process (head)"]
            s0["from_iterable([1, 2])"]
          end
          subgraph workers_1 ["worker processes"]
            s1["map(float)"]
            s2["batch(2)"]
          end
          s0 --> s1
          s1 --> s2
        """
        lines = ["flowchart TD"]
        for g, (where, run) in enumerate(self._runs()):
            indent = "  "
            if where is not None:
                lines.append(f'  subgraph {where}_{g} ["{_mermaid_text(_RUNS_IN[where])}"]')
                indent = "    "
            lines.extend(f'{indent}s{i}["{_mermaid_text(repr(stage))}"]' for i, stage, _ in run)
            if where is not None:
                lines.append("  end")
        lines.extend(f"  s{i} --> s{i + 1}" for i in range(len(self.stages) - 1))
        return "\n".join(lines)

    def _runs(self) -> list[tuple[str | None, list[tuple[int, Stage, str]]]]:
        """The stages to draw, ``(position, stage, why it runs there)``, in runs of
        consecutive stages that run in the same place; a fragment is one run placed nowhere
        (None), since where a stage runs depends on the source."""
        if not self.is_runnable:
            return [(None, [(i, stage, "") for i, stage in enumerate(self.stages)])]
        from . import running

        runs: list[tuple[str | None, list[tuple[int, Stage, str]]]] = []
        for i, placement in enumerate(running.placements(self)):
            if not runs or runs[-1][0] != placement.where:
                runs.append((placement.where, []))
            runs[-1][1].append((i, placement.stage, placement.why))
        return runs

    def _require_runnable(self, what: str) -> None:
        if not self.is_runnable:
            raise TypeError(
                f"cannot {what} a fragment: it needs a source first, e.g. "
                f"`dp.from_sequence(data) | fragment`; got {self!r}"
            )


#: how a drawing labels each place a stage can run (``Placement.where`` in plan.py)
_RUNS_IN = {
    "main": "main process (head)",
    "workers": "worker processes",
    "tail": "main process (tail)",
}


def _dot_text(text: str) -> str:
    """``text`` for inside a DOT double-quoted string, shown as it is."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _mermaid_text(text: str) -> str:
    """``text`` for inside a Mermaid double-quoted label, shown as it is: entity codes for
    what Mermaid would read as a quote, an entity or an HTML tag (``map(<lambda>)``)."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text.replace("\n", "<br>")


def stage_by_stage(pipe: Pipe[Any], ctx: EpochContext) -> Iterator[Any]:
    """One epoch of ``pipe``, each stage's ``stream`` over the one before: no planning, no
    fusion, no workers. This is the definition every executor reproduces (what
    :func:`datapipes.testing.reference` runs).

    >>> import datapipes as dp
    >>> list(stage_by_stage(dp.from_sequence(range(5)) | dp.batch(2), EpochContext(0, 0)))
    [[0, 1], [2, 3], [4]]
    """
    pipe._require_runnable("iterate")
    items: Iterator[Item] = iter(())
    for stage_key, stage in pipe.keyed_stages():
        items = stage.stream(items, ctx, stage_key)
    return (x for _, x in items)


def _check_composition(stages: tuple[Stage, ...]) -> None:
    """Refuse, when the pipe is built, what could only fail halfway through an epoch."""
    random_access = True  # a fragment may follow a random-access source
    for position, stage in enumerate(stages):
        if stage.is_source:
            if position:
                raise TypeError(
                    f"{stage!r} is a source and must come first in a pipe, not at position "
                    f"{position}"
                )
            random_access = stage.keeps_random_access
            continue
        if stage.needs_random_access() and not random_access:
            raise TypeError(f"{stage!r} {stage.random_access_error()}")
        random_access = random_access and stage.keeps_random_access
        stage.check_after(stages[:position])

