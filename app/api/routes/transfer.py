"""Gallery transfer and resumable enrollment: look faces up by source image hash; import stored aligned crops."""
from __future__ import annotations

import base64
import binascii
import re

from fastapi import APIRouter, Query, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep, SettingsDep, StoreDep
from app.api.routes.gallery import face_public, identity_out
from app.core.errors import AppError
from app.core.security import ReadKey, WriteKey
from app.schemas import EnrollResponse, ErrorResponse, FacesBySource, FacesImport
from app.services.transfer import CropIn, import_crops

router = APIRouter(tags=["gallery"], responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                                                 422: {"model": ErrorResponse}})
MAX_HASHES = 100
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@router.get("/faces", response_model=FacesBySource, summary="Stored faces by the SHA-256 of their source image",
            description=f"Up to {MAX_HASHES} `source_sha256` values (repeat the parameter). A client that enrolls "
            "a folder skips the files whose hash is already there, so an interrupted run can resume.")
async def faces_by_source(store: StoreDep, _key: ReadKey,
                          source_sha256: list[str] = Query(..., description="SHA-256 of an uploaded image (hex)")) -> dict:
    if not 1 <= len(source_sha256) <= MAX_HASHES:
        raise AppError(422, "invalid_field", f"give 1 to {MAX_HASHES} source_sha256 values, got {len(source_sha256)}")
    bad = [h for h in source_sha256 if not _SHA256.match(h)]
    if bad:
        raise AppError(422, "invalid_field", "source_sha256 must be 64 lowercase hex digits")
    rows = await run_in_threadpool(store.faces_by_source, sorted(set(source_sha256)))
    return {"items": [{**face_public(f), "label": label} for f, label in rows]}


def _crop_bytes(value: str, i: int) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AppError(422, "invalid_base64", f"faces[{i}].crop is not valid base64") from exc
    if not data:
        raise AppError(422, "empty_image", f"faces[{i}].crop is empty")
    return data


@router.post("/faces/import", response_model=EnrollResponse, status_code=status.HTTP_201_CREATED,
             responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                        415: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
             summary="Add stored aligned face crops to an identity (created if new), without detection",
             description="For moving a gallery (`faceid import`): each crop is embedded by the serving model as it "
             "is; a crop whose size differs from the model's input size is refused (422 crop_size_mismatch). "
             "Not idempotent by itself: the client sends only what is missing.")
async def import_faces(body: FacesImport, service: ServiceDep, settings: SettingsDep, _key: WriteKey) -> dict:
    n = settings.max_images_per_request
    if len(body.faces) > n:
        raise AppError(413, "too_many_files", f"at most {n} faces per request")
    items = [CropIn(crop=_crop_bytes(f.crop, i), source_sha256=f.source_sha256, box=f.box, landmarks=f.landmarks,
                    detection_score=f.detection_score, crop_margin=f.crop_margin) for i, f in enumerate(body.faces)]
    ident, rows, created, embedder = await import_crops(service, body.label, items)
    return {"model_version": embedder.version, "created": created,
            "identity": await identity_out(service.store, ident), "faces": [face_public(f) for f in rows]}
