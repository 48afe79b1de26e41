"""Request ids, structured JSON logs and Prometheus metrics.

Logs carry method, route template, status, duration and the API key's *name*; never image data,
embeddings, labels or keys. Metrics: request counts and latencies by route and status, batch sizes,
queue depth, gallery size, model version. (Several uvicorn workers: set PROMETHEUS_MULTIPROC_DIR.)
"""
from __future__ import annotations

import json
import logging
import time
import uuid

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, Info, generate_latest
from starlette.responses import Response

from app.core import timing

REQUESTS = Counter("faceid_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("faceid_request_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
BATCH_SIZE = Histogram("faceid_batch_size", "items per model batch", ["stage"], buckets=(1, 2, 4, 8, 16, 32, 64, 128))
QUEUE_DEPTH = Gauge("faceid_queue_depth", "requests waiting for the model", ["stage"])
GALLERY = Gauge("faceid_gallery_size", "gallery rows (the default collection's)", ["kind"])
# collections are not a label of any metric (their number is unbounded); a collection's requests count under their
# route's template, as the default's do
COLLECTIONS = Gauge("faceid_collections", "collections besides default: registered, and open in this process",
                    ["state"])
MODEL = Info("faceid_model", "serving model")

access_log = logging.getLogger("faceid.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        for key in ("request_id", "method", "route", "status", "duration_ms", "api_key", "client"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class DropQueryString(logging.Filter):
    """uvicorn's access log writes the full path; a client that puts a key in the URL (`?api_key=...`) would
    have it logged. The API never reads keys from the query, so its access lines lose the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query removed]", *args[3:])
        return True


def configure_logging(json_logs: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQueryString) for f in uvicorn_access.filters):
        uvicorn_access.addFilter(DropQueryString())
    root = logging.getLogger("faceid")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    for name in ("app", "model"):
        logging.getLogger(name).handlers[:] = [handler]
        logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger(name).propagate = False


class RequestContext:
    """Middleware (plain ASGI, no extra task per request): request id (X-Request-ID in and out), the stage
    timers (`Server-Timing`, app.core.timing), the access log line and the request metrics."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        if not (0 < len(rid) <= 64 and rid.replace("-", "").replace("_", "").isalnum()):
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        timings = timing.begin()
        t0 = time.perf_counter()
        status = 500

        async def send_with_headers(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", rid.encode("latin-1")),
                           (b"server-timing", timing.header(timings, time.perf_counter() - t0))]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            dt = time.perf_counter() - t0
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(dt)
            timing.observe(timings)
            access_log.info("request", extra={"request_id": rid, "method": method, "route": route,
                                              "status": status, "duration_ms": round(dt * 1000, 2),
                                              "api_key": scope["state"].get("api_key_name")})


def metrics_response(service, collections=None) -> Response:
    emb = service.serving.embedder
    MODEL.info({"version": emb.version, "name": emb.name, "precision": emb.precision, "device": str(emb.device)})
    counts = service.store.counts()
    GALLERY.labels("identities").set(counts["identities"])
    GALLERY.labels("faces").set(counts["faces"])
    if collections is not None:
        COLLECTIONS.labels("registered").set(len(collections.rows()))
        COLLECTIONS.labels("open").set(len(collections.open_names()))
    for stage, depth in service.queue_depths().items():
        QUEUE_DEPTH.labels(stage).set(depth)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
