"""Admin: model hot swap, index rebuild, and fine-tuning jobs (admin scope once API keys are configured)."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep
from app.core.errors import AppError
from app.core.security import AdminKey
from app.schemas import CheckpointOut, ErrorResponse, ModelState, SwapRequest, TrainRequest
from app.services.checkpoints import list_checkpoints, resolve_checkpoint
from model.inception_resnet import InceptionResnetV1

router = APIRouter(prefix="/admin", tags=["admin"], responses={
    400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})


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


@router.get("/checkpoints", response_model=list[CheckpointOut],
            summary="The checkpoints a hot swap can name: files in the checkpoints directory, then the registry")
async def checkpoints(service: ServiceDep, _key: AdminKey) -> list[dict]:
    return await run_in_threadpool(list_checkpoints, service.settings.checkpoints_dir)


@router.get("/calibration", summary="The operating point in force: the model's and the gallery's impostor tails, "
            "the pairs behind each quantile, the thresholds for search and verification")
async def calibration(service: ServiceDep, _key: AdminKey) -> dict:
    return await calibration_report(service)


async def calibration_report(service) -> dict:
    """The operating point report of one collection's gallery (the default's here; GET /collections/{c}/calibration)."""
    snap = service.serving.current
    return await run_in_threadpool(lambda: service.operating.report(snap.embedder, snap.synced().search))


@router.post("/reindex", response_model=ModelState, summary="Rebuild the serving version's search index (in memory: "
             "reloaded from the database; pgvector: its HNSW index rebuilt concurrently), while searches go on")
async def reindex(service: ServiceDep, _key: AdminKey) -> dict:
    emb = service.serving.embedder
    await run_in_threadpool(service.search.reindex, emb.version, emb.preprocessing.embedding_size)
    return await run_in_threadpool(_state, service)


@router.post("/train", status_code=status.HTTP_202_ACCEPTED,
             responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
             summary="Fine-tune on the gallery and its corrections in a separate process (one at a time)")
async def start_training(body: TrainRequest, request: Request, service: ServiceDep, _key: AdminKey) -> dict:
    if body.train_from is not None and body.train_from not in InceptionResnetV1.FEATURE_LAYERS:
        raise AppError(422, "invalid_request", f"train_from must be one of {list(InceptionResnetV1.FEATURE_LAYERS)}")
    options = body.model_dump()
    if body.collection not in (None, "default"):
        await request.app.state.collections.get(body.collection)  # 404 unknown_collection before a job starts
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
