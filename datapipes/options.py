"""What ``Pipe.compile`` accepts: one validated value, checked in one place."""

from __future__ import annotations

import multiprocessing as mp
from numbers import Integral, Real
from typing import Any

import attrs

from . import _seeds
from .executors.protocol import backend_names

_START_METHODS = (None, "fork", "spawn", "forkserver")
_EVEN = ("drop", "pad", None)


def _count(name: str, value: object, minimum: int, *, optional: bool = False) -> int | None:
    """``value`` as a plain int >= ``minimum`` (any integer type, never a bool)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        kind = "int" if not optional else "int or None"
        raise ValueError(f"compile: {name} must be an {kind} >= {minimum}, got {value!r}")
    return int(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"compile: {name} must be a bool, got {value!r}")
    return value


def _choice(name: str, value: Any, choices: tuple[Any, ...], said: str) -> Any:
    if value not in choices:
        raise ValueError(f"compile: {name} must be {said}, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class LoaderOptions:
    """The options of a :class:`~datapipes.Loader`, each checked (see ``docs/loader.md``).

    >>> LoaderOptions.check(workers=2).workers
    2
    >>> LoaderOptions.check(rank=0)
    Traceback (most recent call last):
    ...
    ValueError: compile: rank=0 needs world_size= too: compile(rank=0, world_size=N)
    """

    workers: int = 0
    backend: str = "process"
    prefetch: int = 2
    seed: int | None = 0
    ordered: bool = True
    start_method: str | None = None
    pin_memory: Any = False
    device: Any = None
    timeout: float | None = None
    on_error: str = "raise"
    max_skipped: int | None = None
    rank: int | None = None
    world_size: int | None = None
    even: str | None = "drop"
    stats: bool = False
    progress: bool = False
    #: False: for evaluation, ``augment`` passes elements through (docs/leakage.md)
    train: bool = True

    @property
    def sharded(self) -> bool:
        return self.rank is not None or self.world_size is not None

    @classmethod
    def check(cls, **given: Any) -> LoaderOptions:
        """Validate ``compile``'s keyword arguments: errors name the option and the value."""
        unknown = set(given) - {f.name for f in attrs.fields(cls)}
        if unknown:
            raise TypeError(f"compile: unexpected option(s) {sorted(unknown)}")
        o = {f.name: given.get(f.name, f.default) for f in attrs.fields(cls)}
        o["workers"] = _count("workers", o["workers"], 0)
        _choice("backend", o["backend"], tuple(backend_names()),
                " or ".join(repr(name) for name in backend_names()))
        o["prefetch"] = _count("prefetch", o["prefetch"], 1)
        o["seed"] = _seeds.check_seed(o["seed"], "compile")
        for name in ("ordered", "stats", "progress", "train"):
            _flag(name, o[name])
        if o["progress"]:
            _require_tqdm()
        _choice("start_method", o["start_method"], _START_METHODS,
                "None, 'fork', 'spawn' or 'forkserver'")
        if o["start_method"] is not None and o["start_method"] not in mp.get_all_start_methods():
            raise ValueError(f"compile: start_method {o['start_method']!r} is not available here")
        o["timeout"] = _seconds(o["timeout"])
        _choice("on_error", o["on_error"], ("raise", "skip"), "'raise' or 'skip'")
        o["max_skipped"] = _count("max_skipped", o["max_skipped"], 0, optional=True)
        if o["max_skipped"] is not None and o["on_error"] != "skip":
            raise ValueError("compile: max_skipped only applies with on_error='skip'")
        _check_shard(o, "even" in given)
        return cls(**o)


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not float(value) > 0:
        raise ValueError(
            f"compile: timeout must be a positive number of seconds or None, got {value!r}"
        )
    return float(value)


def _check_shard(o: dict[str, Any], even_given: bool) -> None:
    """Refuse what ``shard_by_rank`` cannot mean; it checks the values themselves."""
    _choice("even", o["even"], _EVEN, "'drop', 'pad' or None")
    for name in ("rank", "world_size"):
        if isinstance(o[name], Integral) and not isinstance(o[name], bool):
            o[name] = int(o[name])
    rank, world_size = o["rank"], o["world_size"]
    if rank is not None and world_size is None:
        raise ValueError(
            f"compile: rank={rank!r} needs world_size= too: "
            f"compile(rank={rank!r}, world_size=N)"
        )
    if even_given and world_size is None:
        raise ValueError("compile: even= applies to the shares of compile(rank=, world_size=); "
                         "give those too, or put dp.shard_by_rank(even=...) in the pipe")


def _require_tqdm() -> None:
    try:
        import tqdm  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "compile: progress=True draws its bar with tqdm, which is not installed: "
            "pip install tqdm"
        ) from exc
