"""POST/GET /collections, GET/PATCH/DELETE /collections/{name} (admin scope, keys bound to no collection): the
collections themselves. Their galleries are the gallery routes under `/collections/{name}` (app/main.py mounts
them there as well as at `/`, which is the collection `default`)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from app.core.errors import AppError
from app.core.security import AdminKey, IdentifyKey
from app.api.deps import ServiceDep
from app.gallery.models import MAX_ID
from app.schemas import (CollectionCreate, CollectionDeleted, CollectionList, CollectionOut, CollectionUpdate,
                         ErrorResponse, Ready)
from app.services.collections import DEFAULT, NAME_PATTERN, Collections, public

router = APIRouter(prefix="/collections", tags=["collections"], responses={
    400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
    404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63,
                                     description="the collection (`default`: the gallery of the unprefixed routes)")]


def _collections(request: Request) -> Collections:
    return request.app.state.collections


def _default(request: Request) -> dict:
    return {"name": DEFAULT, "created_at": None, "settings": {}}


@router.post("", response_model=CollectionOut, status_code=status.HTTP_201_CREATED,
             responses={409: {"model": ErrorResponse}},
             summary="Make a collection: an isolated gallery with its own operating point and keys bound to it")
async def create_collection(body: CollectionCreate, request: Request, _key: AdminKey) -> dict:
    c = _collections(request)
    row = await run_in_threadpool(c.create, body.name, body.settings.model_dump(exclude_none=True))
    return public(row, {"identities": 0, "faces": 0})


@router.get("", response_model=CollectionList, summary="The collections (`default` first, then by name), with their "
            "counts (paginated): all of them for an admin key bound to none; a key bound to collections is shown "
            "those of its collections that exist, whatever its scope")
async def list_collections(request: Request, key: IdentifyKey, offset: int = Query(0, ge=0, le=MAX_ID),
                           limit: int = Query(100, ge=1, le=1000)) -> dict:
    c = _collections(request)
    if key is not None and key.collections is None and "admin" not in key.granted():
        raise AppError(403, "forbidden", "this key lacks the 'admin' scope")
    mine = None if key is None or key.collections is None else set(key.collections)

    def page():
        rows = [r for r in c.rows() if mine is None or r.name in mine]
        names = ([DEFAULT] if mine is None or DEFAULT in mine else []) + [r.name for r in rows]
        by_name = {r.name: r for r in rows}
        out = []
        for name in names[offset:offset + limit]:
            try:
                counts = c.counts(name)
            except AppError:  # deleted meanwhile
                continue
            out.append({**_default(request), "counts": counts} if name == DEFAULT else public(by_name[name], counts))
        return {"collections": out, "total": len(names), "offset": offset, "limit": limit}

    return await run_in_threadpool(page)


@router.get("/{collection}", response_model=CollectionOut, summary="One collection: its settings and counts")
async def get_collection(collection: CollectionName, request: Request, _key: AdminKey) -> dict:
    c = _collections(request)
    counts = await run_in_threadpool(c.counts, collection)
    if collection == DEFAULT:
        return {**_default(request), "counts": counts}
    row = await run_in_threadpool(c.row, collection)
    return public(row, counts)


@router.patch("/{collection}", response_model=CollectionOut, responses={409: {"model": ErrorResponse}},
              summary="Change a collection's settings (null: back to the service's)")
async def update_collection(collection: CollectionName, body: CollectionUpdate, request: Request,
                            _key: AdminKey) -> dict:
    if collection == DEFAULT:
        raise AppError(409, "default_collection", "the default collection's settings are the service's (FACEID_...)")
    overrides = body.settings.model_dump(exclude_unset=True)
    row = await run_in_threadpool(_collections(request).update, collection, overrides)
    return public(row)


@router.delete("/{collection}", response_model=CollectionDeleted, responses={409: {"model": ErrorResponse}},
               summary="Delete a collection and everything in it (nothing else); a crash half-way is finished at the "
                       "next start")
async def delete_collection(collection: CollectionName, request: Request, _key: AdminKey) -> dict:
    if collection == DEFAULT:
        raise AppError(409, "default_collection", "the default collection cannot be deleted")
    await run_in_threadpool(_collections(request).delete_blocking, collection)
    return {"deleted": collection}


@router.get("/{collection}/ready", response_model=Ready, responses={404: {"model": ErrorResponse}},
            summary="Readiness of one collection: the model, its operating point, its size (any key that reaches it)")
async def collection_ready(collection: CollectionName, service: ServiceDep, _key: IdentifyKey) -> dict:
    from app.api.routes.health import ready_details

    return await ready_details(service)


@router.get("/{collection}/calibration", responses={404: {"model": ErrorResponse}},
            summary="One collection's operating point in force (as GET /admin/calibration for `default`)")
async def collection_calibration(collection: CollectionName, service: ServiceDep, _key: AdminKey) -> dict:
    from app.api.routes.admin import calibration_report

    return await calibration_report(service)
