"""One error type and one JSON error shape for every failure: {"error": {"code", "message", "detail"?}}.

Every layer of `app/` raises `AppError`; `model/` raises its own plain exceptions (e.g. `ImageError`), which
the service translates into an `AppError` where it calls the library. This module imports nothing from
`app.services` (the services import it).
"""
from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "rate_limited"}


class AppError(Exception):
    """A request that cannot be served as asked: HTTP `status`, stable machine-readable `code`, human
    `message`, optional JSON-able `detail`, optional response `headers` (e.g. Retry-After)."""

    def __init__(self, status: int, code: str, message: str, detail=None, *, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.detail, self.headers = status, code, message, detail, headers

    def __repr__(self) -> str:
        return f"AppError({self.status}, {self.code!r}, {self.message!r})"


class BodyTooLarge(AppError):
    """The streamed request body passed the upload limit (raised from inside the body-limit middleware)."""

    def __init__(self, limit: int):
        super().__init__(413, "payload_too_large", f"request body is larger than {limit} bytes")
        self.limit = limit


def is_disk_full(exc: BaseException) -> bool:
    """A write failed because the storage is full: SQLite's SQLITE_FULL ("database or disk is full", also a
    disk I/O error with ENOSPC underneath), PostgreSQL's disk_full (53100) or an OSError ENOSPC / EDQUOT."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, OSError) and orig.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if getattr(orig, "sqlstate", None) == "53100" or getattr(orig, "sqlite_errorname", "") == "SQLITE_FULL":
        return True
    text = str(orig).lower()
    return "database or disk is full" in text or "no space left on device" in text


def storage_full_response(request: Request, exc: BaseException) -> JSONResponse:
    log.error("storage full on %s %s: %s", request.method, request.url.path, str(getattr(exc, "orig", exc))[:200])
    return error_response(507, "storage_full", "the gallery's storage is full: nothing was stored. Delete "
                          "identities, faces or reports (deletes still work) or free disk space, then retry")


def error_response(status: int, code: str, message: str, detail=None, headers=None) -> JSONResponse:
    body = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """The handlers: AppError, schema validation, Starlette's HTTP errors, and a logged 500 for the rest."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError):
        headers = exc.headers
        if exc.status == 401 and not headers:
            headers = {"WWW-Authenticate": "ApiKey"}
        return error_response(exc.status, exc.code, exc.message, exc.detail, headers=headers)

    @app.exception_handler(sa_exc.DBAPIError)
    async def _database(request: Request, exc: sa_exc.DBAPIError):
        # An outage (server down, restarting, connection cut, SQLite locked past its timeout) is the client's
        # cue to retry, not a bug; the pool pre-pings, so the service resumes by itself once it is back.
        if is_disk_full(exc):  # not an outage: retrying shortly will not help
            return storage_full_response(request, exc)
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) or exc.connection_invalidated:
            orig = str(exc.orig).lower()
            # another writer held the lock past db_busy_timeout_s (SQLite's busy timeout, PostgreSQL's lock_timeout)
            if getattr(exc.orig, "sqlstate", None) == "55P03" or "locked" in orig or "busy" in orig:
                log.warning("database busy on %s %s: %s", request.method, request.url.path, str(exc.orig)[:200])
                return error_response(503, "database_busy", "the database is busy; retry shortly",
                                      headers={"Retry-After": "1"})
            return _database_unavailable(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(sa_exc.TimeoutError)  # connection pool exhausted while the database hangs
    async def _pool_timeout(request: Request, exc: sa_exc.TimeoutError):
        return _database_unavailable(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return error_response(422, "invalid_request", "the request does not match the schema", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect):
        # The client hung up while sending its body: nobody reads this answer. 499 (nginx's "client closed
        # request") keeps it out of the 500s in metrics; the access log line is the only record.
        return error_response(499, "client_closed_request", "the client disconnected before the body was read")

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError):
        if is_disk_full(exc):  # a job file, a checkpoint: the disk is full
            return storage_full_response(request, exc)
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")


def outage_reason(exc: BaseException) -> str:
    """A database error in one log line: the driver's first line (SQLAlchemy's `orig`), at most 200 characters."""
    return (str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__).splitlines()[0][:200]


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    reason = outage_reason(exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, reason)
    return error_response(503, "database_unavailable", "the gallery database is unavailable; retry shortly",
                          headers={"Retry-After": "2"})


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes`: at once from Content-Length, else while streaming (no full read)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                resp = error_response(413, "payload_too_large", f"request body is larger than {self.max_bytes} bytes",
                                      headers={"Connection": "close"})
                return await resp(scope, receive, send)
        seen, exceeded, sent, gone, swallowed = 0, False, False, False, False

        async def limited_receive():
            nonlocal seen, exceeded, gone
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self.max_bytes)
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def guarded_send(message):
            nonlocal sent, swallowed
            if exceeded:  # whatever the app made of BodyTooLarge (FastAPI's body reader answers 400): ours is 413
                return
            if gone and not sent and message["type"] == "http.response.start" and message["status"] == 400:
                swallowed = True  # FastAPI's body reader makes a hang-up a 400 "error parsing the body": a 499
            if swallowed:
                return
            sent = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass
        if exceeded and not sent:
            resp = error_response(413, "payload_too_large", f"request body is larger than {self.max_bytes} bytes",
                                  headers={"Connection": "close"})
            await resp(scope, receive, send)
        elif swallowed:
            await error_response(499, "client_closed_request", "the client disconnected before the body was "
                                 "read")(scope, receive, send)
