"""FastAPI application: create_app() and a lifespan that loads the model once and opens the gallery.

Importing this module is cheap: nothing is loaded until the lifespan runs.
"""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

import torch
from fastapi import Depends, FastAPI

from app.api import docs
from app.api.routes import (admin, collections, faces, feedback, gallery, health, probes, transfer, ui, unknown,
                            webhooks)
from app.core import errors
from app.core.background import Background
from app.services.delivery import DeliveryProcess
from app.core.browser import BrowserGuardMiddleware
from app.core.config import Settings, get_settings
from app.core.security import KeyFirstMiddleware
from app.core.errors import AppError
from app.schemas import ErrorResponse
from app.core.observability import RequestContext, configure_logging

log = logging.getLogger("faceid")

DESCRIPTION = """Face identification over a durable gallery. FaceNet (InceptionResnetV1) embeddings, MTCNN
detection. Images are multipart uploads (`file` / `files`) or JSON with base64 (`image` / `images`).
Every error is `{"error": {"code", "message", "detail"?}}` with a stable machine-readable `code`."""


def limit_blas_threads(n: int) -> None:
    """numpy's and scipy's BLAS held to `n` threads (FACEID_BLAS_THREADS; 0: the libraries' default, one per core),
    unless the operator set OPENBLAS_NUM_THREADS. app/__init__.py sets it before they load where it can; this
    covers a process that loaded them first, and a setting read from `.env`. Call it on the main thread (the
    lifespan's, under uvicorn): this OpenBLAS ignores a limit set by another thread after the main thread set one.
    torch's OpenMP threads are not BLAS's and stay as they are."""
    import app

    if "OPENBLAS_NUM_THREADS" in os.environ and not app.BLAS_ENV_SET:
        return  # the operator's
    if app.BLAS_ENV_SET:  # loaded with it already; the processes this one starts get the default again
        os.environ.pop("OPENBLAS_NUM_THREADS", None)
        app.BLAS_ENV_SET = False
    from threadpoolctl import threadpool_limits

    threadpool_limits(n or os.cpu_count() or 1, user_api="blas")


def build_service(settings: Settings):
    from app.gallery.reserve import StorageReserve
    from app.gallery.store import GalleryStore, make_engine, migrate
    from app.services.recognition import FaceService
    from model.pipeline import FacePipeline, load_detector, resolve_device

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    limit_blas_threads(settings.blas_threads)
    try:
        torch.set_num_interop_threads(1)  # model work runs on one thread; intra-op threads use the cores
    except RuntimeError:
        pass  # already fixed in this process
    device = resolve_device(settings.device)
    engine = make_engine(settings.database_url, settings.db_busy_timeout_s)
    migrate(engine)
    store = GalleryStore(engine)
    store.reserve = StorageReserve.beside(engine, settings.storage_reserve_bytes)
    store.reserve.ensure()
    embedder = _load_serving(_startup_spec(settings, store), settings, str(device))
    detector = load_detector(device=device, min_face_size=settings.detector_min_face_size,
                             thresholds=settings.detector_thresholds, backend=settings.detector_backend)
    pipeline = FacePipeline(detector, max_detect_side=settings.max_detect_side)  # models come from the snapshot
    return FaceService(settings, pipeline, embedder, store)  # loads the version's search from the database


def _startup_spec(settings: Settings, store) -> str:
    """The model to serve: the gallery's record of a hot swap wins over FACEID_WEIGHTS (so restarted
    workers keep serving what the others serve); otherwise FACEID_WEIGHTS."""
    from app.services.checkpoints import resolve_checkpoint

    recorded, version = store.serving()
    if recorded:
        try:
            spec = resolve_checkpoint(recorded, settings.checkpoints_dir)
            if recorded != settings.weights:
                log.warning("serving %s (%s), recorded by a hot swap; FACEID_WEIGHTS=%s is not used "
                            "(POST /admin/model to change)", recorded, version, settings.weights)
            return spec
        except AppError as exc:
            log.warning("the gallery's serving model %s is unavailable here (%s); using FACEID_WEIGHTS",
                        recorded, exc.message)
    path = settings.checkpoints_dir / settings.weights
    return str(path) if path.is_file() else settings.weights


def _load_serving(spec: str, settings: Settings, device: str):
    """The serving model; a checkpoint whose metadata cannot serve (a hot swap recorded before swaps checked
    it) falls back to FACEID_WEIGHTS, which must be sound."""
    from app.services.checkpoints import metadata_problem
    from model.pipeline import Embedder, load_checkpoint

    ckpt = load_checkpoint(spec)
    problem = metadata_problem(ckpt)
    fallback = settings.checkpoints_dir / settings.weights
    fallback = str(fallback) if fallback.is_file() else settings.weights
    if problem and spec != fallback:
        log.warning("not serving %s: %s; using FACEID_WEIGHTS=%s", spec, problem, settings.weights)
        ckpt = load_checkpoint(fallback)
        problem = metadata_problem(ckpt)
    if problem:
        raise RuntimeError(f"cannot serve {ckpt.name}: {problem}")
    return Embedder(ckpt, device, settings.precision, settings.flip_tta)


@asynccontextmanager
async def lifespan(app: FastAPI):
    import asyncio

    from starlette.concurrency import run_in_threadpool

    settings: Settings = app.state.settings
    service = build_service(settings)
    app.state.service = service
    from app.services.collections import Collections

    background = Background(settings.background_nice).start()  # event delivery and refines: app/core/background.py
    app.state.collections = collections_ = Collections(service, settings.collections_max_open, background)
    follower = worker = None
    try:  # whatever fails from here on, the service is closed and its tasks cancelled
        serving = service.serving
        emb = serving.embedder
        if await run_in_threadpool(collections_.finish_deletes):  # a delete a crash interrupted
            log.info("finished the collection deletes a restart interrupted")
        added = await serving.reembed_missing(emb)  # a gallery enrolled under another model: embed it for this one
        added += await serving.reembed_others(emb)  # kept unknown faces too
        if added:
            log.info("embedded %d stored faces for model %s", added, emb.version)
        await run_in_threadpool(serving.warm, serving.snapshot_of(emb))  # the operating point, before any request
        follower = asyncio.get_running_loop().create_task(serving.follow())
        if settings.events_worker:  # webhooks and MQTT, off the request path (app/services/events.py)
            url = service.store.engine.url.render_as_string(hide_password=False)
            if settings.events_worker_process and ":memory:" not in url:  # app/services/delivery.py
                worker = DeliveryProcess(settings, url)  # started once there is a subscription or MQTT
                service.events.forward = worker.poke
                background.spawn(service.events.relay_forever(worker.start))  # and the collections' events
            else:
                background.spawn(service.events.run())
        background.spawn(service.unknown.run())  # kept unknown faces' clusters
        log.info("ready: model %s (%s) on %s, %s (%s)", emb.name, emb.version, emb.device, emb.precision,
                 emb.precision_reason)
        yield
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await background.stop()  # a delivery worker there gives back its leases
        if worker is not None:
            service.events.forward = None
            await run_in_threadpool(worker.stop)  # the worker's process does, and exits
        await collections_.aclose()
        await service.aclose()
        service.store.engine.dispose()


def collection_param(collection: collections.CollectionName) -> None:
    """The `{collection}` of the prefixed gallery routes, declared (and its pattern checked) once for all."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.refuse_unsafe_start()
    configure_logging(settings.log_json)
    app = FastAPI(title="faceid", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)  # app.api.docs: offline, key-aware
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(errors.BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(KeyFirstMiddleware, routes_of=app)  # 401/403 before any body is read
    # outside the key check: a cross-site write or a rebinding Host is refused whatever key it carries
    app.add_middleware(BrowserGuardMiddleware, check_host=not settings.api_keys,
                       allowed_hosts=settings.allowed_hosts, trusted_origins=settings.cors_origins)
    if not settings.api_keys and not settings.keyless_allowed_anywhere:  # outermost: the arrival address first
        from app.core.security import LoopbackOnlyMiddleware

        app.add_middleware(LoopbackOnlyMiddleware)
    if settings.rate_limit:  # outside the key check: failed key guesses are counted too
        _install_rate_limit(app, settings.rate_limit, settings.rate_limit_storage)
    if settings.cors_origins:  # outside the key check and rate limit: their refusals carry CORS headers too
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"])
    app.add_middleware(RequestContext)
    for router in (health.router, faces.router, transfer.router, gallery.router, feedback.router, probes.router,
                   unknown.router, admin.router, webhooks.router, collections.router):
        app.include_router(router)
    # the gallery routes again under /collections/{collection}: the same routes on another collection's gallery
    # (app/api/deps.get_service); the unprefixed ones are the collection `default`'s
    gallery_routers = (faces.router, transfer.router, gallery.router, feedback.router, probes.router, unknown.router)
    app.state.gallery_paths = {r.path for router in gallery_routers for r in router.routes}
    for router in gallery_routers:
        app.include_router(router, prefix="/collections/{collection}", dependencies=[Depends(collection_param)],
                           responses={404: {"model": ErrorResponse, "description": "no such collection "
                                            "(unknown_collection), or no such resource in it"}})
    webhooks.declare_events(app)  # OpenAPI 3.1 `webhooks`: what each event's delivery carries
    docs.install(app)
    ui.install(app)  # the web UI at / (static files, public API only)
    return app


def _install_rate_limit(app: FastAPI, limit: str, storage_uri: str) -> None:
    """Counted per *valid* API key (by its name) or else per client address: requests with a wrong or
    made-up key count against their address, so rotating random keys (or guessing keys) is limited too.
    With the `limits` library; 429 in our error shape. Health, readiness and metrics are not limited unless
    they carry a key (their answers tell a valid key from an invalid one: guesses are limited there too)."""
    from limits import parse, storage, strategies

    from app.core.security import find_key

    item = parse(limit)
    limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))
    exempt = {"/health", "/ready", "/metrics"}
    keys = app.state.settings.api_keys

    async def rate_limit(request, call_next):
        if request.url.path in exempt and "x-api-key" not in request.headers:  # an unkeyed health probe
            return await call_next(request)
        valid = find_key(request.headers.get("x-api-key"), keys) if keys else None
        who = f"key:{valid.name}" if valid else f"ip:{request.client.host if request.client else '-'}"
        if not limiter.hit(item, "faceid", who):
            return errors.error_response(429, "rate_limited", f"rate limit exceeded ({limit})",
                                         headers={"Retry-After": "1"})
        return await call_next(request)

    app.middleware("http")(rate_limit)
