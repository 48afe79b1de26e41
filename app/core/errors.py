"""One JSON error shape for every failure: {"error": {"code", "message", "detail"?}}."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.services.batching import QueueFull
from app.services.recognition import FaceError

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "rate_limited"}


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


def error_response(status: int, code: str, message: str, detail=None, headers=None) -> JSONResponse:
    body = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    from app.core.security import AuthError
    from app.services.embedder import SwapError

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError):
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers=headers)

    @app.exception_handler(SwapError)
    async def _swap(_: Request, exc: SwapError):
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(FaceError)
    async def _face(_: Request, exc: FaceError):
        return error_response(exc.status, exc.code, exc.message, exc.extra or None)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge):
        return error_response(413, "payload_too_large", str(exc))

    @app.exception_handler(QueueFull)
    async def _busy(_: Request, exc: QueueFull):
        return error_response(503, "overloaded", f"the server is busy ({exc}); retry shortly",
                              headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return error_response(422, "invalid_request", "the request does not match the schema", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")


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
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
