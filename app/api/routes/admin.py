"""Admin: model hot swap, index rebuild, and fine-tuning jobs (admin scope once API keys are configured)."""
from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep
from app.core.errors import AppError
from app.core.security import AdminKey
from app.schemas import ErrorResponse
from app.services.checkpoints import resolve_checkpoint
from model.inception_resnet import InceptionResnetV1

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
    held_in_memory: list[str] = Field(description="model versions this process keeps searches or tails of")


def _state(service) -> dict:
    s = service.serving
    return {"serving_version": s.embedder.version, "serving_name": s.embedder.name,
            "previous_version": s.previous_version, "swap": s.status.public(),
            "versions_in_gallery": service.store.versions(), "held_in_memory": s.held()}


@router.get("/model", response_model=ModelState, summary="Serving model, swap candidate and re-embedding progress")
async def get_model(service: ServiceDep, _key: AdminKey) -> dict:
    return await run_in_threadpool(_state, service)


@router.post("/model", response_model=ModelState, status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
             summary="Hot-swap to another checkpoint: validate now, re-embed the gallery, then switch")
async def swap_model(body: SwapRequest, service: ServiceDep, _key: AdminKey) -> dict:
    await service.serving.swap(body.checkpoint)
    return await run_in_threadpool(_state, service)


@router.get("/calibration", summary="The operating point in force: the model's and the gallery's impostor tails, "
            "the pairs behind each quantile, the thresholds for search and verification")
async def calibration(service: ServiceDep, _key: AdminKey) -> dict:
    snap = service.serving.current
    return await run_in_threadpool(lambda: service.operating.report(snap.embedder, snap.synced().search))


@router.post("/reindex", response_model=ModelState, summary="Rebuild the serving version's search index (in memory: "
             "reloaded from the database; pgvector: its HNSW index rebuilt concurrently), while searches go on")
async def reindex(service: ServiceDep, _key: AdminKey) -> dict:
    emb = service.serving.embedder
    await run_in_threadpool(service.search.reindex, emb.version, emb.preprocessing.embedding_size)
    return await run_in_threadpool(_state, service)


class TrainRequest(BaseModel):
    """A fine-tuning job on the gallery's crops and corrections (`python -m training.main --from-gallery`);
    its checkpoint is swapped in only if it passes the gate (better on held-out identities, LFW kept)."""
    model_config = ConfigDict(extra="forbid")
    max_minutes: float = Field(10.0, gt=0, le=24 * 60, description="training time limit")
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, le=10**7)
    lr: float = Field(1e-5, gt=0, le=1.0, description="learning rate of the network body")
    batch_size: int = Field(32, ge=4, le=1024, description="P identities x K faces")
    k: int = Field(4, ge=2, le=64)
    val_identities: float = Field(0.2, gt=0, lt=1, description="share of identities held out for the gate")
    lfw_pairs: int | None = Field(None, ge=20, le=6000, description="LFW pairs the gate checks (default all)")
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_all"
    margin: float = Field(0.2, gt=0, le=2)
    train_from: str | None = Field(None, max_length=40, pattern=r"^[a-z0-9_]+$",
                                   description="freeze the layers before this one (e.g. mixed_6a)")
    validate_every: int | None = Field(None, ge=1, le=10**6, description="held-out figures every N steps")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    start_from: str | None = Field(None, min_length=1, max_length=255, description="registry name or checkpoint "
                                   "file to start from (default: the serving model); the gate still compares "
                                   "with the serving model")


@router.post("/train", status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
             summary="Fine-tune on the gallery and its corrections in a separate process (one at a time)")
async def start_training(body: TrainRequest, service: ServiceDep, _key: AdminKey) -> dict:
    if body.train_from is not None and body.train_from not in InceptionResnetV1.FEATURE_LAYERS:
        raise AppError(422, "invalid_request", f"train_from must be one of {list(InceptionResnetV1.FEATURE_LAYERS)}")
    options = body.model_dump()
    if body.start_from is not None:  # a registry name or a file inside the checkpoints folder (404/422 otherwise)
        options["start_from"] = resolve_checkpoint(body.start_from, service.settings.checkpoints_dir)
    loop = asyncio.get_running_loop()
    return await run_in_threadpool(service.training.start, options, loop)


@router.get("/train", responses={404: {"model": ErrorResponse}},
            summary="The latest training job: state, step, loss, ETA, held-out figures, gate result, swap")
async def training_state(service: ServiceDep, _key: AdminKey) -> dict:
    return await run_in_threadpool(service.training.state)


@router.delete("/train", responses={409: {"model": ErrorResponse}}, summary="Cancel the running training job")
async def cancel_training(service: ServiceDep, _key: AdminKey) -> dict:
    return await run_in_threadpool(service.training.cancel)
