"""A real uvicorn server on 127.0.0.1, shared by the API tests of a session: once on a SQLite file, once on
PostgreSQL + pgvector (the tests that use it run on both backends)."""
from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from harness import Server
from tests.conftest import BACKENDS


@pytest.fixture(scope="session", params=BACKENDS)
def server(request, tmp_path_factory):
    db = (tmp_path_factory.mktemp("api") / "gallery.db" if request.param == "sqlite"
          else request.getfixturevalue("postgres").create_database())
    srv = Server(db, env={"FACEID_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024), "FACEID_MAX_IMAGE_PIXELS": "30000000",
                          "FACEID_DB_BUSY_TIMEOUT_S": "1"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
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
