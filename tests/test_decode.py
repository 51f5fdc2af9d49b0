"""Decoders for tar samples: decode (a whole sample) and decode_field (one field)."""

from __future__ import annotations

import io
import json
import pickle
import sys
import tarfile

import numpy as np
import pytest

import datapipes as dp
from datapipes.decode import decode, decode_field
from datapipes.stages.records import from_tar
from datapipes.testing import assert_matches_reference


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def image_bytes(array, fmt, mode=None):
    image_module = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    image = image_module.fromarray(array, mode) if mode else image_module.fromarray(array)
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_fields_decode_by_their_extension():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = decode_field("npy", npy_bytes(array))
    assert got.dtype == np.float32 and got.tolist() == array.tolist()
    assert decode_field("json", b'{"a": [1, null]}') == {"a": [1, None]}
    assert decode_field("jsn", b"[1]") == [1]
    assert decode_field("txt", "naïve\n".encode()) == "naïve\n"
    assert decode_field("text", b"x") == "x"
    for ext in ("cls", "cls2", "class", "count", "index", "inx", "id"):
        assert decode_field(ext, b" 12\n") == 12
    assert decode_field("CLS", b"3") == 3  # any case
    assert decode_field("seg.json", b"[2]") == [2]  # the last extension decides
    assert decode_field("unknown", b"\x00\x01") == b"\x00\x01"
    assert decode_field("json", {"already": "decoded"}) == {"already": "decoded"}
    assert decode_field("txt", bytearray(b"ab")) == "ab"


def test_npz_and_pickles():
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(3), b=np.ones(2))
    got = decode_field("npz", buffer.getvalue())
    assert sorted(got) == ["a", "b"] and got["a"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"allow_pickle"):
        decode_field("npy", npy_bytes(np.array([{}], dtype=object)))
    assert decode_field("pyd", pickle.dumps(1)) == pickle.dumps(1)  # never unpickled


def test_decode_a_sample():
    sample = {"__key__": "0001", "__shard__": "a.tar", "json": b'{"label": 3}', "cls": b"3",
              "bin": b"\xff", "__extra__": b"kept"}
    assert decode(sample) == {"__key__": "0001", "__shard__": "a.tar", "json": {"label": 3},
                              "cls": 3, "bin": b"\xff", "__extra__": b"kept"}
    assert sample["json"] == b'{"label": 3}'  # the input is left as it was


def test_an_error_names_the_field_and_the_sample():
    with pytest.raises(ValueError) as info:
        decode({"__key__": "k7", "__shard__": "s.tar", "cls": b"seven"})
    assert info.value.__notes__ == [
        "datapipes: decoding the field 'cls' of the sample 'k7' from 's.tar'"]
    with pytest.raises(TypeError, match=r"^decode: expected a sample dict"):
        decode([b"not", b"a", b"dict"])


def test_rgb_png_decodes_exactly():
    array = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    got = decode_field("png", image_bytes(array, "PNG"))
    assert got.dtype == np.uint8 and got.shape == (5, 7, 3)
    np.testing.assert_array_equal(got, array)


def test_image_modes_give_height_width_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert decode_field("png", image_bytes(gray, "PNG")).shape == (3, 4, 1)
    np.testing.assert_array_equal(decode_field("png", image_bytes(gray, "PNG"))[..., 0], gray)
    rgba = np.full((2, 2, 4), 200, dtype=np.uint8)
    assert decode_field("png", image_bytes(rgba, "PNG")).shape == (2, 2, 4)
    image_module = pytest.importorskip("PIL.Image")
    palette = image_module.fromarray(np.zeros((3, 3, 3), dtype=np.uint8)).convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert decode_field("png", buffer.getvalue()).shape == (3, 3, 3)
    jpeg = decode_field("JPG", image_bytes(np.full((8, 8, 3), 128, np.uint8), "JPEG"))
    assert jpeg.shape == (8, 8, 3) and jpeg.dtype == np.uint8
    assert abs(int(jpeg.mean()) - 128) <= 2
    assert decode_field("seg.png", image_bytes(gray, "PNG")).shape == (3, 4, 1)


def test_images_without_pillow_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"^decode: decoding images needs Pillow: pip install "
                                          r"'datapipes\[images\]'"):
        decode_field("jpg", b"\xff\xd8")
    assert decode_field("json", b"1") == 1  # other fields need nothing


def make_shard(path, count):
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            for ext, data in [("png", image_bytes(np.full((2, 3, 3), i, np.uint8), "PNG")),
                              ("json", json.dumps({"i": i}).encode()), ("cls", b"%d" % i)]:
                info = tarfile.TarInfo(f"{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_from_tar_then_decode_matches_the_reference(tmp_path, backend):
    pytest.importorskip("PIL")
    paths = [make_shard(tmp_path / f"{s}.tar", 4) for s in range(2)]
    pipe = from_tar(paths) | dp.map(decode)
    first = next(iter(pipe))
    assert first["png"].shape == (2, 3, 3) and first["json"] == {"i": 0} and first["cls"] == 0
    assert repr(dp.map(decode)) == "map(decode)"
    assert pickle.loads(pickle.dumps(pipe)) == pipe
    assert_matches_reference(pipe | dp.shuffle(buffer=3), workers=2, backend=backend)
