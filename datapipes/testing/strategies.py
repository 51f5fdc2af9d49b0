"""Hypothesis strategies for pipes: random runnable pipes and fragments over small int data.

Every stage a strategy draws takes Python ints and gives Python ints, so any stage can follow
any other; only a *terminal* stage (``batch`` with nothing after it, ``batch | collate()``,
``enumerate()``) yields something else, and it comes last. The stages are drawn from a table
(:data:`STAGES`, :data:`TERMINALS`): to cover a new stage, add a :class:`StageBuilder`.

All functions used come from :mod:`datapipes.testing.functions`, so drawn pipes pickle, run
in spawned workers, and (over lists and ranges) have a ``repr`` that evaluates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import datapipes as dp
from datapipes import Pipe

from . import functions as fns

# StageBuilder is public too (to extend the tables), but left out of __all__: no order of
# ["STAGES", "StageBuilder", "TERMINALS"] is both sorted() and ruff's isort-style (RUF022).
__all__ = ["SOURCES", "STAGES", "TERMINALS", "fragments", "pipes"]

Draw = st.DrawFn

_INTS = st.integers(-1000, 1000)
_NAMES = st.sampled_from(["alpha", "beta", "noise"])
_SIZES = st.integers(1, 8)
_COUNTS = st.integers(0, 10) | st.integers(0, 45)  # mostly small: keep some elements


@attrs.frozen
class StageBuilder:
    """One entry of the table that :func:`pipes` and :func:`fragments` draw stages from.

    ``build(draw)`` returns a fragment of ``cost`` stages that takes ints and (unless
    ``terminal``) gives ints.
    """

    name: str
    build: Callable[[Draw], Pipe[Any]]
    cost: int = 1
    #: only valid while the pipe has random access (``shuffle()`` with no buffer, ``sample``,
    #: ``split``)
    needs_random_access: bool = False
    #: random access lasts through it (as the library defines it: map, parallel_map,
    #: enumerate, shuffle, sample, split, collate, prefetch keep it; filter, flat_map, batch,
    #: unbatch, take, skip end it)
    keeps_random_access: bool = False
    #: gives something other than ints, so it can only end a pipe
    terminal: bool = False


# -- stage builders --------------------------------------------------------------------------
def _map(draw: Draw) -> Pipe[Any]:
    return dp.map(draw(st.sampled_from([fns.add_one, fns.double, fns.negate])))


def _map_rng(draw: Draw) -> Pipe[Any]:
    fn = draw(st.sampled_from([fns.add_noise, fns.maybe_negate]))
    return dp.map(fn, rng=True, name=draw(st.none() | _NAMES))


def _augment(draw: Draw) -> Pipe[Any]:
    return dp.augment(fns.add_noise, name=draw(st.none() | _NAMES))


def _parallel_map(draw: Draw) -> Pipe[Any]:
    workers = draw(st.integers(1, 3))
    if draw(st.booleans()):
        noisy = draw(st.sampled_from([fns.add_noise, fns.maybe_negate]))
        return dp.parallel_map(noisy, workers=workers, rng=True, name=draw(st.none() | _NAMES))
    plain = draw(st.sampled_from([fns.add_one, fns.double, fns.negate]))
    return dp.parallel_map(plain, workers=workers)


def _prefetch(draw: Draw) -> Pipe[Any]:
    return dp.prefetch(draw(st.integers(1, 4)))


def _filter(draw: Draw) -> Pipe[Any]:
    return dp.filter(draw(st.sampled_from([fns.is_even, fns.is_odd, fns.not_multiple_of_3])))


def _flat_map(draw: Draw) -> Pipe[Any]:
    return dp.flat_map(draw(st.sampled_from([fns.repeat_twice, fns.range_of])))


def _shuffle(draw: Draw) -> Pipe[Any]:
    return dp.shuffle(name=draw(st.none() | _NAMES))


def _shuffle_buffer(draw: Draw) -> Pipe[Any]:
    return dp.shuffle(buffer=draw(st.integers(1, 8)), name=draw(st.none() | _NAMES))


def _sample(draw: Draw) -> Pipe[Any]:
    name = draw(st.none() | _NAMES)
    if draw(st.booleans()):
        return dp.sample(name=name)  # every element once, in a random order
    return dp.sample(draw(_COUNTS), replace=True, name=name)  # any count, with repeats


def _split(draw: Draw) -> Pipe[Any]:
    sizes = draw(st.sampled_from([(0.5, 0.5), (0.7, 0.2, 0.1), (1.0,)]))
    part = draw(st.integers(0, len(sizes) - 1))
    return dp.split(sizes, part, seed=draw(st.integers(0, 3)), shuffle=draw(st.booleans()))


def _interleave(draw: Draw) -> Pipe[Any]:
    fn = draw(st.sampled_from([fns.records_of, fns.repeat_twice]))
    return dp.interleave(fn, cycle_length=draw(st.integers(1, 4)),
                         block_length=draw(st.integers(1, 3)))


def _take(draw: Draw) -> Pipe[Any]:
    return dp.take(draw(_COUNTS))


def _skip(draw: Draw) -> Pipe[Any]:
    return dp.skip(draw(_COUNTS))


def _enumerate(draw: Draw) -> Pipe[Any]:
    return dp.enumerate() | dp.map(draw(st.sampled_from([fns.drop_position, fns.add_position])))


def _batch(draw: Draw) -> Pipe[Any]:
    return dp.batch(draw(_SIZES), drop_last=draw(st.booleans()))


def _batch_unbatch(draw: Draw) -> Pipe[Any]:
    return _batch(draw) | dp.unbatch()


def _batch_sum(draw: Draw) -> Pipe[Any]:
    summed = dp.map(fns.sum_batch) if draw(st.booleans()) else dp.collate(fns.sum_batch)
    return _batch(draw) | summed


def _bucket_unbatch(draw: Draw) -> Pipe[Any]:
    bounds = sorted(set(draw(st.lists(st.integers(1, 1000), max_size=3))))
    sizes = draw(st.lists(_SIZES, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    return (dp.bucket_by_length(bounds, sizes, length=abs, drop_last=draw(st.booleans()))
            | dp.unbatch())


def _token_batch_unbatch(draw: Draw) -> Pipe[Any]:
    return dp.batch(max_tokens=draw(st.integers(1, 2000)), length=abs, oversize="alone") \
        | dp.unbatch()


def _pack(draw: Draw) -> Pipe[Any]:
    return dp.map(fns.arange_of) | dp.pack(draw(st.integers(1, 12)),
                                          drop_remainder=draw(st.booleans()))


def _batch_collate_pad(draw: Draw) -> Pipe[Any]:
    return (dp.map(fns.arange_of) | dp.batch(draw(_SIZES))
            | dp.collate(pad=draw(st.integers(-1, 1)), mask=draw(st.booleans()), to="numpy"))


def _batch_collate(draw: Draw) -> Pipe[Any]:
    return _batch(draw) | dp.collate(to=draw(st.sampled_from(["torch", "numpy"])))


def _enumerate_last(draw: Draw) -> Pipe[Any]:
    return dp.enumerate()


#: Stages that take ints and give ints, simplest first (Hypothesis shrinks towards the start).
STAGES: tuple[StageBuilder, ...] = (
    StageBuilder("map", _map, keeps_random_access=True),
    StageBuilder("filter", _filter),
    StageBuilder("take", _take),
    StageBuilder("skip", _skip),
    StageBuilder("flat_map", _flat_map),
    StageBuilder("map_rng", _map_rng, keeps_random_access=True),
    StageBuilder("augment", _augment, keeps_random_access=True),
    StageBuilder("shuffle", _shuffle, needs_random_access=True, keeps_random_access=True),
    StageBuilder("shuffle_buffer", _shuffle_buffer, keeps_random_access=True),
    StageBuilder("sample", _sample, needs_random_access=True, keeps_random_access=True),
    StageBuilder("split", _split, needs_random_access=True, keeps_random_access=True),
    StageBuilder("interleave", _interleave),
    StageBuilder("enumerate", _enumerate, cost=2, keeps_random_access=True),
    StageBuilder("batch_unbatch", _batch_unbatch, cost=2),
    StageBuilder("batch_sum", _batch_sum, cost=2),
    StageBuilder("bucket_unbatch", _bucket_unbatch, cost=2),
    StageBuilder("token_batch_unbatch", _token_batch_unbatch, cost=2),
    # Threads, in-process: parallel_map(backend="process") would start processes per epoch.
    StageBuilder("parallel_map", _parallel_map, keeps_random_access=True),
    StageBuilder("prefetch", _prefetch, keeps_random_access=True),
)

#: Stages that end a pipe: their elements are not ints.
TERMINALS: tuple[StageBuilder, ...] = (
    StageBuilder("batch", _batch, terminal=True),
    StageBuilder("enumerate_last", _enumerate_last, keeps_random_access=True, terminal=True),
    StageBuilder("batch_collate", _batch_collate, cost=2, terminal=True),
    StageBuilder("pack", _pack, cost=2, terminal=True),
    StageBuilder("batch_collate_pad", _batch_collate_pad, cost=3, terminal=True),
)


# -- sources ---------------------------------------------------------------------------------
def _ints(max_size: int) -> st.SearchStrategy[list[int]]:
    return st.lists(_INTS, max_size=max_size)


def _from_sequence(draw: Draw, max_size: int) -> Pipe[Any]:
    if draw(st.booleans()):
        return dp.from_sequence(draw(_ints(max_size)))
    start = draw(st.integers(-50, 50))
    return dp.from_sequence(range(start, start + draw(st.integers(0, max_size))))


def _from_arrays(draw: Draw, max_size: int) -> Pipe[Any]:
    n = draw(st.integers(0, max_size))
    names = draw(st.sampled_from([("x",), ("x", "y")]))
    columns: dict[str, Any] = {}
    for name in names:
        values = draw(st.lists(_INTS, min_size=n, max_size=n))
        kind = draw(st.sampled_from(["int64", "int32", "torch"]))
        if kind == "torch":
            columns[name] = torch.tensor(values, dtype=torch.int64)
        else:
            columns[name] = np.array(values, dtype=kind)
    return dp.from_arrays(**columns) | dp.map(fns.row_to_int)


def _from_iterable(draw: Draw, max_size: int) -> Pipe[Any]:
    data = draw(_ints(max_size))
    return dp.from_iterable(data if draw(st.booleans()) else fns.Replay(data))


def _several(draw: Draw, max_size: int) -> Pipe[Any]:
    """``mix``, ``concat`` or ``zip`` (then ``map(sum)``, back to ints) of 1 to 3 inputs."""
    inputs = [
        draw(st.sampled_from([_from_sequence, _from_iterable]))(draw, max_size // 2)
        for _ in range(draw(st.integers(1, 3)))
    ]
    kind = draw(st.sampled_from(["mix", "concat", "zip"]))
    if kind == "concat":
        return dp.concat(*inputs)
    if kind == "zip":
        return dp.zip(*inputs) | dp.map(fns.sum_batch)
    weights = draw(st.lists(st.integers(1, 4), min_size=len(inputs), max_size=len(inputs)))
    return dp.mix(*inputs, weights=weights, stop=draw(st.sampled_from(["first", "all"])))


def _weighted(draw: Draw, max_size: int) -> Pipe[Any]:
    """``from_sequence`` then ``sample`` weighted by a function of the element or by
    source index (``by_source_index``, ``class_weights``)."""
    data = draw(st.lists(_INTS, min_size=1, max_size=max(1, max_size)))
    n = draw(st.integers(0, 2 * len(data)))
    if draw(st.booleans()):
        return dp.from_sequence(data) | dp.sample(n, weights=fns.weight_of, replace=True)
    weights = dp.by_source_index(dp.class_weights([x % 3 for x in data]))
    return dp.from_sequence(data) | dp.sample(n, weights=weights, replace=True)


_CACHE_ROOT: list[str] = []


def _cache_root() -> str:
    """One directory for the caches drawn in this process, removed when it ends."""
    if not _CACHE_ROOT:
        import atexit
        import shutil
        import tempfile

        _CACHE_ROOT.append(tempfile.mkdtemp(prefix="datapipes-strategies-"))
        atexit.register(shutil.rmtree, _CACHE_ROOT[0], True)
    return _CACHE_ROOT[0]


def _cached(draw: Draw, max_size: int) -> Pipe[Any]:
    """``from_sequence`` then a map, cached (in a directory of this process's)."""
    import os

    data = draw(_ints(max_size))
    where = os.path.join(_cache_root(), str(draw(st.integers(0, 3))))
    return dp.from_sequence(data) | dp.map(fns.add_one) | dp.cache(where)


#: name -> (builder, whether the source has random access)
SOURCES: dict[str, tuple[Callable[[Draw, int], Pipe[Any]], bool]] = {
    "sequence": (_from_sequence, True),
    "arrays": (_from_arrays, True),
    "iterable": (_from_iterable, False),
    "several": (_several, False),
    "weighted": (_weighted, True),
    "cached": (_cached, True),
}


# -- the strategies ----------------------------------------------------------------------------
def _table(
    stages: Iterable[str] | None, extra: Iterable[StageBuilder] = ()
) -> tuple[StageBuilder, ...]:
    extra = tuple(extra)
    if not all(isinstance(b, StageBuilder) for b in extra):
        raise InvalidArgument(f"extra must be StageBuilder values, got {extra!r}")
    table = STAGES + TERMINALS + extra
    if stages is None:
        return table
    wanted = set(stages)
    unknown = wanted - {b.name for b in table}
    if unknown:
        raise InvalidArgument(
            f"unknown stage names {sorted(unknown)}; known: {sorted(b.name for b in table)}"
        )
    return tuple(b for b in table if b.name in wanted)


def _check_max_stages(max_stages: object) -> None:
    if isinstance(max_stages, bool) or not isinstance(max_stages, int) or max_stages < 0:
        raise InvalidArgument(f"max_stages must be an int >= 0, got {max_stages!r}")


def _draw_stages(
    draw: Draw,
    table: tuple[StageBuilder, ...],
    max_stages: int,
    random_access: bool,
    *,
    terminal: bool,
    keep_random_access: bool,
) -> Pipe[Any]:
    """Stages after an int-valued pipe, at most ``max_stages`` of them."""
    budget = draw(st.integers(0, max_stages))
    out: Pipe[Any] = Pipe()
    while budget > 0:
        choices = [
            b
            for b in table
            if b.cost <= budget
            and (terminal or not b.terminal)
            and (random_access or not b.needs_random_access)
            and (b.keeps_random_access or not keep_random_access)
        ]
        if not choices:
            break
        builder = draw(st.sampled_from(choices))
        out = out | builder.build(draw)
        budget -= builder.cost
        random_access = random_access and builder.keeps_random_access
        if builder.terminal:
            break
    return out


@st.composite
def _pipes(
    draw: Draw,
    max_stages: int,
    sources: tuple[str, ...],
    max_size: int,
    random_access: bool,
    terminal: bool,
    table: tuple[StageBuilder, ...],
) -> Pipe[Any]:
    build, has_random_access = SOURCES[draw(st.sampled_from(sources))]
    source = build(draw, max_size)
    stages = _draw_stages(
        draw, table, max_stages, has_random_access,
        terminal=terminal, keep_random_access=random_access,
    )
    return source | stages


def pipes(
    *,
    max_stages: int = 6,
    sources: Iterable[str] = ("sequence", "arrays", "iterable", "several", "weighted",
                              "cached"),
    max_size: int = 40,
    random_access: bool = False,
    terminal: bool = True,
    stages: Iterable[str] | None = None,
    extra: Iterable[StageBuilder] = (),
) -> st.SearchStrategy[Pipe[Any]]:
    """Random runnable pipes over 0 to ``max_size`` small ints.

    A source (``"sequence"``: ``from_sequence`` of a list or range; ``"arrays"``:
    ``from_arrays`` of NumPy int columns or torch tensors, then ``map(row_to_int)``;
    ``"iterable"``: ``from_iterable`` of a list or of an unsized :class:`~.functions.Replay`;
    ``"several"``: ``mix``, ``concat`` or ``zip`` of 1 to 3 of those inputs; ``"weighted"``:
    ``from_sequence`` then ``sample`` weighted by a function or by source index;
    ``"cached"``: ``from_sequence`` then a map, then ``cache``),
    then up to ``max_stages`` stages from :data:`STAGES` (``shuffle()`` only while random access
    lasts), perhaps ending with one of :data:`TERMINALS`.

    Args:
        random_access: only draw pipes that keep random access to their end, so that
            ``pipe | dp.shuffle()`` is valid (random-access sources and stages that keep it).
        terminal: allow a last stage whose elements are not ints; with ``False`` every drawn
            pipe yields Python ints.
        stages: restrict the stages to these names from the tables (default: all).
        extra: more stages to draw, yours (:class:`StageBuilder`): drawn among the
            built-in ones, so your stage is tested in every position they are.

    >>> from hypothesis import find
    >>> pipe = find(pipes(terminal=False), lambda p: "shuffle()" in repr(p))
    >>> pipe.is_runnable, all(type(x) is int for x in pipe)
    (True, True)
    """
    _check_max_stages(max_stages)
    sources = tuple(sources)
    if not sources or any(s not in SOURCES for s in sources):
        raise InvalidArgument(f"sources must be names from {sorted(SOURCES)}, got {sources!r}")
    if random_access:
        sources = tuple(s for s in sources if SOURCES[s][1])
        if not sources:
            raise InvalidArgument("random_access=True needs a random-access source")
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise InvalidArgument(f"max_size must be an int >= 0, got {max_size!r}")
    return _pipes(max_stages, sources, max_size, random_access, terminal, _table(stages, extra))


@st.composite
def _fragments(
    draw: Draw,
    max_stages: int,
    random_access: bool,
    terminal: bool,
    table: tuple[StageBuilder, ...],
) -> Pipe[Any]:
    return _draw_stages(
        draw, table, max_stages, random_access,
        terminal=terminal, keep_random_access=False,
    )


def fragments(
    *,
    max_stages: int = 4,
    random_access: bool = False,
    terminal: bool = True,
    stages: Iterable[str] | None = None,
    extra: Iterable[StageBuilder] = (),
) -> st.SearchStrategy[Pipe[Any]]:
    """Random fragments (no source, possibly empty) that can follow any pipe yielding ints.

    With ``random_access=True`` the fragment may contain ``shuffle()`` (while random access
    lasts inside it), so it may only follow a pipe that keeps random access; by default it
    can follow any int-valued pipe, stream or not. ``terminal``, ``stages`` and ``extra`` are
    as for :func:`pipes`.

    >>> import datapipes as dp
    >>> from hypothesis import find
    >>> frag = find(fragments(terminal=False), lambda f: len(f.stages) >= 2)
    >>> frag.is_runnable, all(type(x) is int for x in dp.from_iterable([1, 2, 3]) | frag)
    (False, True)
    """
    _check_max_stages(max_stages)
    return _fragments(max_stages, random_access, terminal, _table(stages, extra))
