"""GET /identities/duplicates, the enrollment's possible_duplicate warning and "not the same person", in process
(the real FaceService and store over the fake networks: the same colour is the same vector)."""
from __future__ import annotations

import numpy as np
import pytest

from model.calibration.tail import ImpostorTail
from tests.app.fakes import FakeEmbedder, fake_service
from tests.app.test_routes import BLUE, GREEN, RED, enroll, error, make_client, store  # noqa: F401

YELLOW = (200, 200, 30)


TAIL = None


def tailed_embedder() -> FakeEmbedder:
    """The fake networks with the impostor tail of their strangers: random 512-d unit pairs, whose cosine is
    close to normal with variance 1/512."""
    global TAIL
    if TAIL is None:
        s = np.random.default_rng(0).normal(0.0, 512 ** -0.5, 2_000_000).astype(np.float32)
        TAIL = ImpostorTail.from_scores(s).to_dict()
    return FakeEmbedder(thresholds={"cosine": 0.5, "impostor_tail": TAIL})


@pytest.fixture
def api(store, tmp_path):
    from app.core.config import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", api_keys=[], batching=False,
                        checkpoints_dir=tmp_path / "checkpoints")
    service = fake_service(settings, store, tailed_embedder())
    from fastapi.testclient import TestClient

    from app.api.deps import get_service
    from app.main import create_app

    app = create_app(settings)
    app.dependency_overrides[get_service] = lambda: service
    yield TestClient(app, base_url="http://localhost")
    service.close()


def ident(r) -> int:
    assert r.status_code == 201, r.text
    return r.json()["identity"]["id"]


def pairs(api, **query) -> list[tuple[int, int]]:
    r = api.get("/identities/duplicates", params=query)
    assert r.status_code == 200, r.text
    return [(p["a"]["id"], p["b"]["id"]) for p in r.json()["items"]]


def test_an_enrollment_that_matches_another_identity_warns_and_still_enrolls(api):
    a = ident(enroll(api, "Ann", [RED]))
    b = ident(enroll(api, "Bob", [GREEN]))
    r = enroll(api, "ann", [RED])
    c = ident(r)
    assert c not in (a, b)
    [w] = r.json()["warnings"]
    assert w["code"] == "possible_duplicate" and w["identity"] == {"id": a, "label": "Ann"} and w["score"] > 0.99
    assert enroll(api, "Carl", [BLUE]).json()["warnings"] == []
    # adding to an identity is no duplicate of itself
    assert enroll(api, "Ann", [RED]).json()["warnings"][0]["identity"]["id"] == c


def test_duplicates_are_listed_strongest_first_and_paginated(api):
    a, b, c = (ident(enroll(api, n, [RED])) for n in ("a", "b", "c"))
    d, e = ident(enroll(api, "d", [GREEN])), ident(enroll(api, "e", [GREEN, BLUE]))
    ident(enroll(api, "f", [YELLOW]))
    body = api.get("/identities/duplicates").json()
    got = {(p["a"]["id"], p["b"]["id"]) for p in body["items"]}
    assert got == {(a, b), (a, c), (b, c), (d, e)}
    assert body["total"] == 4 and body["threshold"] is not None
    scores = [p["score"] for p in body["items"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] < 0.99  # d and e: a template of two colours
    assert body["items"][0]["a"]["face_count"] == 1 and body["items"][-1]["b"]["face_count"] == 2
    assert pairs(api, offset=1, limit=2) == [(x["a"]["id"], x["b"]["id"]) for x in body["items"][1:3]]


def test_not_the_same_person_is_remembered_and_can_be_undone(api):
    a, b = ident(enroll(api, "a", [RED])), ident(enroll(api, "b", [RED]))
    assert pairs(api) == [(a, b)]
    assert api.post(f"/identities/{b}/not-duplicate", json={"identity_id": a}).status_code == 204
    assert pairs(api) == []
    assert api.post(f"/identities/{a}/not-duplicate", json={"identity_id": b}).status_code == 204  # idempotent
    assert enroll(api, "a", [RED]).json()["warnings"] == []  # nor warned about at enrollment
    assert api.delete(f"/identities/{a}/not-duplicate/{b}").status_code == 204
    assert pairs(api) == [(a, b)]
    error(api.delete(f"/identities/{a}/not-duplicate/{b}"), 404, "unknown_pair")


def test_a_merge_or_a_delete_ends_the_pair_and_its_mark(api):
    a, b, c = (ident(enroll(api, n, [RED])) for n in ("a", "b", "c"))
    api.post(f"/identities/{a}/not-duplicate", json={"identity_id": c})
    assert api.post(f"/identities/{a}/merge", json={"from_identity_id": b}).status_code == 200
    assert pairs(api) == []
    assert api.delete(f"/identities/{c}").status_code == 204
    c2 = ident(enroll(api, "c", [RED]))  # a new identity is never covered by an old mark
    assert pairs(api) == [(a, c2)]


def test_a_merge_keeps_the_merged_identitys_marks(api):
    a, b, c = (ident(enroll(api, n, [RED])) for n in ("a", "b", "c"))
    api.post(f"/identities/{a}/not-duplicate", json={"identity_id": b})  # "a is not b"
    assert set(pairs(api)) == {(a, c), (b, c)}
    assert api.post(f"/identities/{c}/merge", json={"from_identity_id": a}).status_code == 200
    assert pairs(api) == []  # a went into c: "a is not b" is now "c is not b"
    assert api.delete(f"/identities/{b}/not-duplicate/{c}").status_code == 204
    assert pairs(api) == [(b, c)]


def test_bad_requests_change_nothing(api):
    a, b = ident(enroll(api, "a", [RED])), ident(enroll(api, "b", [RED]))
    error(api.post(f"/identities/{a}/not-duplicate", json={"identity_id": a}), 422, "same_identity")
    error(api.delete(f"/identities/{a}/not-duplicate/{a}"), 422, "same_identity")
    error(api.post(f"/identities/{a}/not-duplicate", json={"identity_id": 999}), 404, "unknown_identity")
    error(api.post(f"/identities/999/not-duplicate", json={"identity_id": a}), 404, "unknown_identity")
    assert api.post(f"/identities/{a}/not-duplicate", json={"identity": b}).status_code == 422
    assert api.post(f"/identities/{a}/not-duplicate", json={"identity_id": 2**40}).status_code == 404
    assert api.get("/identities/duplicates", params={"limit": 0}).status_code == 422
    assert pairs(api) == [(a, b)]


def test_without_an_impostor_tail_nothing_is_suggested(store, tmp_path):
    client, service = make_client(store, tmp_path)
    try:
        enroll(client, "a", [RED])
        r = enroll(client, "b", [RED])
        assert r.json()["warnings"] == []
        body = client.get("/identities/duplicates").json()
        assert body["items"] == [] and body["threshold"] is None
    finally:
        service.close()
