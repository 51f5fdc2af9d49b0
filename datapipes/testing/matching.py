"""``assert_matches_reference``: a compiled Loader yields exactly what the pipe does in-process."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .._graph import Pipe
from .assertions import _canonical, assert_equal_outputs

__all__ = ["assert_matches_reference"]


def assert_matches_reference(pipe: Pipe[Any], *, epochs: int = 2, **compile_kwargs: Any) -> None:
    """Compile ``pipe`` with ``compile_kwargs``, run ``epochs`` epochs, and assert that each
    equals ``pipe.iter(epoch=e, seed=...)`` element by element (arrays and tensors by value,
    dtype and shape). With ``ordered=False`` the elements are compared as a multiset.
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
    try:
        for epoch in range(epochs):
            got = list(loader)
            expected = list(pipe.iter(epoch=epoch, seed=loader.seed))
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
