"""API documentation served offline: Swagger UI from the `swagger-ui-bundle` package (no CDN), the
OpenAPI document, and FACEID_PUBLIC_DOCS deciding whether a keyed server shows them without a key."""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from app.core.errors import AppError
from app.core.security import presented_key

STATIC = "/docs/static"


def _check(request: Request) -> None:
    settings = request.app.state.settings
    if settings.api_keys and not settings.public_docs and presented_key(request) is None:
        raise AppError(401, "unauthorized", "a valid X-API-Key header is required (FACEID_PUBLIC_DOCS is off)",
                       headers={"WWW-Authenticate": "ApiKey"})


def install(app: FastAPI) -> None:
    """Call with FastAPI(docs_url=None, redoc_url=None, openapi_url=None)."""
    app.mount(STATIC, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        _check(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        _check(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_ui_parameters={"persistAuthorization": True})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
