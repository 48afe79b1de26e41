"""The API with real weights, shared by the tests of a session, once on a SQLite file and once on PostgreSQL +
pgvector (the tests that use it run on both backends): `app_client`, the app in process (FastAPI's TestClient,
its lifespan run: the model loaded, the gallery migrated), for what needs no network; `server` + `client`, a
real uvicorn server on 127.0.0.1, for what needs real sockets (client disconnects, concurrency, hot swaps)."""
from __future__ import annotations

import io
import shutil
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from PIL import Image

from harness import Server
from tests.conftest import BACKENDS

# What both API fixtures run with: small enough limits to test them cheaply, a short wait for a locked database.
API_ENV = {"FACEID_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024), "FACEID_MAX_IMAGE_PIXELS": "30000000",
           "FACEID_DB_BUSY_TIMEOUT_S": "1"}


@pytest.fixture(scope="session", params=BACKENDS)
def server(request, tmp_path_factory):
    db = (tmp_path_factory.mktemp("api") / "gallery.db" if request.param == "sqlite"
          else request.getfixturevalue("postgres").create_database())
    srv = Server(db, env=API_ENV)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory):
    """One migrated SQLite gallery for the session; in-process tests copy it (`copied_store`): migrating takes a
    fraction of a second per test, a copy does not."""
    from app.gallery.store import make_engine, migrate

    path = tmp_path_factory.mktemp("template") / "gallery.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@contextmanager
def copied_store(migrated_db, tmp_path):
    """A GalleryStore over a fresh copy of `migrated_db` in `tmp_path`."""
    from app.gallery.store import GalleryStore, make_engine

    path = tmp_path / "gallery.db"
    shutil.copyfile(migrated_db, path)
    engine = make_engine(f"sqlite:///{path}")
    try:
        yield GalleryStore(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def app_client(request, tmp_path_factory):
    """The app in this process over a fresh gallery (`app_client.app.state.settings.database_url`), lifespan run."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app
    from harness import database_url

    root = tmp_path_factory.mktemp("inproc")
    db = root / "gallery.db" if request.param == "sqlite" else request.getfixturevalue("postgres").create_database()
    settings = Settings(database_url=database_url(db), checkpoints_dir=root / "checkpoints", api_keys=[],
                        **{k.removeprefix("FACEID_").lower(): v for k, v in API_ENV.items()})
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def png_bytes(array: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


def gallery_state(client) -> tuple:
    ready = client.get("/ready").json()
    ids = client.get("/identities", params={"limit": 500}).json()
    return ready["identities"], ready["faces"], ready["indexed_vectors"], [(i["id"], i["label"], i["face_count"])
                                                                          for i in ids["items"]]


def db_rows(db, sql: str, **params) -> list[tuple]:
    """Plain SQL on a gallery (a SQLite path or a database URL), read from outside the service."""
    from sqlalchemy import create_engine, text

    from harness import database_url

    engine = create_engine(database_url(db))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()
