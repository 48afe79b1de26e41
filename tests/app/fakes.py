"""Stand-ins for the two networks, so the service runs in process with no weights.

`FakeDetector` finds one "face" per distinct non-black colour of an image (its bounding box); scores come
from the colour (a blue channel of 1 scores 0.5, below the enrolment gate). `FakeEmbedder` maps a crop to
a unit vector seeded by its mean colour: the same colour gives the same vector (cosine 1), different
colours give nearly orthogonal ones. Everything else (decode, crop, batching, store, index) is real.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from app.core.config import Settings
from app.gallery.store import GalleryStore
from app.services.recognition import FaceService
from model.mtcnn import Detections
from model.pipeline import FacePipeline
from model.weights import Preprocessing

TILE, GAP = 80, 20


def tiles_png(colours: list[tuple[int, int, int]], size: int = TILE) -> bytes:
    """A PNG with one `size` px square per colour in a row, on black, `GAP` px apart (one face each)."""
    w = GAP + len(colours) * (size + GAP)
    arr = np.zeros((size + 2 * GAP, max(w, 2 * GAP + 1), 3), np.uint8)
    for i, c in enumerate(colours):
        x = GAP + i * (size + GAP)
        arr[GAP:GAP + size, x:x + size] = c
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class FakeDetector:
    """MTCNN's interface: detect(list of HxWx3 uint8 arrays) -> list[Detections]."""

    backend = "fake"

    def __init__(self):
        self.calls: list[int] = []  # images per call: shows batching
        self.min_sizes: list[list[float] | None] = []  # the smallest face asked for, per image, per call

    def detect(self, images: list[np.ndarray], min_sizes: list[float] | None = None) -> list[Detections]:
        self.calls.append(len(images))
        self.min_sizes.append(min_sizes)
        out = []
        for arr in images:
            arr = np.asarray(arr)
            packed = (arr[..., 0].astype(np.uint32) << 16) | (arr[..., 1].astype(np.uint32) << 8) | arr[..., 2]
            boxes, scores, marks = [], [], []
            for p in np.unique(packed):
                if p == 0:
                    continue
                c = ((p >> 16) & 255, (p >> 8) & 255, p & 255)
                ys, xs = np.nonzero(packed == p)
                x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0
                boxes.append([x1, y1, x2, y2])
                scores.append(0.5 if c[2] == 1 else 0.99)
                cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
                marks.append([[cx - w / 4, cy - h / 6], [cx + w / 4, cy - h / 6], [cx, cy],
                              [cx - w / 5, cy + h / 4], [cx + w / 5, cy + h / 4]])
            out.append(Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                                  np.array(marks, np.float32).reshape(-1, 5, 2)))
        return out


class FakeEmbedder:
    """`model.pipeline.Embedder`'s interface: an immutable snapshot with embed(crops) -> unit vectors."""

    def __init__(self, version: str = "fake-v1", seed: int = 0, thresholds: dict | None = None):
        self.name, self.version = version, version
        self.preprocessing = Preprocessing(image_size=32, margin=0, embedding_size=512)
        self.thresholds = thresholds if thresholds is not None else {"cosine": 0.5}
        self.device = torch.device("cpu")
        self.precision = self.precision_requested = "fp32"
        self.precision_reason = "fp32 requested"
        self.flip = False
        self.seed = seed
        self.calls: list[int] = []

    def embed(self, crops: np.ndarray, max_batch_size: int = 64) -> np.ndarray:
        self.calls.append(len(crops))
        out = np.zeros((len(crops), self.preprocessing.embedding_size), np.float32)
        for i, crop in enumerate(crops):
            colour = tuple(int(round(v)) for v in np.asarray(crop).reshape(-1, 3).mean(0))
            rng = np.random.default_rng([self.seed, *colour])
            v = rng.standard_normal(self.preprocessing.embedding_size)
            out[i] = v / np.linalg.norm(v)
        return out


def fake_service(settings: Settings, store: GalleryStore, embedder: FakeEmbedder | None = None) -> FaceService:
    """The real FaceService over `store`, with the fake networks (no reflection padding: the fake detector
    finds colours, and mirrored copies would merge with the originals)."""
    embedder = embedder or FakeEmbedder()
    pipeline = FacePipeline(FakeDetector(), embedder, settings.max_detect_side, edge_pad_fraction=0.0)
    return FaceService(settings, pipeline, embedder, store)
