"""Decoders for the fields of tar samples (``from_tar``): ``dp.map(dp.decode)`` decodes each
field by its extension (the last one: ``seg.png`` is a PNG), as WebDataset's default
decoders do:

- ``npy``: ``numpy.load`` of the bytes (never a pickle); ``npz``: a dict ``{name: array}``;
- ``json``, ``jsn``: ``json.loads``; ``txt``, ``text``, ``transcript``: a ``str`` (UTF-8);
- ``cls``, ``cls2``, ``class``, ``count``, ``index``, ``inx``, ``id``: an ``int``;
- ``jpg``, ``jpeg``, ``png``, ``bmp``, ``gif``, ``webp``, ``tif``, ``tiff``, ``ppm``, ...: a
  ``uint8`` array ``(height, width, channels)``, with Pillow (``pip install
  'datapipes[images]'``): 1 channel for grayscale, 2 with alpha, 3 for RGB, 4 for RGBA;
  other modes become RGB (palettes with transparency RGBA);
- anything else: the bytes, unchanged.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def _npy(data: bytes) -> Any:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _npz(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _text(data: bytes) -> str:
    return data.decode("utf-8")


def _int(data: bytes) -> int:
    return int(data.decode("utf-8").strip())


#: image modes kept as they are; any other mode is converted as said here, else to RGB
_KEPT_MODES = ("L", "LA", "RGB", "RGBA")
_CONVERTED = {"1": "L", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}


def _image(data: bytes) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("decode: decoding images needs Pillow: pip install "
                          "'datapipes[images]' (or pip install Pillow)") from exc
    with Image.open(io.BytesIO(data)) as image:
        mode = image.mode
        if mode not in _KEPT_MODES:
            if mode == "P":
                mode = "RGBA" if "transparency" in image.info else "RGB"
            else:
                mode = _CONVERTED.get(mode, "RGB")
            converted = image.convert(mode)
        else:
            converted = image
        array = np.asarray(converted, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


_IMAGES = ("jpg", "jpeg", "png", "ppm", "pgm", "pbm", "pnm", "bmp", "gif", "webp", "tif",
           "tiff")
DECODERS: Mapping[str, Callable[[bytes], Any]] = {
    "npy": _npy,
    "npz": _npz,
    "json": json.loads,
    "jsn": json.loads,
    **dict.fromkeys(("txt", "text", "transcript"), _text),
    **dict.fromkeys(("cls", "cls2", "class", "count", "index", "inx", "id"), _int),
    **dict.fromkeys(_IMAGES, _image),
}


def decode_field(ext: str, data: Any) -> Any:
    """``data`` decoded by the extension ``ext`` (its last part: ``"seg.png"`` is a PNG);
    an unknown extension, or data that is not bytes, is returned as it is.

    >>> decode_field("json", b'{"a": [1, 2]}'), decode_field("cls", b" 7\\n")
    ({'a': [1, 2]}, 7)
    >>> decode_field("txt", "caf\\u00e9".encode()), decode_field("weird", b"\\x00\\x01")
    ('café', b'\\x00\\x01')
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return data
    decoder = DECODERS.get(ext.rsplit(".", 1)[-1].lower())
    return bytes(data) if decoder is None else decoder(bytes(data))


def decode(sample: Mapping[str, Any]) -> dict[str, Any]:
    """A tar sample (a dict from ``from_tar``) with each field decoded by its extension
    (:func:`decode_field`); ``__key__``, ``__shard__`` and other ``__...__`` fields stay as
    they are. Use it as ``dp.map(dp.decode)``. An error names the field and the sample.

    >>> import io, numpy as np
    >>> buffer = io.BytesIO()
    >>> np.save(buffer, np.arange(3))
    >>> sample = {"__key__": "0001", "npy": buffer.getvalue(), "json": b'{"label": 2}',
    ...           "bin": b"\\x00"}
    >>> decode(sample)
    {'__key__': '0001', 'npy': array([0, 1, 2]), 'json': {'label': 2}, 'bin': b'\\x00'}
    >>> try:
    ...     decode({"__key__": "0002", "json": b"{oops"})
    ... except ValueError as exc:
    ...     print(exc.__notes__)
    ["datapipes: decoding the field 'json' of the sample '0002'"]
    """
    if not isinstance(sample, Mapping):
        raise TypeError(f"decode: expected a sample dict (from from_tar), got "
                        f"{type(sample).__name__}; for one field use decode_field(ext, data)")
    out: dict[str, Any] = {}
    for name, value in sample.items():
        if name.startswith("__") and name.endswith("__"):
            out[name] = value
            continue
        try:
            out[name] = decode_field(name, value)
        except Exception as exc:
            exc.add_note(f"datapipes: decoding the field {name!r} of the sample "
                         f"{sample.get('__key__')!r}" + _shard_of(sample))
            raise
    return out


def _shard_of(sample: Mapping[str, Any]) -> str:
    shard = sample.get("__shard__")
    return f" from {shard!r}" if shard is not None else ""
