"""Face crops are stored as PNG by app.gallery.png: any reader gets the exact pixels back."""
import io
import zlib

import numpy as np
import pytest
from PIL import Image

from app.gallery.png import encode_rgb
from app.gallery.store import crop_to_png, png_to_crop


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (5, 1, 3), (182, 182, 3), (33, 250, 3)])
def test_pillow_decodes_the_exact_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    data = encode_rgb(pixels)
    Image.open(io.BytesIO(data)).verify()  # signature, chunk lengths and CRCs
    back = Image.open(io.BytesIO(data))
    assert (back.format, back.mode, back.size) == ("PNG", "RGB", (shape[1], shape[0]))
    assert np.array_equal(np.asarray(back), pixels)


def test_smooth_pixels_compress_and_wrap_around_modulo_256():
    """Rows that differ by more than 127 (the Up filter's wrap-around) and flat rows, as in a real crop."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[::2] = 255
    pixels[:, :, 1] = np.arange(64, dtype=np.uint8)[:, None] * 4
    data = encode_rgb(pixels)
    assert np.array_equal(png_to_crop(data), pixels)
    assert len(data) < pixels.size // 2


def test_a_non_contiguous_view_is_encoded_as_its_pixels():
    base = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view = base[5:30:2, 50:3:-3]
    assert np.array_equal(png_to_crop(crop_to_png(view)), view)


def test_the_idat_stream_is_zlib_with_one_filter_byte_per_row():
    pixels = np.random.default_rng(2).integers(0, 256, (9, 4, 3), dtype=np.uint8)
    data = encode_rgb(pixels)
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8:start - 4], "big")
    raw = zlib.decompress(data[start:start + length])
    assert len(raw) == 9 * (4 * 3 + 1)
    assert raw[0] == 0 and all(raw[r * 13] == 2 for r in range(1, 9))


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
                                 np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)])
def test_anything_but_rgb_bytes_is_refused(bad):
    with pytest.raises(ValueError):
        encode_rgb(bad)


def test_crop_to_png_encodes_rgb_crops_with_the_fast_encoder():
    crop = np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    assert crop_to_png(crop) == encode_rgb(crop)


def test_crop_to_png_still_takes_gray_through_pillow():
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(crop_to_png(gray)))), gray)
