"""Assertions about compiled loaders: they yield exactly what the pipe does in this process
(``assert_matches_reference``), also after resuming from a checkpoint (``assert_resumable``);
and about what pipes hold: ranks' shares partition the data (``assert_partitioned``), two
parts share no element (``assert_disjoint``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .._graph import Pipe
from .assertions import _canonical, _show, assert_equal_outputs, reference

__all__ = [
    "assert_disjoint",
    "assert_matches_reference",
    "assert_partitioned",
    "assert_resumable",
]


def assert_matches_reference(pipe: Pipe[Any], *, epochs: int = 2, **compile_kwargs: Any) -> None:
    """Compile ``pipe`` with ``compile_kwargs``, run ``epochs`` epochs, and assert that each
    equals the stage-by-stage :func:`~datapipes.testing.reference`, element by element
    (arrays and tensors by value, dtype and shape), and so does ``pipe.iter()`` (the planned
    path in this process). With ``ordered=False`` the elements are compared as a multiset.
    The loader is closed whatever happens.

    >>> import datapipes as dp
    >>> from datapipes.testing.functions import add_noise
    >>> pipe = dp.from_sequence(range(20)) | dp.shuffle() | dp.map(add_noise, rng=True)
    >>> assert_matches_reference(pipe | dp.batch(3), workers=2, backend="thread")
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"assert_matches_reference: epochs must be an int >= 1, got {epochs!r}")
    ordered = compile_kwargs.get("ordered", True)
    loader = pipe.compile(**compile_kwargs)
    train = loader.options.train
    try:
        for epoch in range(epochs):
            got = list(loader)
            expected = reference(loader.pipe, epoch, loader.seed, on_error=loader.on_error,
                                 train=train)
            if loader.on_error == "raise":  # the planned path in this process, too
                planned = list(loader.pipe.iter(epoch=epoch, seed=loader.seed, train=train))
                assert_equal_outputs(expected, planned, f"epoch {epoch} with pipe.iter()")
            what = f"epoch {epoch} with {loader!r}"
            if ordered:
                assert_equal_outputs(expected, got, what)
                continue
            missing = Counter(map(_canonical, expected)) - Counter(map(_canonical, got))
            extra = Counter(map(_canonical, got)) - Counter(map(_canonical, expected))
            if missing or extra:
                raise AssertionError(
                    f"{what}: not the same multiset of elements; missing "
                    f"{list(missing.elements())[:5]}, unexpected {list(extra.elements())[:5]}"
                )
    finally:
        loader.close()


def assert_resumable(
    pipe: Pipe[Any],
    *,
    at: int | Sequence[int] = (0,),
    epochs: int = 2,
    resume_with: dict[str, Any] | None = None,
    **compile_kwargs: Any,
) -> None:
    """Checkpoint an uninterrupted run after the outputs numbered ``at`` (counted over all
    ``epochs``; negative counts from the end), resume each checkpoint in a new loader
    (compiled with ``resume_with`` where given, e.g. another worker count) and assert it
    yields exactly the rest of the run. Each state also goes through ``json`` first, and
    ``pipe.iter(state=...)`` must yield the rest of its epoch.

    >>> import datapipes as dp
    >>> pipe = dp.from_sequence(range(10)) | dp.shuffle() | dp.batch(3)
    >>> assert_resumable(pipe, at=[0, 2, 5], workers=2, backend="thread",
    ...                  resume_with={"workers": 0})
    """
    positions = [at] if isinstance(at, int) else list(at)
    outputs: list[Any] = []
    epoch_of: list[int] = []
    states: list[dict[str, Any]] = []
    loader = pipe.compile(**compile_kwargs)
    compiled = loader.pipe  # with the shard, when rank= and world_size= are given
    plain = compile_kwargs.get("on_error", "raise") == "raise"
    try:
        for epoch in range(epochs):
            for value in loader:
                outputs.append(value)
                epoch_of.append(epoch)
                states.append(json.loads(json.dumps(loader.state_dict())))
    finally:
        loader.close()
    n = len(outputs)
    for k in positions:
        if not -n <= k < n:
            if n == 0:
                continue
            raise ValueError(f"assert_resumable: position {k} is outside the {n} outputs")
        k %= n
        state = states[k]
        expected = outputs[k + 1 :]
        got: list[Any] = []
        resumed = pipe.compile(**{**compile_kwargs, **(resume_with or {})})
        try:
            resumed.load_state_dict(state)
            seed = resumed.seed
            while resumed.epoch < epochs:
                got.extend(resumed)
        finally:
            resumed.close()
        # A state taken after the last output of an epoch whose length is not known in
        # advance resumes with the next epoch in the same pass: past the run, that pass
        # goes on with epoch ``epochs``.
        beyond: list[Any] = []
        if len(got) > len(expected):
            after = pipe.compile(**{**compile_kwargs, "workers": 0, "seed": seed})
            try:
                after.set_epoch(epochs)
                beyond = list(after)[: len(got) - len(expected)]
            finally:
                after.close()
        assert_equal_outputs(expected + beyond, got,
                             f"resumed after output {k} (epoch {epoch_of[k]})")
        # a state taken after the last output of an epoch points at the next epoch
        rest_of_epoch = [x for x, e in zip(expected, epoch_of[k + 1 :], strict=True)
                         if e == state["epoch"]]
        if state["epoch"] < epochs and plain:  # pipe.iter has no on_error policy
            rest = compiled.iter(state=state, train=compile_kwargs.get("train", True))
            assert_equal_outputs(rest_of_epoch, list(rest),
                                 f"pipe.iter(state=...) after output {k}")


def assert_partitioned(pipe: Pipe[Any], world_size: int, *, epochs: int = 2,
                       **compile_kwargs: Any) -> None:
    """For a pipe without sharding: the shares of ranks ``0 .. world_size - 1`` (compiled
    with ``rank=, world_size=``) are disjoint and together are the unsharded epoch, but for
    at most ``world_size - 1`` elements dropped to even them out; every rank gets as many.
    Elements are compared as a multiset, so give it a pipe of elements (before ``batch``).

    >>> import datapipes as dp
    >>> from datapipes.testing.functions import add_noise
    >>> pipe = dp.from_sequence(range(10)) | dp.shuffle() | dp.map(add_noise, rng=True)
    >>> assert_partitioned(pipe, 3)
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"assert_partitioned: world_size must be an int >= 1, got {world_size!r}")
    for epoch in range(epochs):
        shares = []
        for rank in range(world_size):
            loader = pipe.compile(rank=rank, world_size=world_size, **compile_kwargs)
            try:
                loader.set_epoch(epoch)
                shares.append(list(loader))
                seed = loader.seed
            finally:
                loader.close()
        unsharded = pipe.iter(epoch=epoch, seed=seed, train=compile_kwargs.get("train", True))
        whole = Counter(map(_canonical, unsharded))
        union: Counter[Any] = Counter()
        for share in shares:
            union += Counter(map(_canonical, share))
        extra = union - whole
        if extra:
            raise AssertionError(f"epoch {epoch}: the shares hold elements the unsharded "
                                 f"epoch does not (or more often): {list(extra)[:5]}")
        dropped = sum((whole - union).values())
        if dropped >= world_size:
            raise AssertionError(f"epoch {epoch}: {dropped} elements are in no share; at most "
                                 f"{world_size - 1} may be dropped")
        sizes = [len(share) for share in shares]
        if len(set(sizes)) > 1:
            raise AssertionError(f"epoch {epoch}: the ranks got different counts: {sizes}")


def assert_disjoint(
    a: Pipe[Any],
    b: Pipe[Any],
    *,
    key: Callable[[Any], Any] | None = None,
    epoch: int = 0,
    seed: int = 0,
) -> None:
    """Assert that the runnable pipes ``a`` and ``b`` share no element in epoch ``epoch``:
    compared by ``key(x)`` when given, else by value and type (arrays and tensors by dtype,
    shape and contents, as :func:`assert_equal_elements` does). Both run stage by stage
    as for evaluation (``train=False``), so that an ``augment`` cannot hide a shared example.
    The message names a shared element and where it occurs in each pipe.

    >>> import datapipes as dp
    >>> data = dp.from_sequence(range(10))
    >>> assert_disjoint(data | dp.split([0.8, 0.2], 0), data | dp.split([0.8, 0.2], 1))
    >>> assert_disjoint(data | dp.take(6), data | dp.skip(4))
    Traceback (most recent call last):
        ...
    AssertionError: the pipes share 2 elements (epoch 0, seed 0); the first in b: 4, at position 4
    of a (...) and position 0 of b (...)
    """
    if key is not None and not callable(key):
        raise TypeError(f"assert_disjoint: key must be callable or None, got {key!r}")
    for name, pipe in (("a", a), ("b", b)):
        if not isinstance(pipe, Pipe) or not pipe.is_runnable:
            raise TypeError(f"assert_disjoint: {name} must be a runnable pipe, got {pipe!r}")

    def ident(x: Any) -> Any:
        return _canonical(x if key is None else key(x))

    in_a: dict[Any, tuple[int, Any]] = {}  # identity -> (first position in a, element)
    for i, x in enumerate(reference(a, epoch, seed, train=False)):
        in_a.setdefault(ident(x), (i, x))
    shared: list[tuple[int, Any, int, Any]] = []  # (position in a, element, in b, element)
    for j, y in enumerate(reference(b, epoch, seed, train=False)):
        found = in_a.pop(ident(y), None)  # each shared element counted once
        if found is not None:
            shared.append((*found, j, y))
    if shared:
        raise AssertionError(_disjoint_message(a, b, key, shared, epoch, seed))


def _disjoint_message(a: Pipe[Any], b: Pipe[Any], key: Callable[[Any], Any] | None,
                      shared: list[tuple[int, Any, int, Any]], epoch: int, seed: int) -> str:
    i, x, j, y = shared[0]
    count = "an element" if len(shared) == 1 else f"{len(shared)} elements"
    if key is None:
        return (f"the pipes share {count} (epoch {epoch}, seed {seed}); the first in b: "
                f"{_show(y)}, at position {i} of a ({a!r}) and position {j} of b ({b!r})")
    return (f"the pipes share {count} by key (epoch {epoch}, seed {seed}); the first in b: "
            f"key {_show(key(y))}, at position {i} of a ({a!r}): {_show(x)}, and position "
            f"{j} of b ({b!r}): {_show(y)}")
