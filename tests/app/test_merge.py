"""POST /identities/{id}/merge in process (TestClient, real SQLite store, no model) and the store method."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.deps import get_store
from app.core.config import Settings
from app.gallery.store import GalleryStore, NewFace
from app.main import create_app
from tests.app.conftest import copied_store


def new_face(rng, version="v1") -> NewFace:
    vec = rng.standard_normal(512).astype(np.float32)
    return NewFace(crop=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), crop_margin=0,
                   source_sha256="0" * 64, box=[0, 0, 16, 16], landmarks=[[1, 1]] * 5, detection_score=0.99,
                   embeddings={version: vec / np.linalg.norm(vec)})


@pytest.fixture
def store(migrated_db, tmp_path) -> GalleryStore:
    with copied_store(migrated_db, tmp_path) as s:
        yield s


@pytest.fixture
def client(store, tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'gallery.db'}", api_keys=[]))
    app.dependency_overrides[get_store] = lambda: store
    return TestClient(app, base_url="http://localhost")  # no `with`: the lifespan (model loading) does not run


def test_store_merge_moves_faces_and_deletes_the_source(store):
    rng = np.random.default_rng(0)
    a, _, _ = store.enroll("a", [new_face(rng), new_face(rng)])
    b, b_faces, _ = store.enroll("b", [new_face(rng), new_face(rng), new_face(rng)])
    gen, rebuild = store.generation()
    merged = store.merge(a.id, b.id)
    assert merged.id == a.id and merged.label == "a"
    assert store.get_identity(b.id) is None
    face_ids = {f.id for f in store.get_identity(a.id).faces}
    assert len(face_ids) == 5 and {f.id for f in b_faces} <= face_ids
    # a non-append write: logged for the in-memory searches, which reload just the two identities
    assert store.generation() == (gen + 1, rebuild) and store.changed_identities(gen) == {a.id, b.id}
    _, _, iids, labels, _ = store.vectors("v1")
    assert set(iids.tolist()) == {a.id} and set(labels) == {"a"}
    assert store.counts() == {"identities": 1, "faces": 5}
    templates = store.templates("v1")  # one template, of all five faces
    assert list(templates) == [a.id] and templates[a.id][1] == 5


def test_store_merge_with_an_unknown_identity_changes_nothing(store):
    rng = np.random.default_rng(1)
    a, _, _ = store.enroll("a", [new_face(rng)])
    before = store.generation(), store.counts()
    assert store.merge(a.id, 999) is None
    assert store.merge(999, a.id) is None
    assert (store.generation(), store.counts()) == before


def test_merge_route(client, store):
    rng = np.random.default_rng(2)
    a, _, _ = store.enroll("Ada", [new_face(rng)])
    b, _, _ = store.enroll("ada lovelace", [new_face(rng), new_face(rng)])
    r = client.post(f"/identities/{a.id}/merge", json={"from_identity_id": b.id})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == a.id and r.json()["label"] == "Ada" and r.json()["face_count"] == 3
    assert client.get(f"/identities/{b.id}").status_code == 404
    assert client.get(f"/identities/{a.id}").json()["face_count"] == 3


@pytest.mark.parametrize("into,source,status,code", [
    ("a", "a", 422, "merge_into_self"),
    ("a", 999, 404, "unknown_identity"),
    (999, "a", 404, "unknown_identity"),
])
def test_merge_route_refusals_change_nothing(client, store, into, source, status, code):
    rng = np.random.default_rng(3)
    a, _, _ = store.enroll("a", [new_face(rng)])
    into, source = (a.id if x == "a" else x for x in (into, source))
    before = store.generation(), store.counts()
    r = client.post(f"/identities/{into}/merge", json={"from_identity_id": source})
    assert r.status_code == status and r.json()["error"]["code"] == code
    if status == 404:
        assert "999" in r.json()["error"]["message"]
    assert (store.generation(), store.counts()) == before


@pytest.mark.parametrize("body", [{}, {"from_identity_id": 0}, {"from_identity_id": "x"}, {"from_identity_id": 1, "x": 1}])
def test_merge_route_validates_the_body(client, store, body):
    assert client.post("/identities/1/merge", json=body).status_code == 422


def test_merge_route_needs_the_write_scope(tmp_path, store):
    from app.core.security import ApiKey, hash_key

    keys = [ApiKey(name="r", sha256=hash_key("read-key"), scopes=["read"]),
            ApiKey(name="w", sha256=hash_key("write-key"), scopes=["write"])]
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'gallery.db'}", api_keys=keys))
    app.dependency_overrides[get_store] = lambda: store
    client = TestClient(app, base_url="http://localhost")
    rng = np.random.default_rng(4)
    a, _, _ = store.enroll("a", [new_face(rng)])
    b, _, _ = store.enroll("b", [new_face(rng)])
    url, body = f"/identities/{a.id}/merge", {"from_identity_id": b.id}
    assert client.post(url, json=body).status_code == 401
    assert client.post(url, json=body, headers={"X-API-Key": "read-key"}).status_code == 403
    assert client.post(url, json=body, headers={"X-API-Key": "write-key"}).status_code == 200
