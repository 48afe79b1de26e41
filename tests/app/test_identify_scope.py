"""What an `identify`-scope key learns from /identify (in process, real FaceService over fake networks): the
decision and the matched identity, nothing about identities that did not match (docs/security.md)."""
from __future__ import annotations

import pytest

from app.core.security import ApiKey, hash_key
from tests.app.fakes import tiles_png
from tests.app.test_routes import enroll, make_client, store  # noqa: F401 - fixtures

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]
STRANGER = (120, 120, 120)


@pytest.fixture
def keyed(store, tmp_path):  # noqa: F811
    keys = [ApiKey(name=s, sha256=hash_key(f"{s}-key"), scopes=[s]) for s in ("identify", "read", "write")]
    c, service = make_client(store, tmp_path, api_keys=keys)
    c.headers["X-API-Key"] = "write-key"
    for i, colour in enumerate(COLOURS):
        assert enroll(c, f"person-{i}", [colour]).status_code == 201
    del c.headers["X-API-Key"]
    yield c
    service.close()


def identify(client, key, colours):
    r = client.post("/identify", params={"top_k": 100}, headers={"X-API-Key": key},
                    files={"file": ("p.png", tiles_png(colours), "image/png")})
    assert r.status_code == 200, r.text
    return sorted(r.json()["faces"], key=lambda f: f["box"][0])


def test_an_identify_key_gets_the_decision_and_no_gallery_listing(keyed):
    faces = identify(keyed, "identify-key", [COLOURS[0], STRANGER])
    match, stranger = faces
    assert match["status"] == "match" and match["identity"]["label"] == "person-0"
    assert [m["label"] for m in match["matches"]] == ["person-0"]
    assert stranger["status"] == "unknown" and stranger["identity"] is None
    assert stranger["matches"] == [] and stranger["score"] is None
    assert "person-" not in str(stranger)


def test_a_read_key_still_gets_the_top_k(keyed):
    match, stranger = identify(keyed, "read-key", [COLOURS[0], STRANGER])
    assert len(match["matches"]) == len(COLOURS) and len(stranger["matches"]) == len(COLOURS)
    assert stranger["score"] is not None
