"""The decoder: every pixel format to 8-bit RGB, its memory estimated from the header and respected."""
from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from model.decode import ImageError, decode_cost, decode_image


def save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def premultiplied_gray_tiff(size=(40, 30), value=100, alpha=128) -> bytes:
    """A TIFF that Pillow opens as mode `La`: gray + associated (premultiplied) alpha, ExtraSamples = 1."""
    data = save(Image.new("LA", size, (value, alpha)), "TIFF")
    at = data.find(struct.pack("<HHI", 338, 3, 1))  # ExtraSamples, SHORT, count 1: 2 (unassociated) -> 1
    assert at > 0
    patched = data[:at + 8] + struct.pack("<H", 1) + data[at + 10:]
    assert Image.open(io.BytesIO(patched)).mode == "La"
    return patched


def test_premultiplied_alpha_is_composited_on_white():
    image = decode_image(premultiplied_gray_tiff(value=100, alpha=128))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (227, 227, 227)  # 100 + (1 - 128/255) * 255


@pytest.mark.parametrize("mode,fmt", [("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("RGBA", "PNG"),
                                      ("LA", "PNG"), ("CMYK", "TIFF"), ("P", "PNG"), ("1", "PNG"),
                                      ("YCbCr", "TIFF"), ("LAB", "TIFF"), ("I;16B", "TIFF")])
def test_every_mode_becomes_rgb_within_its_estimate(mode, fmt):
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    if mode in ("I;16", "I;16B", "I", "F"):
        image = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257).astype(
            {"I;16": np.uint16, "I;16B": ">u2", "I": np.int32, "F": np.float32}[mode]))
        if mode == "I;16B":
            image = Image.frombytes("I;16B", base.size, image.tobytes())
    else:
        image = base.convert(mode)
    data = save(image, fmt)
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == base.size
    assert decode_cost(data) >= 400 * 300 * 4  # at least the RGB result


def test_16_bit_conversion_uses_no_whole_image_float_copy():
    """to_rgb scales high-bit-depth images in strips: numpy never holds a float copy of the whole image
    (the old float64 path held 8+ bytes per pixel, 3 times over)."""
    w, h = 8000, 2000
    data = save(Image.new("I;16", (w, h), 40000), "PNG")
    tracemalloc.start()
    try:
        image = decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 65535 * 255
    assert peak < w * h  # numpy's share: a few 2**20-pixel strips, not 8+ bytes per pixel


def test_cost_comes_from_the_header_and_bounds_the_pixels():
    data = save(Image.new("I;16", (2000, 1500)), "PNG")
    px = 2000 * 1500
    assert 2 * px + 4 * px <= decode_cost(data) <= 12 * px
    with pytest.raises(ImageError) as info:
        decode_cost(data, max_pixels=px - 1)
    assert info.value.status == 413
