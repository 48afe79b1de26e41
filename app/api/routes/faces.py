"""POST /embed, /enroll, /identify, /verify: thin routes over FaceService."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request, status

from app.api.deps import ServiceDep, SettingsDep
from app.api.inputs import first_image, form_box, form_int, form_label, multipart_schema, parse_body, request_body
from app.api.routes.gallery import face_public, identity_out
from app.core.security import IdentifyKey, ReadKey, WriteKey, requester
from app.core.timing import stage
from app.schemas import (
    EmbedResponse,
    EnrollJSON,
    EnrollResponse,
    ErrorResponse,
    IdentifyResponse,
    ImageJSON,
    VerifyJSON,
    VerifyResponse,
)
from app.core.errors import AppError
from app.services.operating_point import operating_point_public

router = APIRouter(tags=["faces"])
ERRORS = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
          503: {"model": ErrorResponse}}
_ONE_IMAGE = request_body(multipart_schema({"file": False}, required=["file"]), ImageJSON,
                          "one image: multipart field `file`, or JSON `{\"image\": \"<base64>\"}`")


def _face_out(f) -> dict:
    return {"box": [float(x) for x in f.box], "landmarks": f.landmarks.tolist(), "detection_score": f.score}


@router.post("/embed", response_model=EmbedResponse, responses=ERRORS, openapi_extra=_ONE_IMAGE,
             summary="Detect every face in an image and return its 512-d embedding")
async def embed(request: Request, service: ServiceDep, settings: SettingsDep, _key: ReadKey) -> dict:
    images, _ = await parse_body(request, ImageJSON, {"file": (1, 1)}, 1)
    data = first_image(images, "file", "image")
    r = await service.analyse(data)
    return {"model_version": r.embedder.version, "image_width": r.width, "image_height": r.height,
            "faces": [{**_face_out(f), "embedding": f.embedding.tolist()} for f in r.faces]}


@router.post("/enroll", response_model=EnrollResponse, status_code=status.HTTP_201_CREATED, responses=ERRORS,
             summary="Add faces to an identity (created if new)",
             openapi_extra=request_body(multipart_schema(
                 {"files": True}, {"label": {"type": "string", "minLength": 1, "maxLength": 200},
                                   "face_index": {"type": "integer", "minimum": 0},
                                   "face_box": {"type": "string", "description": "x1,y1,x2,y2", "example": "10,20,110,140"}},
                 required=["files", "label"]), EnrollJSON,
                 "label plus one or more images, each with exactly one usable face unless face_index/face_box says which"))
async def enroll(request: Request, service: ServiceDep, settings: SettingsDep, _key: WriteKey) -> dict:
    n = settings.max_images_per_request
    images, fields = await parse_body(request, EnrollJSON, {"files": (1, n)}, n)
    data = images.get("files") or images.get("images") or []
    if len(data) > n:
        raise AppError(413, "too_many_files", f"at most {n} images per request")
    label = form_label(fields)
    face_index = form_int(fields, "face_index", 0)  # a form string or a JSON integer
    face_box = form_box(fields, "face_box")
    ident, rows, created, embedder, faces = await service.enroll(label, data, face_index, face_box)
    warnings = await service.possible_duplicates(embedder, ident.id, faces)
    return {"model_version": embedder.version, "created": created,
            "identity": await identity_out(service.store, ident), "faces": [face_public(f) for f in rows],
            "warnings": warnings}


@router.post("/identify", response_model=IdentifyResponse, responses=ERRORS, openapi_extra=_ONE_IMAGE,
             summary="Identify every face in an image against the gallery")
async def identify(request: Request, service: ServiceDep, settings: SettingsDep, _key: IdentifyKey,
                   top_k: int | None = Query(None, ge=1, le=100, description="matches per face"),
                   threshold: float | None = Query(None, ge=-1.0, le=1.0,
                                                   description="cosine threshold; default: the operating point "
                                                   "for FACEID_TARGET_FPIR and this gallery"),
                   remember_unknown: bool | None = Query(None, description="keep the faces answered `unknown` and "
                                                         "cluster them into people to name (GET /unknown; write "
                                                         "scope); default: FACEID_REMEMBER_UNKNOWN")) -> dict:
    if remember_unknown and _key is not None and "write" not in _key.granted():
        raise AppError(403, "forbidden", "remember_unknown keeps faces: it needs a key with the 'write' scope")
    images, _ = await parse_body(request, ImageJSON, {"file": (1, 1)}, 1)
    data = first_image(images, "file", "image")
    remember = service.settings.remember_unknown if remember_unknown is None else remember_unknown  # its collection's
    r, decisions, op, probe_ids, kept = await service.identify(data, top_k or service.settings.top_k, threshold,
                                                               requester(request, _key), remember)
    if kept is None:  # not kept with the probes (no probe kept): on their own
        kept = [None] * len(decisions)
        if remember:
            with stage("unknown"):
                kept = await service.unknown.keep(r, decisions)
    decision_only = _key is not None and "read" not in _key.granted()
    if decision_only:  # an identify key learns nothing of the kept faces
        kept = [None] * len(decisions)
    faces = [{**_face_out(f), "status": d.status, "quality_problem": d.quality_problem,
              "identity": {"id": d.identity.identity_id, "label": d.identity.label} if d.identity else None,
              **(_decision_only(d) if decision_only else {"score": d.score, "matches": [_match_out(m) for m in d.matches]}),
              "probe_id": pid, "threshold": d.threshold,
              "unknown_face_id": k.face_id if k else None, "cluster_id": k.cluster_id if k else None}
             for f, d, pid, k in zip(r.faces, decisions, probe_ids, kept)]
    return {"model_version": r.embedder.version, "threshold": op.cosine_threshold, "target_fpir": op.target_fpir,
            "operating_point": operating_point_public(op), "faces": faces}


def _decision_only(d) -> dict:
    """An `identify`-scope key gets the decision and nothing about identities that did not match: the matched
    identity's entry alone (no other labels or face ids, and no best score of an unknown face)."""
    if d.status != "match" or d.identity is None:
        return {"score": None, "matches": []}
    return {"score": d.score, "matches": [_match_out(m) for m in d.matches if m.identity_id == d.identity.identity_id][:1]}


def _match_out(m) -> dict:
    """A search match as answers show it (`MatchOut`)."""
    return {"identity_id": m.identity_id, "label": m.label, "face_id": m.face_id, "score": m.score}


@router.post("/verify", response_model=VerifyResponse, responses={**ERRORS, 404: {"model": ErrorResponse}},
             summary="1:1 verification: two images, or an image and an enrolled identity",
             openapi_extra=request_body(multipart_schema(
                 {"file": False, "file_b": False},
                 {"identity_id": {"type": "integer"}, "face_index": {"type": "integer", "minimum": 0},
                  "face_box": {"type": "string", "description": "x1,y1,x2,y2"},
                  "face_index_b": {"type": "integer", "minimum": 0},
                  "face_box_b": {"type": "string", "description": "x1,y1,x2,y2"}}, required=["file"]),
                 VerifyJSON, "`file` plus either `file_b` or `identity_id` (JSON: image + image_b | identity_id); "
                 "face_index / face_box (and face_index_b / face_box_b) pick the face of an image with several, "
                 "else its largest face is compared (the answer's `faces` says which)"))
async def verify(request: Request, service: ServiceDep, _key: IdentifyKey,
                 threshold: float | None = Query(None, ge=-1.0, le=1.0)) -> dict:
    images, fields = await parse_body(request, VerifyJSON, {"file": (1, 1), "file_b": (0, 1)}, 2)
    a = first_image(images, "file", "image")
    b = first_image(images, "file_b", "image_b")
    identity_id = form_int(fields, "identity_id")
    if (b is None) == (identity_id is None):
        raise AppError(422, "invalid_request",
                       "give exactly one of a second image (file_b / image_b) or identity_id")
    pick_a = (form_int(fields, "face_index", 0), form_box(fields, "face_box"))
    pick_b = (form_int(fields, "face_index_b", 0), form_box(fields, "face_box_b"))
    if b is None and pick_b != (None, None):
        raise AppError(422, "invalid_request", "face_index_b and face_box_b pick a face of image_b, which is not given")
    if b is not None:
        score, op, embedder, used = await service.verify_images(a, b, threshold, pick_a, pick_b)
    else:
        score, op, embedder, used = await service.verify_identity(a, identity_id, threshold, pick_a)
    return {"model_version": embedder.version, "same_person": score >= op.threshold, "score": score,
            "threshold": op.threshold, "target_far": op.target_far, "operating_point": operating_point_public(op),
            "faces": used}
