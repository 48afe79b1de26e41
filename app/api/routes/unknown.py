"""Unknown faces kept by choice (remember_unknown) and their clusters: list, look, name (enroll), dismiss, delete,
remove one face, re-cluster now, purge. Read scope to look, write scope to change: as the gallery; nothing of it
for an `identify` key."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api.deps import ServiceDep
from app.api.routes.gallery import face_public, identity_out
from app.core.security import ReadKey, WriteKey
from app.gallery.models import MAX_ID
from app.schemas import (
    EnrollResponse,
    ErrorResponse,
    UnknownClusterDetail,
    UnknownClustersPage,
    UnknownEnrollRequest,
    UnknownFacePublic,
    UnknownPurgeOut,
    UnknownRefineOut,
)

router = APIRouter(tags=["unknown"], responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                                                 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
NOT_FOUND = {404: {"model": ErrorResponse}}
ClusterId = Annotated[int, Path(ge=1, le=MAX_ID, description="unknown cluster id")]
UnknownFaceId = Annotated[int, Path(ge=1, le=MAX_ID, description="kept unknown face id")]


def _detail(brief: dict, faces) -> dict:
    return {**brief, "faces": [UnknownFacePublic.model_validate(f).model_dump() for f in faces]}


@router.get("/unknown", response_model=UnknownClustersPage,
            summary="People seen but not enrolled: clusters of kept unknown faces, largest first (paginated)")
async def list_unknown(service: ServiceDep, _key: ReadKey, offset: int = Query(0, ge=0, le=10**9),
                       limit: int = Query(50, ge=1, le=500),
                       min_faces: int = Query(2, ge=1, le=10**6, description="clusters of at least this many faces"),
                       dismissed: bool = Query(False, description="list the dismissed clusters instead")) -> dict:
    items, total = await service.unknown.list(offset, limit, min_faces, dismissed)
    return {"items": items, "total": total, "offset": offset, "limit": limit}


@router.delete("/unknown", response_model=UnknownPurgeOut, summary="Delete every kept unknown face and cluster")
async def purge_unknown(service: ServiceDep, _key: WriteKey) -> dict:
    return {"deleted_faces": await service.unknown.purge()}


@router.post("/unknown/refine", response_model=UnknownRefineOut, responses={503: {"model": ErrorResponse}},
             summary="Re-cluster every kept unknown face now (it also runs in the background)")
async def refine_unknown(service: ServiceDep, _key: WriteKey) -> dict:
    return (await service.unknown.refine()).__dict__


@router.get("/unknown/faces/{face_id}/crop", responses={**NOT_FOUND, 200: {"content": {"image/png": {}}}},
            response_class=Response, summary="A kept unknown face's aligned crop (PNG)")
async def unknown_face_crop(face_id: UnknownFaceId, service: ServiceDep, _key: ReadKey) -> Response:
    return Response((await service.unknown.face(face_id)).crop_png, media_type="image/png")


@router.delete("/unknown/faces/{face_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
               summary="Remove one face from its cluster (deleted)")
async def delete_unknown_face(face_id: UnknownFaceId, service: ServiceDep, _key: WriteKey) -> Response:
    await service.unknown.delete_face(face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/unknown/{cluster_id}", response_model=UnknownClusterDetail, responses=NOT_FOUND,
            summary="One cluster and its faces")
async def get_unknown(cluster_id: ClusterId, service: ServiceDep, _key: ReadKey) -> dict:
    return _detail(*await service.unknown.get(cluster_id))


@router.post("/unknown/{cluster_id}/enroll", response_model=EnrollResponse, status_code=status.HTTP_201_CREATED,
             responses={**NOT_FOUND, 409: {"model": ErrorResponse}},
             summary="Name a cluster: its faces join identity `label` (created if new) or `identity_id`, in one step")
async def enroll_unknown(cluster_id: ClusterId, body: UnknownEnrollRequest, service: ServiceDep,
                         _key: WriteKey) -> dict:
    ident, rows, created = await service.unknown.enroll(cluster_id, body.label, body.identity_id)
    service.events.poke()  # its `enroll` event committed with it
    return {"model_version": service.serving.embedder.version, "created": created,
            "identity": await identity_out(service.store, ident), "faces": [face_public(f) for f in rows],
            "warnings": []}


@router.post("/unknown/{cluster_id}/dismiss", response_model=UnknownClusterDetail, responses=NOT_FOUND,
             summary="Never suggest this cluster again (its faces stay together; new ones still join it)")
async def dismiss_unknown(cluster_id: ClusterId, service: ServiceDep, _key: WriteKey) -> dict:
    return _detail(*await service.unknown.dismiss(cluster_id))


@router.delete("/unknown/{cluster_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
               summary="Delete a cluster and its faces")
async def delete_unknown(cluster_id: ClusterId, service: ServiceDep, _key: WriteKey) -> Response:
    await service.unknown.delete(cluster_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
