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
from app.services.budget import TooLargeToDecode
from model.decode import ImageError, decode_image, header_size_and_cost


@dataclass
class CropIn:
    """One face to import: encoded crop bytes plus the metadata stored with it on the source gallery."""
    crop: bytes
    source_sha256: str
    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    crop_margin: int


MIN_CROP_STD = 2.0  # a real face crop varies; a flat (constant) image embeds to noise that matches anyone


def _header(item: CropIn, i: int, size: int, max_pixels: int) -> int:
    """The crop's decode cost, after checking from its header alone that it is `size` x `size` (422 otherwise):
    a small PNG may declare a huge canvas, which must be refused before it is decoded."""
    try:
        (width, height), cost = header_size_and_cost(item.crop, max_pixels)
    except ImageError as exc:
        raise AppError(exc.status, exc.code, f"crop {i}: {exc.message}") from exc
    if (width, height) != (size, size):
        raise AppError(422, "crop_size_mismatch", f"crop {i} is {width}x{height} px; the serving model "
                       f"embeds {size}x{size} px crops")
    return cost


def _decode(item: CropIn, i: int, size: int, max_pixels: int) -> np.ndarray:
    try:
        image = decode_image(item.crop, max_pixels)
    except ImageError as exc:
        raise AppError(exc.status, exc.code, f"crop {i}: {exc.message}") from exc
    if image.size != (size, size):  # EXIF orientation cannot change a square's size; checked all the same
        raise AppError(422, "crop_size_mismatch", f"crop {i} is {image.width}x{image.height} px; the serving "
                       f"model embeds {size}x{size} px crops")
    crop = np.asarray(image, dtype=np.uint8)
    if float(crop.std()) < MIN_CROP_STD:
        raise AppError(422, "flat_crop", f"crop {i} is a flat image (no face in it)")
    return crop


async def _decode_crops(service: FaceService, items: list[CropIn], size: int) -> np.ndarray:
    """Every crop checked from its header first (nothing decoded while any is refused), then decoded one at a
    time under the service's decode budget, like every other image."""
    max_pixels = service.settings.max_image_pixels
    costs = [await run_in_threadpool(_header, item, i, size, max_pixels) for i, item in enumerate(items)]
    budget = service.decode_budget.for_request()
    crops = []
    for i, (item, cost) in enumerate(zip(items, costs)):
        try:
            async with service.decode_budget.hold(cost, budget):
                crops.append(await run_in_threadpool(_decode, item, i, size, max_pixels))
        except TooLargeToDecode as exc:
            raise AppError(413, "image_too_large_to_decode", f"crop {i}: {exc}") from exc
    return np.stack(crops)


async def import_crops(service: FaceService, label: str, items: list[CropIn]):
    """Add `items` to identity `label` (created if new) in one transaction, embedded by the serving model
    (and by a hot-swap candidate, as enrollment does). Returns (identity, faces, created, embedder).
    Not idempotent by itself: the client decides what is missing (see app/cli.py import)."""
    embedder = service.serving.embedder
    size = embedder.preprocessing.image_size
    crops = await _decode_crops(service, items, size)  # every crop is checked before anything is stored
    vectors = await service.embed_crops(embedder, crops)
    new_faces = [NewFace(crop=crop, crop_margin=item.crop_margin, source_sha256=item.source_sha256,
                         box=[float(x) for x in item.box], landmarks=[[float(x), float(y)] for x, y in item.landmarks],
                         detection_score=float(item.detection_score), embeddings={embedder.version: vec})
                 for crop, item, vec in zip(crops, items, vectors)]
    for nf, more in zip(new_faces, await service.extra_embeddings(new_faces, embedder)):
        nf.embeddings.update(more)
    ident, rows, created = await run_in_threadpool(service.store.enroll, label, new_faces)
    return ident, rows, created, embedder
