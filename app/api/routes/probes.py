"""Recent identifications: the faces of /identify answers that are kept anyway for feedback (probes, within
FACEID_PROBE_RETENTION_S), newest first, with their crops. Faces are biometric data: the read scope, as for the
gallery's crops; an identify-only key sees none."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import ServiceDep
from app.core.security import ReadKey
from app.gallery.models import MAX_ID, Probe
from app.schemas import ErrorResponse, ProbesPage

router = APIRouter(tags=["probes"], responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                                                422: {"model": ErrorResponse}})
ProbeId = Annotated[int, Path(ge=1, le=MAX_ID, description="probe id")]


def probe_public(p: Probe, labels: dict[int, str]) -> dict:
    top = p.top_identity_id
    return {"id": p.id, "status": p.status,
            "top_identity": {"id": top, "label": labels[top]} if top in labels else None,
            "top_score": p.top_score, "box": p.box, "detection_score": p.detection_score,
            "source_sha256": p.source_sha256, "model_version": p.model_version, "created_at": p.created_at,
            "expires_at": p.expires_at}


@router.get("/probes", response_model=ProbesPage, summary="Recent identifications: the faces of /identify answers "
            "still kept (FACEID_PROBE_RETENTION_S), newest first")
async def list_probes(service: ServiceDep, _key: ReadKey, offset: int = Query(0, ge=0, le=10**9),
                      limit: int = Query(50, ge=1, le=500)) -> dict:
    rows, total = await service.feedback.probes(offset, limit)
    labels = await service.feedback.labels([r.top_identity_id for r in rows])
    return {"items": [probe_public(r, labels) for r in rows], "total": total, "offset": offset, "limit": limit}


@router.get("/probes/{probe_id}/crop", responses={404: {"model": ErrorResponse}, 200: {"content": {"image/png": {}}}},
            response_class=Response, summary="The aligned face crop of a kept probe (PNG)")
async def get_probe_crop(probe_id: ProbeId, service: ServiceDep, _key: ReadKey) -> Response:
    return Response((await service.feedback.probe(probe_id)).crop_png, media_type="image/png")
