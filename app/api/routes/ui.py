"""The built-in web UI: static files from app/ui/, the page at `/` and its assets under `/ui/`.

The UI uses only the public API (the same keys and scopes as any client); the files themselves are
public and carry no data. A strict Content-Security-Policy keeps the page to its own scripts.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; "
       "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
       "form-action 'self'")

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                                        "X-Content-Type-Options": "nosniff"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
