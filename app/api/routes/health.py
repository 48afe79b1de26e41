"""Liveness and readiness."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServiceDep
from app.core.errors import AppError
from app.core.observability import metrics_response
from app.core.security import presented_key
from app.schemas import ErrorResponse, Health, Ready, ReadyBrief
from app.services.operating_point import operating_point_public

router = APIRouter(tags=["health"])


def _details_allowed(request: Request) -> bool:
    """Gallery size, model version and threshold are for keyed clients (bound to no collection) on a keyed server, unless
    FACEID_PUBLIC_METRICS says otherwise (a keyless server answers on loopback only)."""
    settings = request.app.state.settings
    if not settings.api_keys or settings.public_metrics:
        return True
    key = presented_key(request)  # a key bound to collections: not the default gallery's size, nor the service's
    return key is not None and key.collections is None


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (a key on keyed servers, "
            "unless FACEID_PUBLIC_METRICS)", responses={200: {"content": {"text/plain": {}}},
                                                    401: {"model": ErrorResponse}})
async def metrics(request: Request, service: ServiceDep) -> Response:
    if not _details_allowed(request):
        raise AppError(401, "unauthorized", "a valid X-API-Key header is required (FACEID_PUBLIC_METRICS is off)")
    return await run_in_threadpool(metrics_response, service, getattr(request.app.state, "collections", None))


@router.get("/ready", response_model=Ready | ReadyBrief, summary="Readiness: model loaded, gallery open "
            "(the details need a key on keyed servers, unless FACEID_PUBLIC_METRICS)")
async def ready(request: Request, service: ServiceDep) -> dict:
    if not _details_allowed(request):
        return {"status": "ready"}
    return await ready_details(service)


async def ready_details(service) -> dict:
    """/ready's details of one collection's gallery (the default's at /ready; GET /collections/{name}/ready)."""
    snap = service.serving.current
    emb, idx = snap.embedder, snap.search
    counts = await run_in_threadpool(service.store.counts)
    op = await run_in_threadpool(lambda: snap.synced().for_search())
    return {"status": "ready", "model_version": emb.version, "model_name": emb.name, "device": str(emb.device),
            "precision": emb.precision,
            "precision_reason": getattr(emb, "precision_reason", None), "detector_backend": service.pipeline.detector.backend,
            "threshold": op.cosine_threshold, "operating_point": operating_point_public(op), **counts,
            "indexed_vectors": len(idx), "batching": service.settings.batching}
