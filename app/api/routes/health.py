"""Liveness and readiness."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep
from app.core.observability import metrics_response
from app.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(service: ServiceDep) -> Response:
    return await run_in_threadpool(metrics_response, service)


@router.get("/ready", response_model=Ready, summary="Readiness: model loaded, gallery open")
async def ready(service: ServiceDep) -> dict:
    emb = service.models.current
    counts = await run_in_threadpool(service.store.counts)
    idx = await run_in_threadpool(service.index_of, emb)
    op = await run_in_threadpool(service.operating.for_search, emb, idx)
    return {"status": "ready", "model_version": emb.version, "model_name": emb.name, "device": str(emb.device),
            "precision": emb.precision, "detector_backend": service.pipeline.detector.backend,
            "threshold": op.threshold, "operating_point": op.public(), **counts,
            "indexed_vectors": len(idx), "batching": service.settings.batching}
