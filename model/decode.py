"""Untrusted image bytes -> RGB PIL image, with limits and one error type carrying a machine-readable code."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF support where the registry package is installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - optional
    pass

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO", "HEIF"})


class ImageError(ValueError):
    """Bad image input. `code` is stable and machine-readable; `status` is the HTTP status to answer."""

    def __init__(self, code: str, message: str, status: int = 422):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> Image.Image:
    """Decode, honour EXIF orientation, convert any mode (L, CMYK, P, RGBA, I;16...) to 8-bit RGB."""
    if not data:
        raise ImageError("empty_image", "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format
            if fmt not in ALLOWED_FORMATS:
                raise ImageError("unsupported_format", f"unsupported image format {fmt}; "
                                 f"use one of {sorted(ALLOWED_FORMATS - {'MPO'})}", 415)
            # Checked before decoding pixels: a small file can declare a huge canvas (decompression bomb).
            if image.width * image.height > max_pixels:
                raise ImageError("too_many_pixels", f"image is {image.width}x{image.height}; "
                                 f"at most {max_pixels} pixels", 413)
            image.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ImageError("not_an_image", "the upload is not a readable image") from exc
        raise ImageError("too_many_pixels", str(exc), 413) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise ImageError("corrupt_image", f"the image could not be decoded ({exc})") from exc
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a readable image
        pass
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1e-12)
        return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
