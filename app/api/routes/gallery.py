"""Gallery management: list, get, rename, merge and delete identities; suspected duplicates and "not the same
person"; get, move and delete faces."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep, StoreDep
from app.core.errors import AppError
from app.core.security import ReadKey, WriteKey
from app.gallery.models import MAX_ID, Face, Identity
from app.schemas import (
    DuplicatesPage,
    ErrorResponse,
    FaceMove,
    FaceMoved,
    FacePublic,
    IdentitiesPage,
    IdentityDetail,
    IdentityMerge,
    IdentityPublic,
    IdentityUpdate,
    NotDuplicate,
    SearchText,
)
from app.services import gallery as edits

router = APIRouter(tags=["gallery"], responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                                                 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
NOT_FOUND = {404: {"model": ErrorResponse}}
IdentityId = Annotated[int, Path(ge=1, le=MAX_ID, description="identity id")]
FaceId = Annotated[int, Path(ge=1, le=MAX_ID, description="face id")]


def face_public(f: Face) -> dict:
    return FacePublic.model_validate(f).model_dump()


def identity_public(ident: Identity, face_count: int) -> dict:
    return {"id": ident.id, "label": ident.label, "face_count": face_count,
            "created_at": ident.created_at, "updated_at": ident.updated_at, "cover_face_id": ident.cover_face_id}


async def identity_out(store: StoreDep, ident: Identity) -> dict:
    """An identity as answers show it, its faces counted in the database (off the event loop)."""
    return identity_public(ident, await run_in_threadpool(edits.face_count, store, ident.id))


_missing = edits.missing


@router.get("/identities", response_model=IdentitiesPage, summary="List identities (paginated)")
async def list_identities(store: StoreDep, _key: ReadKey, offset: int = Query(0, ge=0, le=10**9), limit: int = Query(50, ge=1, le=500),
                          prefix: SearchText | None = Query(None, max_length=200, description="label prefix filter"),
                          q: SearchText | None = Query(None, max_length=200,
                                                       description="labels containing this, any case"),
                          sort: Literal["id", "label", "faces", "newest"] = Query(
                              "id", description="id (oldest first), label (A to Z, any case), faces (most first), "
                              "newest")) -> dict:
    rows, total = await run_in_threadpool(store.list_identities, offset, limit, prefix, q, sort)
    return {"items": [identity_public(i, n) for i, n in rows], "total": total, "offset": offset, "limit": limit}


@router.get("/identities/duplicates", response_model=DuplicatesPage,
            summary="Suspected duplicate identities: pairs whose faces score as one person, strongest first")
async def list_duplicates(service: ServiceDep, _key: ReadKey, offset: int = Query(0, ge=0, le=10**9),
                          limit: int = Query(50, ge=1, le=500)) -> dict:
    found = await run_in_threadpool(service.duplicates.list, service.serving.embedder)
    page = found.pairs[offset: offset + limit]
    idents = await run_in_threadpool(service.store.identities_by_id, [i for p in page for i in (p.a, p.b)])
    def pub(i: int) -> dict:
        return identity_public(idents[i][0], idents[i][1])

    items = [{"a": pub(p.a), "b": pub(p.b), "score": p.score}
             for p in page if p.a in idents and p.b in idents]  # one deleted meanwhile: left out
    return {"items": items, "total": len(found.pairs), "offset": offset, "limit": limit,
            "threshold": None if found.threshold is None else round(found.threshold, 4),
            "model_version": found.version, "stale": found.stale}


@router.post("/identities/{identity_id}/not-duplicate", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
             summary="Say that two identities are different people: no longer suggested as duplicates")
async def mark_not_duplicate(identity_id: IdentityId, body: NotDuplicate, service: ServiceDep,
                             _key: WriteKey) -> Response:
    if body.identity_id == identity_id:
        raise AppError(422, "same_identity", "an identity is always the same person as itself")
    await run_in_threadpool(edits.mark_distinct, service.duplicates, identity_id, body.identity_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/identities/{identity_id}/not-duplicate/{other_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=NOT_FOUND, summary="Forget that two identities were said to be different people")
async def unmark_not_duplicate(identity_id: IdentityId, other_id: IdentityId, service: ServiceDep,
                               _key: WriteKey) -> Response:
    if other_id == identity_id:
        raise AppError(422, "same_identity", "an identity is always the same person as itself")
    if not await run_in_threadpool(service.duplicates.unmark_distinct, identity_id, other_id):
        raise AppError(404, "unknown_pair", f"identities {identity_id} and {other_id} were not marked as different")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/identities/{identity_id}", response_model=IdentityDetail, responses=NOT_FOUND,
            summary="One identity with its faces")
async def get_identity(identity_id: IdentityId, store: StoreDep, _key: ReadKey) -> dict:
    ident = await run_in_threadpool(store.get_identity, identity_id, False)  # faces without their crops
    if ident is None:
        raise _missing("identity", identity_id)
    return {**identity_public(ident, len(ident.faces)), "faces": [face_public(f) for f in ident.faces]}


@router.patch("/identities/{identity_id}", response_model=IdentityPublic,
              responses={**NOT_FOUND, 409: {"model": ErrorResponse}},
              summary="Rename an identity and/or choose the face its gallery card shows")
async def update_identity(identity_id: IdentityId, body: IdentityUpdate, store: StoreDep, _key: WriteKey) -> dict:
    cover = "cover_face_id" in body.model_fields_set
    if body.label is not None:  # both in one transaction: a bad cover changes nothing, its error before a taken label
        ident = await run_in_threadpool(edits.rename, store, identity_id, body.label, cover, body.cover_face_id)
    else:
        ident = await run_in_threadpool(edits.set_cover, store, identity_id, body.cover_face_id)
    return await identity_out(store, ident)


@router.delete("/identities/{identity_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
               summary="Delete an identity and all its faces")
async def delete_identity(identity_id: IdentityId, store: StoreDep, _key: WriteKey) -> Response:
    if not await run_in_threadpool(store.delete_identity, identity_id):
        raise _missing("identity", identity_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/identities/{identity_id}/merge", response_model=IdentityPublic, responses=NOT_FOUND,
             summary="Merge another identity into this one: its faces move here and it is deleted")
async def merge_identity(identity_id: IdentityId, body: IdentityMerge, store: StoreDep, _key: WriteKey) -> dict:
    if body.from_identity_id == identity_id:
        raise AppError(422, "merge_into_self", "an identity cannot be merged into itself")
    ident = await run_in_threadpool(store.merge, identity_id, body.from_identity_id)
    if ident is None:
        missing = identity_id if await run_in_threadpool(store.get_identity, identity_id) is None \
            else body.from_identity_id
        raise _missing("identity", missing)
    return await identity_out(store, ident)


async def _face_or_404(store: StoreDep, face_id: int) -> Face:
    return await run_in_threadpool(edits.face, store, face_id)


@router.get("/faces/{face_id}", response_model=FacePublic, responses=NOT_FOUND, summary="One enrolled face")
async def get_face(face_id: FaceId, store: StoreDep, _key: ReadKey) -> dict:
    return face_public(await _face_or_404(store, face_id))


@router.get("/faces/{face_id}/crop", responses={**NOT_FOUND, 200: {"content": {"image/png": {}}}},
            response_class=Response, summary="The aligned face crop stored for re-embedding (PNG)")
async def get_face_crop(face_id: FaceId, store: StoreDep, _key: ReadKey) -> Response:
    return Response((await _face_or_404(store, face_id)).crop_png, media_type="image/png")


@router.delete("/faces/{face_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND,
               summary="Delete one face (its identity goes too if it was the last)")
async def delete_face(face_id: FaceId, store: StoreDep, _key: WriteKey) -> Response:
    if not await run_in_threadpool(store.delete_face, face_id):
        raise _missing("face", face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/faces/{face_id}/move", response_model=FaceMoved, responses={**NOT_FOUND, 409: {"model": ErrorResponse}},
             summary="Move a face to another identity, or to the identity with a label (created if new)")
async def move_face(face_id: FaceId, body: FaceMove, store: StoreDep, _key: WriteKey) -> dict:
    if (body.identity_id is None) == (body.label is None):
        raise AppError(422, "invalid_request", "give exactly one of identity_id or label")
    face, ident, created, emptied = await run_in_threadpool(edits.move_face, store, face_id, body.identity_id,
                                                           body.label)
    return {"face": face_public(face), "identity": await identity_out(store, ident), "created": created,
            "deleted_identity_id": emptied}
