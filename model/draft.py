"""Large JPEG uploads: detect on a copy decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's
draft mode: several times cheaper than decoding every pixel and resizing), and cut each face crop from the
full-resolution image whenever the reduced copy has fewer pixels across the crop than the crop itself, so
that small faces lose nothing. The full image is decoded only when some face needs it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

import io
import math
import warnings

from PIL import ImageOps

from model import align
from model.decode import decode_image, to_rgb


class DraftImage:
    """A reduced decode standing in for the full image: `width`, `height` and `size` are the full image's,
    and boxes given to `crop` are in full-resolution coordinates."""

    def __init__(self, data: bytes, reduced: Image.Image, scale: int, full_size: tuple[int, int], max_pixels: int):
        self.data, self.reduced, self.scale, self.max_pixels = data, reduced, scale, max_pixels
        self.size = full_size
        self.width, self.height = full_size
        self._full: Image.Image | None = None

    def full(self) -> Image.Image:
        if self._full is None:
            self._full = decode_image(self.data, self.max_pixels)
        return self._full

    @property
    def decoded_full(self) -> bool:
        return self._full is not None

    def crop(self, box, image_size: int, margin: int) -> np.ndarray:
        """The face crop, from the reduced copy when it has at least `image_size` pixels across the crop
        region (the crop is resized down to that anyway), else from the full-resolution image."""
        x1, y1, x2, y2 = align.crop_box(box, self.width, self.height, image_size, margin)
        if min(x2 - x1, y2 - y1) / self.scale >= image_size:
            return align.crop(self.reduced, np.asarray(box, dtype=np.float64) / self.scale, image_size, margin)
        return align.crop(self.full(), box, image_size, margin)


def decode_reduced(data: bytes, max_pixels: int, draft_side: int) -> tuple[Image.Image, int, tuple[int, int]]:
    """(image, k, full size): a JPEG at least twice `draft_side` on its longer side decoded at 1/k scale
    (k = 2, 4 or 8, the largest that keeps the longer side at least `draft_side`), oriented and RGB; any
    other image, or anything this fast path cannot read, goes through decode_image (with its checks and
    errors) with k = 1. The full size is the oriented one, as decode_image would give."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            stored = image.size
            if (image.format not in ("JPEG", "MPO") or max(stored) < 2 * draft_side
                    or stored[0] * stored[1] > max_pixels):
                raise ValueError("not for the fast path")
            r = draft_side / max(stored)
            image.draft(image.mode, (math.ceil(stored[0] * r), math.ceil(stored[1] * r)))
            image.load()
    except Exception:  # noqa: BLE001 - decode_image gives the limits' and the corrupt data's own errors
        whole = decode_image(data, max_pixels)
        return whole, 1, whole.size
    k = round(max(stored) / max(image.size))
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - as decode_image: a broken EXIF block must not reject the image
        pass
    image = to_rgb(image)
    same_way = (image.width >= image.height) == (stored[0] >= stored[1])
    return image, k, stored if same_way else stored[::-1]


def decode_for_detection(data: bytes, max_pixels: int, detect_side: int) -> Image.Image | DraftImage:
    """A DraftImage when `data` is a JPEG at least twice `detect_side` on its longer side; else the
    decoded image itself (decode_image)."""
    reduced, scale, full_size = decode_reduced(data, max_pixels, detect_side)
    if scale == 1:
        return reduced
    return DraftImage(data, reduced, scale, full_size, max_pixels)
