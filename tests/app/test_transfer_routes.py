"""GET /faces?source_sha256 in process (TestClient, real SQLite store, no model) and the store method."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.deps import get_store
from app.core.config import Settings
from app.gallery.store import GalleryStore, NewFace
from app.main import create_app
from tests.app.conftest import copied_store

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def new_face(rng, sha: str) -> NewFace:
    vec = rng.standard_normal(512).astype(np.float32)
    return NewFace(crop=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), crop_margin=14, source_sha256=sha,
                   box=[1.5, 2.0, 15.0, 16.0], landmarks=[[3.0, 4.0]] * 5, detection_score=0.99,
                   embeddings={"v1": vec / np.linalg.norm(vec)})


@pytest.fixture
def store(migrated_db, tmp_path) -> GalleryStore:
    with copied_store(migrated_db, tmp_path) as store:
        rng = np.random.default_rng(0)
        store.enroll("ann", [new_face(rng, SHA_A), new_face(rng, SHA_B)])
        store.enroll("bob", [new_face(rng, SHA_A)])  # the same photo under two labels (a group photo)
        yield store


@pytest.fixture
def client(store, tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'gallery.db'}", api_keys=[]))
    app.dependency_overrides[get_store] = lambda: store
    return TestClient(app, base_url="http://localhost")  # no `with`: the lifespan (model loading) does not run


def test_lookup_by_source_hash_returns_every_face_with_its_label_and_metadata(client):
    r = client.get("/faces", params={"source_sha256": [SHA_A, SHA_C]})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert sorted(f["label"] for f in items) == ["ann", "bob"] and {f["source_sha256"] for f in items} == {SHA_A}
    face = items[0]
    assert face["box"] == [1.5, 2.0, 15.0, 16.0] and face["landmarks"] == [[3.0, 4.0]] * 5
    assert face["crop_size"] == 16 and face["crop_margin"] == 14
    assert client.get("/faces", params={"source_sha256": SHA_C}).json() == {"items": []}


@pytest.mark.parametrize("params", [{}, {"source_sha256": "A" * 64}, {"source_sha256": "a" * 63},
                                    {"source_sha256": [SHA_A] * 101}])
def test_lookup_refuses_bad_hashes_with_422(client, params):
    r = client.get("/faces", params=params)
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_field", "invalid_request")


def test_store_faces_by_source(store):
    rows = store.faces_by_source([SHA_B, SHA_C])
    assert [(f.source_sha256, label) for f, label in rows] == [(SHA_B, "ann")]
    assert store.faces_by_source([]) == []
