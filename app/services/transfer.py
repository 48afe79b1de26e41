"""Moving a gallery between servers: add stored aligned crops to the gallery without detecting faces again.

An export archive carries each face's aligned crop (what the embedder saw) and the metadata it was stored
with; importing embeds those crops with the serving model, so no original photo is needed and no face is
detected again. A crop must have the serving model's input size: a different preprocessing would give
embeddings that do not compare with the rest of the gallery.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.gallery.store import NewFace
from app.core.errors import AppError
from app.services.recognition import FaceService
from model.decode import ImageError, decode_image


@dataclass
class CropIn:
    """One face to import: encoded crop bytes plus the metadata stored with it on the source gallery."""
    crop: bytes
    source_sha256: str
    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    crop_margin: int


def _decode_crops(items: list[CropIn], size: int, max_pixels: int) -> np.ndarray:
    crops = []
    for i, item in enumerate(items):
        try:
            image = decode_image(item.crop, max_pixels)
        except ImageError as exc:
            raise AppError(exc.status, exc.code, f"crop {i}: {exc.message}") from exc
        if image.size != (size, size):
            raise AppError(422, "crop_size_mismatch", f"crop {i} is {image.width}x{image.height} px; the serving model "
                           f"embeds {size}x{size} px crops")
        crops.append(np.asarray(image, dtype=np.uint8))
    return np.stack(crops)


async def import_crops(service: FaceService, label: str, items: list[CropIn]):
    """Add `items` to identity `label` (created if new) in one transaction, embedded by the serving model
    (and by a hot-swap candidate, as enrollment does). Returns (identity, faces, created, embedder).
    Not idempotent by itself: the client decides what is missing (see app/cli.py import)."""
    embedder = service.models.current
    size = embedder.preprocessing.image_size
    crops = await run_in_threadpool(_decode_crops, items, size, service.settings.max_image_pixels)
    vectors = await service.embed_crops(embedder, crops)
    new_faces = [NewFace(crop=crop, crop_margin=item.crop_margin, source_sha256=item.source_sha256,
                         box=[float(x) for x in item.box], landmarks=[[float(x), float(y)] for x, y in item.landmarks],
                         detection_score=float(item.detection_score), embeddings={embedder.version: vec})
                 for crop, item, vec in zip(crops, items, vectors)]
    for nf, more in zip(new_faces, await service.extra_embeddings(new_faces, embedder)):
        nf.embeddings.update(more)
    ident, rows, created = await run_in_threadpool(service.store.enroll, label, new_faces)
    return ident, rows, created, embedder
