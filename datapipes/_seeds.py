"""Where every random draw comes from: ``(seed, epoch, stage key, element key)``.

Nothing here depends on a worker id, the time or a global RNG, so any executor that
knows an element's key reproduces its draws bit for bit.
"""

from __future__ import annotations

import numbers
import os
import zlib
from collections.abc import Iterable

import numpy as np

Key = int | tuple[int, ...]

# Domain tags keep the per-stage stream (a shuffle's permutation) and the per-element
# streams (``map(rng=True)``) of one stage apart.
_STAGE = 0
_ELEMENT = 1
_MAX_WORD = 2**32


def check_seed(seed: object, where: str) -> int | None:
    """Validate a user seed: a non-negative int, or None for a fresh one."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{where}: seed must be a non-negative int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative int or None, got {seed!r}")
    return int(seed)


def fresh_seed() -> int:
    """A new 63-bit seed from the operating system."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def resolve_seed(seed: int | None) -> int:
    return fresh_seed() if seed is None else seed


def check_epoch(epoch: object, where: str) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise TypeError(f"{where}: epoch must be a non-negative int, got {epoch!r}")
    if not 0 <= int(epoch) < _MAX_WORD:
        raise ValueError(f"{where}: epoch must be in [0, 2**32), got {epoch!r}")
    return int(epoch)


def name_key(name: str) -> int:
    """The stage key of a stage the user named: stable across runs and machines.

    >>> name_key("augment") == name_key("augment")
    True
    """
    # Offset past any position so a named stage never collides with a positional one.
    return _MAX_WORD // 2 + zlib.crc32(name.encode()) % (_MAX_WORD // 2)


def flatten_key(key: Key) -> tuple[int, ...]:
    return (key,) if isinstance(key, int) else key


def _words(values: Iterable[int]) -> list[int]:
    out = []
    for v in values:
        if not 0 <= v < _MAX_WORD:
            raise ValueError(f"key component {v} is outside [0, 2**32)")
        out.append(int(v))
    return out


def stage_rng(seed: int, epoch: int, stage_key: int) -> np.random.Generator:
    """The generator a whole stage uses once per epoch (e.g. a shuffle's permutation)."""
    spawn = _words((epoch, stage_key, _STAGE))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn)))


def element_rng(seed: int, epoch: int, stage_key: int, key: Key) -> np.random.Generator:
    """The generator ``map(fn, rng=True)`` hands to ``fn`` for one element.

    >>> a = element_rng(0, 0, 3, 17).integers(1 << 30)
    >>> b = element_rng(0, 0, 3, 17).integers(1 << 30)
    >>> bool(a == b), bool(a == element_rng(0, 1, 3, 17).integers(1 << 30))
    (True, False)
    """
    spawn = _words((epoch, stage_key, _ELEMENT, *flatten_key(key)))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=spawn)))


def sub_key(key: Key, j: int) -> tuple[int, ...]:
    """The key of the ``j``-th output of an element that fans out (``flat_map``, ``unbatch``).

    >>> sub_key(7, 2), sub_key((7, 2), 0)
    ((7, 2), (7, 2, 0))
    """
    return (key, j) if isinstance(key, int) else (*key, j)
