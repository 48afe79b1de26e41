"""A real uvicorn server on 127.0.0.1 with a real SQLite file, shared by the API tests of a session."""
from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from app.testing import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("api") / "gallery.db",
                 env={"FACEID_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024), "FACEID_MAX_IMAGE_PIXELS": "30000000",
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
