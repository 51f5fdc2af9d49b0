"""``map``, ``flat_map``: one function applied to each element."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import attrs
import cloudpickle

from .._graph import (
    EpochContext,
    Item,
    Pipe,
    Stage,
    check_callable,
    check_int,
    fail,
    positional,
)
from ..executors.protocol import backend as find_backend
from ..executors.protocol import backend_names
from ._kernel import FLAT, MAP, RNG_MAP, ElementOp
from ._kinds import ElementStage


def _check_name(stage: str, name: object) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise fail(stage, f"name must be a non-empty str or None, got {name!r}", TypeError)


@attrs.frozen(kw_only=True, repr=False)
class Map(ElementStage):
    call_name: ClassVar[str] = "map"
    keeps_random_access: ClassVar[bool] = True
    one_to_one: ClassVar[bool] = True
    fn: Callable[..., Any] = positional()
    rng: bool = False
    name: str | None = None

    def length(self, n: int) -> int:
        return n

    def element_op(self, stage_key: int) -> ElementOp:
        return (RNG_MAP if self.rng else MAP, self.fn, self, stage_key)

    def draws_randomness(self) -> bool:
        return self.rng


class MapStage(ElementStage):
    """The base class of a stage of your own that turns each element into one element.

    Subclass it as a frozen attrs class holding the stage's parameters, write ``apply(x)``
    (with ``uses_rng = True``: ``apply(x, rng)``, a ``numpy.random.Generator`` keyed by
    ``(seed, epoch, stage, element)``), and give the public function that builds it as
    ``call_name``. It is then planned, fused, run in workers, checkpointed and
    property-tested like ``map`` (``docs/extending.md``).

    >>> import attrs, datapipes as dp
    >>> @attrs.frozen(kw_only=True, repr=False)
    ... class Scale(dp.MapStage):
    ...     call_name = "scale"
    ...     factor: float
    ...     def apply(self, x):
    ...         return x * self.factor
    >>> pipe = dp.from_sequence([1, 2, 3]) | Scale(factor=10)
    >>> list(pipe), pipe
    ([10, 20, 30], from_sequence([1, 2, 3]) | scale(factor=10))
    """

    keeps_random_access: ClassVar[bool] = True
    one_to_one: ClassVar[bool] = True
    #: ``apply`` takes the element's random generator too
    uses_rng: ClassVar[bool] = False

    def length(self, n: int) -> int:
        return n

    def element_op(self, stage_key: int) -> ElementOp:
        return (RNG_MAP if self.uses_rng else MAP, self.apply, self, stage_key)

    def draws_randomness(self) -> bool:
        return self.uses_rng

    def apply(self, x: Any, *rng: Any) -> Any:
        """The element this stage makes of ``x`` (``rng`` only with ``uses_rng = True``)."""
        raise NotImplementedError(f"{type(self).__name__} must define apply(self, x)")


def map(fn: Callable[..., Any], *, rng: bool = False, name: str | None = None) -> Pipe[Any]:
    """Apply ``fn`` to every element.

    With ``rng=True``, ``fn(x, rng)`` receives a ``numpy.random.Generator`` keyed by
    ``(seed, epoch, stage, element)``: the same draws whoever computes the element.
    ``name`` keys the stage's randomness by name instead of by position, so inserting
    stages before it keeps its draws.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(4)) | dp.map(lambda x: x * x))
    [0, 1, 4, 9]
    >>> noisy = dp.from_sequence([0.0] * 3) | dp.map(lambda x, rng: x + rng.random(), rng=True)
    >>> list(noisy) == list(noisy)
    True
    """
    check_callable("map", "fn", fn)
    if not isinstance(rng, bool):
        raise fail("map", f"rng must be a bool, got {rng!r}", TypeError)
    _check_name("map", name)
    return Pipe(Map(fn=fn, rng=rng, name=name))


@attrs.frozen(kw_only=True, repr=False)
class FlatMap(ElementStage):
    call_name: ClassVar[str] = "flat_map"
    fn: Callable[[Any], Iterable[Any]] = positional()

    def element_op(self, stage_key: int) -> ElementOp:
        return (FLAT, self.fn, self, stage_key)


def flat_map(fn: Callable[[Any], Iterable[Any]]) -> Pipe[Any]:
    """Replace every element by the elements of the iterable ``fn`` returns for it.

    >>> import datapipes as dp
    >>> list(dp.from_sequence([1, 2, 3]) | dp.flat_map(lambda n: [n] * n))
    [1, 2, 2, 3, 3, 3]
    """
    check_callable("flat_map", "fn", fn)
    return Pipe(FlatMap(fn=fn))


@attrs.frozen(kw_only=True, repr=False)
class ParallelMap(Map):
    """``map`` whose calls run on a pool when the pipe runs in this process."""

    call_name: ClassVar[str] = "parallel_map"
    workers: int
    backend: str = "thread"

    def stream(self, items: Iterator[Item], ctx: EpochContext, stage_key: int) -> Iterator[Item]:
        return pooled_map(self, items, ctx, stage_key)

    def plan_into(self, planner: Any, stage_key: int) -> bool:
        # in the segment it is a map: the workers already run in parallel; a pipe run in
        # this process runs its segment on a pool of this size
        planner.use_pool(self.backend, self.workers)
        return super().plan_into(planner, stage_key)

    def resume(
        self, items: Iterator[Any], ctx: EpochContext, stage_key: int, local: int, before: Any
    ) -> Iterator[Any]:
        tokens: collections.deque[tuple[Any, Any]] = collections.deque()

        def pairs() -> Iterator[Item]:
            for key, x, token in items:
                tokens.append((key, token))
                yield key, x

        for key, y in pooled_map(self, pairs(), ctx, stage_key):
            while True:  # elements skipped under on_error="skip" leave their tokens behind
                k, token = tokens.popleft()
                if k == key:
                    break
            yield key, y, [token, 0]


def parallel_map(
    fn: Callable[..., Any],
    *,
    workers: int,
    backend: str = "thread",
    rng: bool = False,
    name: str | None = None,
) -> Pipe[Any]:
    """``map(fn)`` computed by a pool of ``workers`` threads (or processes), in order.

    For I/O-bound work (reading files, decoding with libraries that release the GIL) in a
    pipe iterated in this process. The output is exactly ``map(fn, rng=rng)``'s. In a
    compiled :class:`Loader` with workers, the stage runs inside the workers like a map:
    they are already parallel.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(5)) | dp.parallel_map(abs, workers=2))
    [0, 1, 2, 3, 4]
    """
    check_callable("parallel_map", "fn", fn)
    workers = check_int("parallel_map", "workers", workers, minimum=1)
    if backend not in backend_names():
        shown = " or ".join(repr(name) for name in backend_names())
        raise fail("parallel_map", f"backend must be {shown}, got {backend!r}")
    if not isinstance(rng, bool):
        raise fail("parallel_map", f"rng must be a bool, got {rng!r}", TypeError)
    _check_name("parallel_map", name)
    return Pipe(ParallelMap(fn=fn, rng=rng, name=name, workers=workers, backend=backend))


def _call(fn: Callable[..., Any], x: Any, rng: Any) -> Any:
    return fn(x) if rng is None else fn(x, rng)


def pooled_map(
    stage: ParallelMap, items: Iterator[Item], ctx: EpochContext, stage_key: int
) -> Iterator[Item]:
    """Run ``stage.fn`` on a pool, at most ``2 × workers`` calls ahead, yielding in order."""
    executor = find_backend(stage.backend)
    pool = executor.call_pool(stage.workers)
    fn: Any = _Shipped(cloudpickle.dumps(stage.fn)) if executor.ships_functions else stage.fn
    ahead: collections.deque[tuple[Any, Any]] = collections.deque()
    try:
        for key, x in items:
            rng = ctx.element_rng(stage_key, key) if stage.rng else None
            ahead.append((key, pool.submit(_call, fn, x, rng)))
            if len(ahead) >= 2 * stage.workers:
                yield from _result(stage, ctx, *ahead.popleft())
        while ahead:
            yield from _result(stage, ctx, *ahead.popleft())
    finally:
        for _, future in ahead:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _result(stage: Stage, ctx: EpochContext, key: Any, future: Any) -> Iterator[Item]:
    try:
        value = future.result()
    except Exception as exc:
        ctx.failed(exc, stage, key)
        return  # skipped
    yield key, value


class _Shipped:
    """A function sent to worker processes with cloudpickle (lambdas and closures work)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._fn: Any = None

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            self._fn = cloudpickle.loads(self.payload)
        return self._fn(*args)

    def __getstate__(self) -> bytes:
        return self.payload

    def __setstate__(self, payload: bytes) -> None:
        self.payload = payload
        self._fn = None
