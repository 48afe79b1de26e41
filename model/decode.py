"""Untrusted image bytes -> RGB PIL image, with limits and one error type carrying a machine-readable code.

Memory is predictable: `decode_cost(data)` reads only the header and returns an upper bound of the bytes
that decoding and converting the image will hold at its peak, so a server can refuse or wait *before*
allocating. The conversion to 8-bit RGB works in strips (never a float64 copy of the whole image).
"""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF support where the registry package is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - optional
    pass

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO", "HEIF"})
# Decoders that write straight into the image buffer; the others (libtiff, libwebp, libheif) decode into
# a buffer of their own first, so they hold the image twice.
_STREAMING_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP"})
# Bytes per pixel of Pillow's in-memory storage (multi-band modes use 4 bytes per pixel).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_STRIP_PIXELS = 1 << 20  # high-bit-depth images are scaled to 8 bits this many pixels at a time


class ImageError(ValueError):
    """Bad image input. `code` is stable and machine-readable; `status` is the HTTP status to answer."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only; refuse empty data, other formats and too many pixels before any decoding."""
    if not data:
        raise ImageError("empty_image", "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", "the upload is not a readable image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_many_pixels", str(exc), 413) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError("corrupt_image", f"the image header could not be read ({exc})") from exc
    if image.format not in ALLOWED_FORMATS:
        raise ImageError("unsupported_format", f"unsupported image format {image.format}; "
                         f"use one of {sorted(ALLOWED_FORMATS - {'MPO'})}", 415)
    # Checked before decoding pixels: a small file can declare a huge canvas (decompression bomb).
    if image.width * image.height > max_pixels:
        raise ImageError("too_many_pixels", f"image is {image.width}x{image.height}; at most {max_pixels} pixels", 413)
    return image


def _may_rotate(image: Image.Image, data: bytes) -> bool:
    """Whether EXIF may ask for a rotation, from the header alone (PNG's getexif() would decode the pixels)."""
    if image.format == "PNG":
        return b"eXIf" in data
    try:
        return image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - unreadable EXIF is ignored by the decoder too
        return False


def _cost(image: Image.Image, data: bytes) -> int:
    """Upper bound of the bytes held at once while `image` (header parsed) is decoded and made 8-bit RGB."""
    px = image.width * image.height
    src = _PIXEL_BYTES.get(image.mode, 4)
    copies = 1 + (image.format not in _STREAMING_FORMATS)  # the decoder's own buffer
    copies += _may_rotate(image, data)  # exif_transpose makes a rotated copy in the source mode
    if image.mode == "RGB":
        convert = 0
    elif image.mode in _ALPHA_MODES or image.mode == "P":
        convert = 4 + 4  # an RGBA copy, then the RGB result
    elif image.mode in _PIXEL_BYTES and src > 1:
        convert = 1 + 4  # 8-bit gray, then RGB
    else:
        convert = 4
    return px * (src * copies + convert)


def header_size_and_cost(data: bytes, max_pixels: int = 40_000_000) -> tuple[tuple[int, int], int]:
    """((width, height), decode cost in bytes) from the header alone, before any pixel is decoded (ImageError)."""
    image = _open(data, max_pixels)
    return image.size, _cost(image, data)


def decode_cost(data: bytes, max_pixels: int = 40_000_000) -> int:
    """Bytes that `decode_image(data)` will hold at its peak, from the header alone (raises ImageError)."""
    return _cost(_open(data, max_pixels), data)


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode, honour EXIF orientation, convert any mode (L, CMYK, P, RGBA, La, I;16, I, F...) to 8-bit RGB."""
    image = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_many_pixels", str(exc), 413) from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error) as exc:  # truncated or corrupt
        raise ImageError("corrupt_image", f"the image could not be decoded ({exc})") from exc
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy unless it rotates
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a readable image
        pass
    try:
        return to_rgb(image)
    except (OSError, ValueError, TypeError) as exc:  # a mode or layout Pillow cannot convert
        raise ImageError("unsupported_pixel_format", f"pixel format {image.mode} cannot be converted to RGB "
                         f"({exc})", 422) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. Transparency is composited on white; 16/32-bit and float images are scaled to 8 bits."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16"):
        return _scaled_gray(image, 0.0, 65535.0).convert("RGB")
    if mode == "I":
        lo, hi = image.getextrema()
        return _scaled_gray(image, 0.0, 65535.0 if hi > 255 else 255.0).convert("RGB")
    if mode == "F":
        lo, hi = image.getextrema()
        return _scaled_gray(image, float(lo), float(hi)).convert("RGB")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        if mode == "La":  # premultiplied: Pillow converts La only to LA
            image = image.convert("LA")
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")  # RGBa is un-premultiplied here
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba)  # alpha over a white background
        return out
    return image.convert("RGB")


def _scaled_gray(image: Image.Image, lo: float, hi: float) -> Image.Image:
    """`image` (one band, any depth) mapped linearly from [lo, hi] to 8-bit gray, a strip of rows at a time."""
    scale = 255.0 / max(hi - lo, 1e-12)
    out = Image.new("L", image.size)
    rows = max(1, _STRIP_PIXELS // max(1, image.width))
    for top in range(0, image.height, rows):
        box = (0, top, image.width, min(top + rows, image.height))
        strip = np.array(image.crop(box), dtype=np.float32)  # a writable copy
        strip -= np.float32(lo)  # in place: one float32 strip at a time
        strip *= np.float32(scale)
        strip += np.float32(0.5)
        gray = np.clip(strip, 0, 255, out=strip).astype(np.uint8)
        out.paste(Image.fromarray(gray, "L"), box[:2])
    return out
