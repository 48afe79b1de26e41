"""Feedback: report on a face of an /identify answer (or a new upload), list and delete the reports."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import ServiceDep
from app.api.inputs import first_image, form_box, form_int, multipart_schema, parse_body, request_body
from app.core.errors import AppError
from app.core.security import ReadKey, WriteKey, requester
from app.gallery.models import KINDS, MAX_ID, Feedback
from app.schemas import ErrorResponse, FeedbackJSON, FeedbackPage, FeedbackPublic

router = APIRouter(tags=["feedback"], responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                                                  403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
NOT_FOUND = {404: {"model": ErrorResponse}}
FeedbackId = Annotated[int, Path(ge=1, le=MAX_ID, description="feedback id")]

_BODY = request_body(multipart_schema(
    {"file": False}, {"kind": {"type": "string", "enum": list(KINDS)}, "identity_id": {"type": "integer"},
                      "probe_id": {"type": "integer"}, "face_index": {"type": "integer", "minimum": 0},
                      "face_box": {"type": "string", "description": "x1,y1,x2,y2"}}, required=["kind"]),
    FeedbackJSON, "kind, identity_id (for 'is' / 'is_not'), and either probe_id (a face of an earlier /identify "
    "answer) or an image (multipart `file` or JSON `image`) with face_index / face_box when it has several faces")


def feedback_public(row: Feedback, labels: dict[int, str]) -> dict:
    def ref(i):
        return {"id": i, "label": labels[i]} if i is not None and i in labels else None

    return {"id": row.id, "kind": row.kind, "identity": ref(row.identity_id),
            "answered_identity": ref(row.answered_identity_id), "answered_score": row.answered_score,
            "probe_id": row.probe_id, "model_version": row.model_version, "box": row.box, "landmarks": row.landmarks,
            "detection_score": row.detection_score, "source_sha256": row.source_sha256, "crop_size": row.crop_size,
            "crop_margin": row.crop_margin, "reported_by": row.reported_by, "created_at": row.created_at}


async def _public(service, rows: list[Feedback]) -> list[dict]:
    ids = [i for r in rows for i in (r.identity_id, r.answered_identity_id)]
    labels = await service.feedback.labels(ids)
    return [feedback_public(r, labels) for r in rows]


@router.post("/feedback", response_model=FeedbackPublic, status_code=status.HTTP_201_CREATED,
             responses={**NOT_FOUND, 409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                        503: {"model": ErrorResponse}},
             openapi_extra=_BODY, summary="Report on a face: it is identity X, it is not X, or it is nobody enrolled")
async def post_feedback(request: Request, service: ServiceDep, key: WriteKey) -> dict:
    images, fields = await parse_body(request, FeedbackJSON, {"file": (0, 1)}, 1)
    data = first_image(images, "file", "image")
    kind = fields.get("kind")
    if kind not in KINDS:
        raise AppError(422, "invalid_field", f"field 'kind' must be one of {list(KINDS)}")
    identity_id = form_int(fields, "identity_id", 1)
    probe_id = form_int(fields, "probe_id", 1)
    face_index = form_int(fields, "face_index", 0)
    face_box = form_box(fields, "face_box")
    if (probe_id is None) == (data is None):
        raise AppError(422, "invalid_request", "give exactly one of probe_id or an image")
    if probe_id is not None and (face_index is not None or face_box is not None):
        raise AppError(422, "invalid_request", "face_index and face_box pick a face of an image, not of a probe")
    reported_by = getattr(request.state, "api_key_name", None)
    if probe_id is not None:
        owner = None if key is not None and "admin" in key.granted() else requester(request, key)  # admins: any
        row = await service.feedback.report(kind, identity_id, probe_id=probe_id, reported_by=reported_by, owner=owner)
    else:
        row = await service.report_on_image(kind, identity_id, data, face_index, face_box, reported_by)
    return (await _public(service, [row]))[0]


@router.get("/feedback", response_model=FeedbackPage, summary="List reports (paginated, oldest first)")
async def list_feedback(service: ServiceDep, _key: ReadKey, offset: int = Query(0, ge=0, le=10**9),
                        limit: int = Query(50, ge=1, le=500),
                        kind: str | None = Query(None, pattern="^(is|is_not|nobody)$"),
                        identity_id: int | None = Query(None, ge=1, le=MAX_ID,
                                                        description="reports naming this identity")) -> dict:
    rows, total = await service.feedback.list(offset, limit, kind, identity_id)
    return {"items": await _public(service, rows), "total": total, "offset": offset, "limit": limit}


@router.get("/feedback/{feedback_id}", response_model=FeedbackPublic, responses=NOT_FOUND, summary="One report")
async def get_feedback(feedback_id: FeedbackId, service: ServiceDep, _key: ReadKey) -> dict:
    return (await _public(service, [await service.feedback.get(feedback_id)]))[0]


@router.get("/feedback/{feedback_id}/crop", responses={**NOT_FOUND, 200: {"content": {"image/png": {}}}},
            response_class=Response, summary="The aligned face crop the report is about (PNG)")
async def get_feedback_crop(feedback_id: FeedbackId, service: ServiceDep, _key: ReadKey) -> Response:
    return Response((await service.feedback.get(feedback_id)).crop_png, media_type="image/png")


@router.delete("/feedback/{feedback_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
               summary="Delete a report")
async def delete_feedback(feedback_id: FeedbackId, service: ServiceDep, _key: WriteKey) -> Response:
    await service.feedback.delete(feedback_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
