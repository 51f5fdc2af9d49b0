"""``filter``: keep the elements a predicate accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs

from .._graph import Pipe, check_callable, positional
from ._kernel import FILTER, ElementOp
from ._kinds import ElementStage


@attrs.frozen(kw_only=True, repr=False)
class Filter(ElementStage):
    call_name: ClassVar[str] = "filter"
    pred: Callable[[Any], object] = positional()

    def element_op(self, stage_key: int) -> ElementOp:
        return (FILTER, self.pred, self, stage_key)


def filter(pred: Callable[[Any], object]) -> Pipe[Any]:
    """Keep the elements for which ``pred`` is true. Elements keep their keys.

    >>> import datapipes as dp
    >>> list(dp.from_sequence(range(10)) | dp.filter(lambda x: x % 3 == 0))
    [0, 3, 6, 9]
    """
    check_callable("filter", "pred", pred)
    return Pipe(Filter(pred=pred))
