"""``collate``: stack a batch of elements into arrays or tensors, like PyTorch's default."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import Pipe, check_callable, fail, positional
from ..buffers import allocator, output_array
from ._kernel import MAP, ElementOp
from ._kinds import ElementStage


def tensor_from_numpy(array: np.ndarray) -> Any:
    """``torch.from_numpy``, importing torch on first use: a process whose batches hold no
    tensors never pays for importing it."""
    import torch

    return torch.from_numpy(array)


#: How ``collate(to="torch")`` turns a stacked array into a tensor. A worker process whose
#: batches go straight to the main process sets it to a stand-in that the main process turns
#: into the tensor (the same ``torch.from_numpy`` of the same array), so the worker itself
#: need not import torch: that import is most of a spawned worker's start-up time.
as_tensor: contextvars.ContextVar[Callable[[np.ndarray], Any]]
as_tensor = contextvars.ContextVar("datapipes_collate_as_tensor", default=tensor_from_numpy)


def tensor_type() -> Any:
    """``torch.Tensor`` once torch is imported, else None: before, no value can be a tensor.
    (Another thread may be half-way through importing torch: no tensor exists yet then.)"""
    return getattr(sys.modules.get("torch"), "Tensor", None)


_TARGETS = ("torch", "numpy")
_NONE = type(None)
_NUMPY = (np.ndarray, np.generic)
_NUMBERS = (bool, int, float, complex)


def _path_str(path: tuple[object, ...]) -> str:
    return "".join(f"[{p!r}]" for p in path) or "the elements themselves"


_CUSTOM = "or pass collate(fn=...) to build the batch yourself"
_PAD = f"Pad them to one shape first (a map that pads), {_CUSTOM}"


def _positions(values: Sequence[object]) -> str:
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(v if isinstance(v, str) else repr(v), []).append(i)
    return "; ".join(f"{v} at batch positions {pos}" for v, pos in groups.items())


def _mismatch(
    path: tuple[object, ...], what: str, values: Sequence[object], advice: str = _PAD
) -> ValueError:
    return ValueError(
        f"collate: cannot stack {_path_str(path)}: the elements differ in {what}: "
        f"{_positions(values)}. {advice}"
    )


def _types(path: tuple[object, ...], batch: Sequence[Any]) -> ValueError:
    return _mismatch(path, "type", [type(x).__name__ for x in batch],
                     f"Make them one type first (a map that converts), {_CUSTOM}")


def _keys(path: tuple[object, ...], batch: Sequence[Any]) -> ValueError:
    if not all(isinstance(x, Mapping) for x in batch):
        return _types(path, batch)
    first = batch[0]
    groups: dict[str, list[int]] = {}
    for i, x in enumerate(batch):
        missing = [k for k in first if k not in x]
        extra = [k for k in x if k not in first]
        differs = [f"lack {missing}"] * bool(missing) + [f"have {extra} besides"] * bool(extra)
        if differs:
            groups.setdefault(" and ".join(differs), []).append(i)
    found = "; ".join(f"batch positions {pos} {what}" for what, pos in groups.items())
    return ValueError(
        f"collate: cannot collate {_path_str(path)}: the elements have different keys: {found} "
        f"(compared with the first, at batch position [0], whose keys are {list(first)}). Give "
        f"every element the same keys (a map that adds the missing ones), {_CUSTOM}"
    )


def _none(path: tuple[object, ...], batch: Sequence[Any]) -> ValueError:
    where = [i for i, x in enumerate(batch) if x is None]
    return ValueError(
        f"collate: cannot collate {_path_str(path)}: the values are None at batch positions "
        f"{where}. Is a map before it missing a `return`? (A function without one returns "
        f"None.) Drop or fill the missing values first, {_CUSTOM}"
    )


def _beyond_int64(path: tuple[object, ...], batch: Sequence[Any]) -> ValueError:
    where, bad = next((i, x) for i, x in enumerate(batch)
                      if isinstance(x, int) and not -(2**63) <= x < 2**63)
    return ValueError(
        f"collate: cannot stack {_path_str(path)}: {bad} at batch position {where} does not "
        "fit in int64, the type Python ints become (torch has no wider integer). Make it a "
        f"float or a string first (a map), {_CUSTOM}"
    )


def _too_deep(batch: Sequence[Any]) -> ValueError:
    """What to say when collating ran past the recursion limit: how deep the first element
    goes (walked in a loop: the stack is what ran out)."""
    path: list[object] = []
    x = batch[0]
    while len(path) < 100_000:  # a list that holds itself has no bottom
        if isinstance(x, Mapping) and x:
            key = next(iter(x))
            path.append(key)
            x = x[key]
        elif isinstance(x, (tuple, list)) and x:
            path.append(0)
            x = x[0]
        else:
            break
    shown = _path_str(tuple(path[:8])) + ("..." if len(path) > 8 else "")
    return ValueError(
        f"collate: the elements are nested too deeply to collate: {len(path)} levels of dicts, "
        f"lists or tuples, under {shown}; collate goes down one level at a time and ran past "
        f"Python's recursion limit ({sys.getrecursionlimit()}). Flatten them first (a map that "
        f"makes arrays of the inner lists), {_CUSTOM}"
    )


def _stack(arrays: Sequence[np.ndarray], path: tuple[object, ...]) -> np.ndarray:
    first = arrays[0]
    for a in arrays:
        if a.shape != first.shape:
            raise _mismatch(path, "shape", [str(tuple(x.shape)) for x in arrays])
    dtype = np.result_type(*arrays) if any(a.dtype != first.dtype for a in arrays) else first.dtype
    # written once, where the executor wants it (shared memory in a worker)
    return np.stack(arrays, out=output_array((len(arrays), *first.shape), dtype))


def collate_value(batch: Sequence[Any], to: str = "torch", path: tuple[object, ...] = ()) -> Any:
    """Stack a list of like-shaped elements: nested dicts, tuples and lists are collated field
    by field; arrays, tensors and numbers become one array (``to="numpy"``) or tensor
    (``to="torch"``); strings and other objects stay a list.

    >>> collate_value([{"x": 1, "s": "a"}, {"x": 2, "s": "b"}])
    {'x': tensor([1, 2]), 's': ['a', 'b']}
    >>> collate_value([(1.0, [1, 2]), (2.0, [3, 4])], to="numpy")
    (array([1., 2.]), [array([1, 3]), array([2, 4])])
    """
    if path:
        return _collate(batch, to, path)
    try:
        return _collate(batch, to, path)
    except RecursionError:
        raise _too_deep(batch) from None


#: Collates a batch of one kind, chosen by :func:`_collator`: ``(batch, kinds, to, path)``,
#: where ``kinds`` is the set of the elements' types (already built to look for None).
_Collator = Callable[[Sequence[Any], set[type], str, tuple[object, ...]], Any]


def _collate(batch: Sequence[Any], to: str, path: tuple[object, ...]) -> Any:
    if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
        raise fail("collate", f"expects a batch (a list of elements), got {type(batch).__name__}",
                   TypeError)
    if not batch:
        raise fail("collate", "cannot collate an empty batch")
    kinds = {type(x) for x in batch}
    if _NONE in kinds:  # torch's default_collate refuses None too: say why it is there
        raise _none(path, batch)
    return _collator(batch)(batch, kinds, to, path)


def _collator(batch: Sequence[Any]) -> _Collator:
    """Which collator takes a batch, by its first element; the first that fits wins, so the
    order matters: a batch with other kinds among its tensors or NumPy values goes on down
    the list, and a NumPy float (a ``float`` subclass) is not a Python number."""
    first = batch[0]
    # inline, not a helper function: one frame more at the bottom of a deeply nested batch
    # would lower how deep collate can go before the recursion limit (see _mappings)
    tensor = tensor_type()
    if tensor is not None and all(isinstance(x, tensor) for x in batch):
        return _tensors
    if isinstance(first, _NUMPY) and all(isinstance(x, _NUMPY) for x in batch):
        return _numpy
    if isinstance(first, Mapping):
        return _mappings
    if isinstance(first, _NUMBERS) and not isinstance(first, np.generic):
        return _numbers
    if isinstance(first, (str, bytes)):
        return _strings
    if isinstance(first, (tuple, list)):
        return _sequences
    return _others


def _tensors(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    first = batch[0]
    if any(x.shape != first.shape for x in batch):
        raise _mismatch(path, "shape", [str(tuple(x.shape)) for x in batch])
    if to == "numpy":
        return _stack([x.numpy(force=True) for x in batch], path)
    # through NumPy so that the allocator (shared memory) holds the stacked batch
    if allocator.get() is not None and first.device.type == "cpu" and _numpy_dtype(first):
        return tensor_from_numpy(_stack([x.numpy() for x in batch], path))
    return sys.modules["torch"].stack(list(batch))


def _numpy(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    """NumPy arrays and NumPy scalars, mixed freely: a scalar stacks as a 0-d array."""
    if batch[0].dtype.kind in "OUS":  # objects and strings: a list, as for Python strings
        return list(batch)
    return _target(_stack([np.asarray(x) for x in batch], path), to)


def _mappings(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    first = batch[0]
    keys = list(first)
    for x in batch:
        if not isinstance(x, Mapping) or x.keys() != first.keys():
            raise _keys(path, batch)
    # a loop, not a comprehension: on Python 3.11 a comprehension is a frame of its own, and
    # each frame per level of nesting lowers how deep collate goes before the recursion
    # limit (see _too_deep)
    out = {}
    for k in keys:
        out[k] = _collate([x[k] for x in batch], to, (*path, k))
    return out if type(first) is dict else _rebuild(first, out)


def _numbers(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    if not all(isinstance(x, _NUMBERS) for x in batch):
        raise _types(path, batch)
    return _target(_number_array(batch, kinds, path), to)


def _strings(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    return list(batch)  # as torch's default_collate does: text has no tensor


def _sequences(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    """Tuples (named ones too) and lists, position by position."""
    first = batch[0]
    if len(kinds) > 1:
        raise _types(path, batch)
    if any(len(x) != len(first) for x in batch):
        raise _mismatch(path, "length", [f"{type(x).__name__} of {len(x)}" for x in batch],
                        f"Pad them to one length first (a map that pads), {_CUSTOM}")
    # a loop, not a comprehension: one frame less per level of nesting (see _mappings)
    fields = []
    for i, column in enumerate(zip(*batch, strict=True)):
        fields.append(_collate(list(column), to, (*path, i)))
    if isinstance(first, tuple):
        return type(first)(*fields) if hasattr(first, "_fields") else tuple(fields)
    return fields


def _others(batch: Sequence[Any], kinds: set[type], to: str, path: tuple[object, ...]) -> Any:
    """Objects collate does not know, and tensors or NumPy values mixed with other kinds."""
    return list(batch)


def _target(stacked: np.ndarray, to: str) -> Any:
    return as_tensor.get()(stacked) if to == "torch" else stacked


def _number_array(batch: Sequence[Any], kinds: set[type], path: tuple[object, ...]) -> np.ndarray:
    """Python numbers as one array. Ints alone are int64, as in torch: NumPy would make an
    int beyond int64 a uint64, a float64 or an object, and torch refuses those or loses
    digits. With a float among them the batch is a float batch, big ints included."""
    stacked = np.asarray(batch)
    if stacked.dtype.kind in "fuO":
        if not any(issubclass(k, (float, complex)) for k in kinds):
            raise _beyond_int64(path, batch)
        if stacked.dtype.kind != "f":
            complex_ = any(issubclass(k, complex) for k in kinds)
            stacked = np.asarray(batch, dtype=np.complex128 if complex_ else np.float64)
    return stacked


def _numpy_dtype(tensor: Any) -> bool:
    """Whether NumPy has the tensor's dtype (it lacks bfloat16, float8, ...)."""
    try:
        sys.modules["torch"].empty(0, dtype=tensor.dtype).numpy()
    except TypeError:
        return False
    return not tensor.requires_grad


def _rebuild(template: Mapping[Any, Any], fields: dict[Any, Any]) -> Any:
    try:
        return type(template)(fields)  # type: ignore[call-arg]
    except TypeError:
        return fields


@attrs.frozen(kw_only=True, repr=False)
class Collate(ElementStage):
    call_name: ClassVar[str] = "collate"
    keeps_random_access: ClassVar[bool] = True
    one_to_one: ClassVar[bool] = True
    fn: Callable[[list[Any]], Any] | None = positional(default=None)
    to: str = "torch"

    def length(self, n: int) -> int:
        return n

    def __call__(self, batch: Sequence[Any]) -> Any:
        return collate_value(batch, self.to) if self.fn is None else self.fn(list(batch))

    def element_op(self, stage_key: int) -> ElementOp:
        return (MAP, self, self, stage_key)

    def hands_over_as_is(self) -> bool:
        return self.fn is None and self.to == "torch"


def collate(fn: Callable[[list[Any]], Any] | None = None, *, to: str = "torch") -> Pipe[Any]:
    """Turn each batch (a list) into stacked arrays or tensors.

    With no ``fn`` it stacks like PyTorch's ``default_collate``: dicts, tuples and lists field
    by field; arrays, tensors and numbers into one tensor (``to="torch"``) or array
    (``to="numpy"``); strings stay lists. Elements that do not stack raise a ``ValueError``
    naming the field, the batch positions and the shapes found.

    >>> import datapipes as dp
    >>> pipe = dp.from_sequence([(0, 0.5), (1, 1.5), (2, 2.5)]) | dp.batch(2) | dp.collate()
    >>> next(iter(pipe))
    (tensor([0, 1]), tensor([0.5000, 1.5000], dtype=torch.float64))
    """
    if fn is not None:
        check_callable("collate", "fn", fn)
    if to not in _TARGETS:
        raise fail("collate", f"to must be 'torch' or 'numpy', got {to!r}")
    return Pipe(Collate(fn=fn, to=to))
