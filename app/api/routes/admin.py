"""Admin: model hot swap and index rebuild (admin scope once API keys are configured)."""
from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep
from app.core.security import AdminKey
from app.schemas import ErrorResponse
from app.services.embedder import start_swap

router = APIRouter(prefix="/admin", tags=["admin"], responses={
    400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})


class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    checkpoint: str = Field(min_length=1, max_length=255, examples=["finetuned.pt", "casia-webface"],
                            description="registry name, or a file name inside the checkpoints directory")


class ModelState(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    serving_version: str
    serving_name: str
    previous_version: str | None
    swap: dict
    versions_in_gallery: dict[str, int]


def _state(service) -> dict:
    m = service.models
    return {"serving_version": m.current.version, "serving_name": m.current.name,
            "previous_version": m.previous.version if m.previous else None, "swap": m.status.public(),
            "versions_in_gallery": service.store.versions()}


@router.get("/model", response_model=ModelState, summary="Serving model, swap candidate and re-embedding progress")
async def get_model(service: ServiceDep, _key: AdminKey) -> dict:
    return await run_in_threadpool(_state, service)


@router.post("/model", response_model=ModelState, status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
             summary="Hot-swap to another checkpoint: validate now, re-embed the gallery, then switch")
async def swap_model(body: SwapRequest, service: ServiceDep, _key: AdminKey) -> dict:
    await start_swap(service, body.checkpoint)
    return await run_in_threadpool(_state, service)


@router.get("/calibration", summary="The operating point in force: the model's and the gallery's impostor tails, "
            "the pairs behind each quantile, the thresholds for search and verification")
async def calibration(service: ServiceDep, _key: AdminKey) -> dict:
    emb = service.models.current
    idx = await run_in_threadpool(service.index_of, emb)
    return await run_in_threadpool(service.operating.report, emb, idx)


@router.post("/reindex", response_model=ModelState, summary="Rebuild the in-memory index from the database")
async def reindex(service: ServiceDep, _key: AdminKey) -> dict:
    service.index.drop(set())
    emb = service.models.current
    await run_in_threadpool(service.index.get, emb.version, emb.preprocessing.embedding_size)
    return await run_in_threadpool(_state, service)
