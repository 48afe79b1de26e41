"""Face crops for the embedder: MTCNN box plus margin, resized to a square (facenet-pytorch's extract_face)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def crop_box(box, image_width: int, image_height: int, image_size: int = 160, margin: int = 0) -> tuple[int, int, int, int]:
    """Integer crop region for `box`, with `margin` counted in pixels of the output crop, clamped to the image."""
    mx = margin * (box[2] - box[0]) / (image_size - margin)
    my = margin * (box[3] - box[1]) / (image_size - margin)
    return (int(max(box[0] - mx / 2, 0)), int(max(box[1] - my / 2, 0)),
            int(min(box[2] + mx / 2, image_width)), int(min(box[3] + my / 2, image_height)))


def crop(image: Image.Image, box, image_size: int = 160, margin: int = 0) -> np.ndarray:
    """(image_size, image_size, 3) uint8 RGB face crop."""
    region = crop_box(box, image.width, image.height, image_size, margin)
    return np.asarray(image.crop(region).resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre_box(width: int, height: int, fraction: float = 0.5) -> np.ndarray:
    """A centred square box covering `fraction` of the shorter side (used when no face is detected)."""
    side = min(width, height) * fraction
    cx, cy = width / 2, height / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=np.float32)
