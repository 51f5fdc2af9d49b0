"""``collate``: stack a batch of elements into arrays or tensors, like PyTorch's default."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np

from .._graph import Pipe, check_callable, check_int, fail, positional
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


# -- padding: collate(pad=...) ------------------------------------------------------------
class FieldPads(Mapping[str, Any]):
    """``collate(pad={field: value})``'s pad values: a dict that hashes (the stage hashes by
    value) and shows as the dict it was built from, so that the stage's repr evaluates."""

    __slots__ = ("_pads",)

    def __init__(self, pads: Mapping[str, Any]) -> None:
        self._pads = dict(pads)

    def __getitem__(self, field: str) -> Any:
        return self._pads[field]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pads)

    def __len__(self) -> int:
        return len(self._pads)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldPads) and self._pads == other._pads

    def __hash__(self) -> int:
        return hash(frozenset(self._pads.items()))

    def __repr__(self) -> str:
        return repr(self._pads)

    def __reduce__(self) -> tuple[Any, ...]:
        return FieldPads, (self._pads,)


_PAD_ARG = "pad must be a number (the value to pad with) or a dict of field name -> number"


def _pad_number(value: object, where: str = "") -> int | float | complex:
    """A pad value as a plain Python number (a NumPy one too; never a bool: ``pad=True``
    reads as "pad, please", not as "pad with 1")."""
    if isinstance(value, np.number):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
        raise fail("collate", f"{_PAD_ARG}, got {where}{value!r}", TypeError)
    return value


def _check_pad(pad: object) -> int | float | complex | FieldPads | None:
    if pad is None:
        return None
    if not isinstance(pad, Mapping):
        return _pad_number(pad)
    if not pad:
        raise fail("collate", "pad must name at least one field, got {}")
    for field in pad:
        if not isinstance(field, str):
            raise fail("collate", f"{_PAD_ARG}, got the field {field!r}", TypeError)
    return FieldPads({field: _pad_number(v, f"{field!r}: ") for field, v in pad.items()})


def pad_batch(
    batch: Sequence[Any],
    pad: int | float | complex | FieldPads,
    *,
    mask: bool = False,
    multiple: int | None = None,
    to: str = "torch",
) -> Any:
    """Collate a batch, padding ragged arrays: what ``collate(pad=...)`` does to each batch.
    A number pads every field of dict elements that holds arrays, tensors or lists of
    numbers (or the elements themselves, when they are those); a :class:`FieldPads` pads
    the fields it names. Other fields collate as :func:`collate_value` does.

    >>> pad_batch([[1, 2, 3], [4]], 0, mask=True, to="numpy")
    (array([[1, 2, 3],
           [4, 0, 0]]), array([[ True,  True,  True],
           [ True, False, False]]))
    """
    if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
        raise fail("collate", f"expects a batch (a list of elements), got {type(batch).__name__}",
                   TypeError)
    if not batch:
        raise fail("collate", "cannot collate an empty batch")
    try:
        if isinstance(batch[0], Mapping):
            return _pad_mappings(batch, pad, mask, multiple, to)
        if isinstance(pad, FieldPads):
            raise ValueError(
                f"collate: pad={pad!r} pads fields of dict elements, but the elements are "
                f"{_positions([type(x).__name__ for x in batch])}. Give one pad value for "
                "all (pad=0) when the elements are arrays themselves"
            )
        padded, where = _pad_field(batch, pad, mask, multiple, to, ())
    except RecursionError:
        raise _too_deep(batch) from None
    return (padded, where) if mask else padded


def _pad_mappings(batch: Sequence[Any], pad: Any, mask: bool, multiple: int | None,
                  to: str) -> Any:
    first = batch[0]
    for x in batch:
        if not isinstance(x, Mapping) or x.keys() != first.keys():
            raise _keys((), batch)
    named = isinstance(pad, FieldPads)
    if named and any(field not in first for field in pad):
        raise ValueError(
            f"collate: pad names fields the elements lack: "
            f"{[field for field in pad if field not in first]}; their fields are {list(first)}"
        )
    out: dict[Any, Any] = {}
    masks: dict[str, Any] = {}
    for k in first:
        column = [x[k] for x in batch]
        value = pad.get(k) if named else pad if _paddable(column) else None
        if value is None:
            out[k] = _collate(column, to, (k,))
        else:
            out[k], masks[f"{k}_mask"] = _pad_field(column, value, mask, multiple, to, (k,))
    if mask:
        out.update(_new_fields(masks, first))
    return out if type(first) is dict else _rebuild(first, out)


def _new_fields(masks: dict[str, Any], first: Mapping[Any, Any]) -> dict[str, Any]:
    taken = [name for name in masks if name in first]
    if taken:
        raise ValueError(
            f"collate: mask=True adds the fields {taken}, but the elements have them already. "
            "Rename them first (a map), or name the fields to pad: pad={'tokens': 0}"
        )
    return masks


def _number_list(x: object) -> bool:
    return type(x) is list and all(isinstance(v, _NUMBERS) for v in x)


def _paddable(column: Sequence[Any]) -> bool:
    """Whether ``pad=<number>`` pads a field of dict elements: its values are all arrays or
    tensors of numbers with at least one axis, or lists of numbers."""
    tensor = tensor_type()
    for x in column:
        if isinstance(x, np.ndarray):
            if x.ndim == 0 or x.dtype.kind not in "biufc":
                return False
        elif tensor is not None and isinstance(x, tensor):
            if x.ndim == 0:
                return False
        elif not _number_list(x):
            return False
    return True


def _pad_field(column: Sequence[Any], value: Any, mask: bool, multiple: int | None, to: str,
               path: tuple[object, ...]) -> tuple[Any, Any]:
    """One field padded (and its mask, with ``mask``), written once into its output
    array: ``output_array`` (shared memory in a worker), or a torch tensor for tensors that
    NumPy cannot hold (bfloat16, on an accelerator, requiring grad)."""
    parts = _padding_parts(column, to, path)
    shapes = [tuple(p.shape) for p in parts]
    shape = (len(parts), *_padded_shape(shapes, multiple, path))
    if all(isinstance(p, np.ndarray) for p in parts):
        dtype = _numpy_pad_dtype(parts, column)
        _check_fits(value, dtype.kind, _int_bounds(dtype), dtype, path)
        out = _write_padded(output_array(shape, dtype), parts, value)
        where = _write_mask(output_array(shape, np.bool_), shapes) if mask else None
        return _target(out, to), None if where is None else _target(where, to)
    return _pad_tensors(parts, shape, value, mask, path)


def _padding_parts(column: Sequence[Any], to: str, path: tuple[object, ...]) -> list[Any]:
    """The values as NumPy arrays, and as tensors those that only torch can hold."""
    tensor = tensor_type()
    parts: list[Any] = []
    for x in column:
        if isinstance(x, (np.ndarray, np.generic)):
            array = np.asarray(x)
            if array.dtype.kind not in "biufc":
                raise _not_paddable(path, column)
            parts.append(array)
        elif tensor is not None and isinstance(x, tensor):
            if to == "numpy":
                parts.append(x.numpy(force=True))
            else:
                parts.append(x.numpy() if x.device.type == "cpu" and _numpy_dtype(x) else x)
        elif _number_list(x):
            parts.append(_number_array(x, {type(v) for v in x}, path) if x else np.empty(0))
        else:
            raise _not_paddable(path, column)
    return parts


def _not_paddable(path: tuple[object, ...], column: Sequence[Any]) -> ValueError:
    tensor = tensor_type()

    def kind(x: Any) -> str:
        if isinstance(x, np.ndarray) or (tensor is not None and isinstance(x, tensor)):
            return f"{type(x).__name__} of {x.dtype}"
        if type(x) is list:
            return "list of numbers" if _number_list(x) else "list (not all numbers)"
        return type(x).__name__

    return ValueError(
        f"collate: cannot pad {_path_str(path)}: pad= pads arrays and tensors of numbers and "
        f"lists of numbers, and the values are: {_positions([kind(x) for x in column])}. "
        "Leave it out of pad (name the fields to pad: pad={'tokens': 0}), make the values "
        f"arrays first (a map), {_CUSTOM}"
    )


def _padded_shape(shapes: Sequence[tuple[int, ...]], multiple: int | None,
                  path: tuple[object, ...]) -> tuple[int, ...]:
    """The longest size on each axis, rounded up to ``multiple`` on the ragged axes (those
    whose sizes differ); an axis on which the elements agree is left as it is."""
    ndim = len(shapes[0])
    if any(len(s) != ndim for s in shapes):
        raise ValueError(
            f"collate: cannot pad {_path_str(path)}: the elements differ in number of "
            f"dimensions: {_positions([str(s) for s in shapes])}. Padding evens out sizes, "
            f"not dimensions: reshape them first (a map), {_CUSTOM}"
        )
    out = []
    for axis in range(ndim):
        sizes = [s[axis] for s in shapes]
        longest = max(sizes)
        if multiple is not None and min(sizes) != longest:
            longest = -(-longest // multiple) * multiple
        out.append(longest)
    return tuple(out)


def _numpy_pad_dtype(parts: Sequence[np.ndarray], column: Sequence[Any]) -> np.dtype[Any]:
    """The arrays' dtype, as ``collate`` stacks them; an empty list has none of its own."""
    typed = [p for p, x in zip(parts, column, strict=True) if not (type(x) is list and not x)]
    if not typed:
        return np.dtype(np.float64)  # as np.asarray([]) is
    first = typed[0].dtype
    return np.result_type(*typed) if any(p.dtype != first for p in typed) else first


def _int_bounds(dtype: np.dtype[Any]) -> tuple[int, int] | None:
    if dtype.kind == "b":
        return 0, 1
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    return None


def _check_fits(value: Any, kind: str, bounds: tuple[int, int] | None, dtype: Any,
                path: tuple[object, ...]) -> None:
    """An error when the arrays' dtype would change the pad value (an int dtype and -100
    out of its range or 0.5; a float dtype and a complex number)."""
    if bounds is not None:
        exact = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        fits = exact and bounds[0] <= int(value.real) <= bounds[1]
    else:
        fits = kind == "c" or not isinstance(value, complex)
    if not fits:
        raise ValueError(
            f"collate: cannot pad {_path_str(path)} with {value!r}: its values are {dtype}, "
            "which cannot hold it. Pad with a value they hold, or convert them first (a map)"
        )


def _regions(shape: tuple[int, ...], full: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The parts of an array of shape ``full`` outside its corner of ``shape``: disjoint,
    so that padding writes every position once. The d-th is ``[:shape[0], ...,
    :shape[d-1], shape[d]:, :, ...]``."""
    regions = []
    for axis, (size, length) in enumerate(zip(shape, full, strict=True)):
        if size < length:
            regions.append((*(slice(s) for s in shape[:axis]), slice(size, None)))
    return regions


def _write_padded(out: Any, parts: Sequence[Any], value: Any) -> Any:
    full = tuple(out.shape[1:])
    for i, part in enumerate(parts):
        out[(i, *(slice(s) for s in part.shape))] = part
        for region in _regions(tuple(part.shape), full):
            out[(i, *region)] = value
    return out


def _write_mask(where: Any, shapes: Sequence[tuple[int, ...]]) -> Any:
    """True at the positions that hold an element's values, False at the padding."""
    full = tuple(where.shape[1:])
    for i, shape in enumerate(shapes):
        where[(i, *(slice(s) for s in shape))] = True
        for region in _regions(shape, full):
            where[(i, *region)] = False
    return where


def _pad_tensors(parts: Sequence[Any], shape: tuple[int, ...], value: Any, mask: bool,
                 path: tuple[object, ...]) -> tuple[Any, Any]:
    """Tensors whose dtype NumPy lacks, on an accelerator or requiring grad: padded by
    torch, on the first one's device."""
    torch = sys.modules["torch"]
    tensors = [torch.from_numpy(p) if isinstance(p, np.ndarray) else p for p in parts]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    kind = "b" if dtype == torch.bool else "c" if dtype.is_complex else (
        "f" if dtype.is_floating_point else "i")
    bounds = (0, 1) if kind == "b" else None
    if kind == "i":
        bounds = (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    _check_fits(value, kind, bounds, dtype, path)
    device = tensors[0].device
    out = _write_padded(torch.empty(shape, dtype=dtype, device=device), tensors, value)
    if not mask:
        return out, None
    where = torch.empty(shape, dtype=torch.bool, device=device)
    return out, _write_mask(where, [tuple(t.shape) for t in tensors])


@attrs.frozen(kw_only=True, repr=False)
class Collate(ElementStage):
    call_name: ClassVar[str] = "collate"
    keeps_random_access: ClassVar[bool] = True
    one_to_one: ClassVar[bool] = True
    fn: Callable[[list[Any]], Any] | None = positional(default=None)
    to: str = "torch"
    pad: int | float | complex | FieldPads | None = None
    mask: bool = False
    pad_to_multiple_of: int | None = None

    def length(self, n: int) -> int:
        return n

    def __call__(self, batch: Sequence[Any]) -> Any:
        if self.fn is not None:
            return self.fn(list(batch))
        if self.pad is None:
            return collate_value(batch, self.to)
        return pad_batch(batch, self.pad, mask=self.mask, multiple=self.pad_to_multiple_of,
                         to=self.to)

    def element_op(self, stage_key: int) -> ElementOp:
        return (MAP, self, self, stage_key)

    def hands_over_as_is(self) -> bool:
        return self.fn is None and self.to == "torch"


def collate(
    fn: Callable[[list[Any]], Any] | None = None,
    *,
    to: str = "torch",
    pad: float | Mapping[str, float] | None = None,
    mask: bool = False,
    pad_to_multiple_of: int | None = None,
) -> Pipe[Any]:
    """Turn each batch (a list) into stacked arrays or tensors.

    With no ``fn`` it stacks like PyTorch's ``default_collate``: dicts, tuples and lists field
    by field; arrays, tensors and numbers into one tensor (``to="torch"``) or array
    (``to="numpy"``); strings stay lists. Elements that do not stack raise a ``ValueError``
    naming the field, the batch positions and the shapes found.

    >>> import datapipes as dp
    >>> pipe = dp.from_sequence([(0, 0.5), (1, 1.5), (2, 2.5)]) | dp.batch(2) | dp.collate()
    >>> next(iter(pipe))
    (tensor([0, 1]), tensor([0.5000, 1.5000], dtype=torch.float64))

    ``pad`` pads ragged arrays, tensors and lists of numbers with that value, on every axis
    whose sizes differ, to the longest in the batch: ``pad=0`` pads the elements themselves
    or each such field of dict elements, ``pad={"tokens": 0, "labels": -100}`` the fields it
    names (the others stack as usual). ``mask=True`` adds where the values are (True) and
    where the padding is: as the field ``"<field>_mask"`` of dict elements, else as a pair
    ``(padded, mask)``. ``pad_to_multiple_of`` rounds each padded length up to a multiple.

    >>> pipe = dp.from_sequence([[1, 2, 3], [4]]) | dp.batch(2) | dp.collate(pad=0, mask=True)
    >>> next(iter(pipe))
    (tensor([[1, 2, 3],
            [4, 0, 0]]), tensor([[ True,  True,  True],
            [ True, False, False]]))
    """
    if fn is not None:
        check_callable("collate", "fn", fn)
    if to not in _TARGETS:
        raise fail("collate", f"to must be 'torch' or 'numpy', got {to!r}")
    pads = _check_pad(pad)
    if not isinstance(mask, bool):
        raise fail("collate", f"mask must be a bool, got {mask!r}", TypeError)
    if pad_to_multiple_of is not None:
        pad_to_multiple_of = check_int("collate", "pad_to_multiple_of", pad_to_multiple_of,
                                       minimum=1)
    if pads is None and (mask or pad_to_multiple_of is not None):
        raise fail("collate", "mask and pad_to_multiple_of need pad= (the value to pad with), "
                   "e.g. collate(pad=0, mask=True)")
    if pads is not None and fn is not None:
        raise fail("collate", "pad pads what collate builds without fn; pad in your fn "
                   "instead (dp.output_array gives it the array to write into)")
    return Pipe(Collate(fn=fn, to=to, pad=pads, mask=mask, pad_to_multiple_of=pad_to_multiple_of))
