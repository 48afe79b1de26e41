"""What the person page, the gallery's search and the history of identifications read and write, in process
(TestClient, the real FaceService, store and index over fake networks): `q=` and `sort=` on GET /identities, the
cover face (PATCH /identities/{id}; cleared when the face is deleted or moved), GET /probes and its crops, and the
read scope they need. Bad input answers 4xx and changes nothing. The same store calls on SQLite and PostgreSQL:
tests/app/test_person_store.py."""
from __future__ import annotations

import pytest

from app.core.security import ApiKey, hash_key
from tests.app.fakes import tiles_png
from tests.app.test_routes import enroll, error, make_client, store  # noqa: F401 - fixtures

RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)


@pytest.fixture
def client(store, tmp_path):  # noqa: F811 - `store` is the imported fixture
    c, service = make_client(store, tmp_path)
    yield c
    service.close()


def labels(client, **query) -> list[str]:
    r = client.get("/identities", params=query)
    assert r.status_code == 200, r.text
    return [i["label"] for i in r.json()["items"]]


def test_identities_are_found_by_any_part_of_the_label_and_sorted(client):
    enroll(client, "Ada Lovelace", [RED, RED])
    enroll(client, "grace hopper", [GREEN])
    enroll(client, "Alan 100%_Turing", [BLUE, BLUE, BLUE])
    assert labels(client, q="LOVE") == ["Ada Lovelace"]
    assert labels(client, q="a") == ["Ada Lovelace", "grace hopper", "Alan 100%_Turing"]
    assert labels(client, q="%_") == ["Alan 100%_Turing"]  # LIKE's wildcards are plain characters
    assert labels(client, q="_") == ["Alan 100%_Turing"]
    r = client.get("/identities", params={"q": "a", "limit": 1})
    assert r.json()["total"] == 3 and len(r.json()["items"]) == 1
    assert labels(client, sort="label") == ["Ada Lovelace", "Alan 100%_Turing", "grace hopper"]  # any case
    assert labels(client, sort="faces") == ["Alan 100%_Turing", "Ada Lovelace", "grace hopper"]
    assert labels(client, sort="newest") == ["Alan 100%_Turing", "grace hopper", "Ada Lovelace"]
    assert labels(client, sort="id") == labels(client) == ["Ada Lovelace", "grace hopper", "Alan 100%_Turing"]
    assert labels(client, q="a", prefix="A", sort="label") == ["Ada Lovelace", "Alan 100%_Turing"]
    error(client.get("/identities", params={"sort": "age"}), 422, "invalid_request")
    error(client.get("/identities", params={"q": "x" * 201}), 422, "invalid_request")


def test_the_search_reads_text_as_labels_are_stored(client):
    """Labels are NFC without control characters: a decomposed q finds the composed label, and a q or prefix with
    a control character is refused (PostgreSQL cannot take a NUL: it was a 500 there; SQLite cut the text at it)."""
    enroll(client, "José", [RED])
    assert labels(client, q="jose\u0301") == labels(client, prefix="Jose\u0301") == ["José"]
    for bad in ("a\x00b", "\x00", "Jo\x1b[2J"):
        error(client.get("/identities", params={"q": bad}), 422, "invalid_request")
        error(client.get("/identities", params={"prefix": bad}), 422, "invalid_request")


def test_the_cover_face_is_set_shown_cleared_and_checked(client):
    ada = enroll(client, "Ada", [RED, RED, RED]).json()
    bob = enroll(client, "Bob", [GREEN]).json()
    a, faces = ada["identity"]["id"], [f["id"] for f in ada["faces"]]
    assert ada["identity"]["cover_face_id"] is None
    r = client.patch(f"/identities/{a}", json={"cover_face_id": faces[1]})
    assert r.status_code == 200, r.text
    assert r.json()["cover_face_id"] == faces[1] and r.json()["label"] == "Ada"
    assert client.get(f"/identities/{a}").json()["cover_face_id"] == faces[1]
    assert client.get("/identities").json()["items"][0]["cover_face_id"] == faces[1]

    # another's face, a missing face, a missing identity, nothing to change: 4xx and nothing changes
    error(client.patch(f"/identities/{a}", json={"cover_face_id": bob["faces"][0]["id"], "label": "Eve"}), 422,
          "face_not_in_identity")
    error(client.patch(f"/identities/{a}", json={"cover_face_id": 99999}), 404, "unknown_face")
    error(client.patch(f"/identities/{a}", json={"cover_face_id": 2**40}), 404, "unknown_face")
    error(client.patch("/identities/99999", json={"cover_face_id": faces[0]}), 404, "unknown_identity")
    error(client.patch(f"/identities/{a}", json={}), 422, "invalid_request")
    error(client.patch(f"/identities/{a}", json={"label": None}), 422, "invalid_request")
    error(client.patch(f"/identities/{a}", json={"cover_face_id": 0}), 422, "invalid_request")
    assert client.get(f"/identities/{a}").json()["label"] == "Ada"
    assert client.get(f"/identities/{a}").json()["cover_face_id"] == faces[1]

    # rename and cover in one request; null clears it
    r = client.patch(f"/identities/{a}", json={"label": "Ada L", "cover_face_id": faces[2]})
    assert (r.json()["label"], r.json()["cover_face_id"]) == ("Ada L", faces[2])
    assert client.patch(f"/identities/{a}", json={"cover_face_id": None}).json()["cover_face_id"] is None
    assert client.patch(f"/identities/{a}", json={"label": "Ada"}).json()["cover_face_id"] is None

    # the cover face moved away or deleted: the identity has no cover any more
    client.patch(f"/identities/{a}", json={"cover_face_id": faces[0]})
    assert client.post(f"/faces/{faces[0]}/move", json={"label": "Bob"}).status_code == 200
    assert client.get(f"/identities/{a}").json()["cover_face_id"] is None
    client.patch(f"/identities/{a}", json={"cover_face_id": faces[1]})
    assert client.delete(f"/faces/{faces[1]}").status_code == 204
    assert client.get(f"/identities/{a}").json()["cover_face_id"] is None
    assert client.patch(f"/identities/{a}", json={"cover_face_id": faces[2]}).status_code == 200
    assert client.delete(f"/faces/{faces[0]}").status_code == 204  # someone else's face now: Ada's cover stays
    assert client.get(f"/identities/{a}").json()["cover_face_id"] == faces[2]


def test_recent_identifications_are_listed_newest_first_with_their_crops(client):
    a = enroll(client, "Ada", [RED]).json()["identity"]["id"]
    assert client.get("/probes").json() == {"items": [], "total": 0, "offset": 0, "limit": 50}
    first = client.post("/identify", files={"file": ("p.png", tiles_png([RED, GREY]), "image/png")}).json()["faces"]
    later = client.post("/identify", files={"file": ("q.png", tiles_png([BLUE]), "image/png")}).json()["faces"]
    page = client.get("/probes").json()
    assert page["total"] == 3
    ids = [p["id"] for p in page["items"]]
    assert ids == sorted([f["probe_id"] for f in first + later], reverse=True)
    assert ids[0] == later[0]["probe_id"]
    by_id = {p["id"]: p for p in page["items"]}
    match = next(by_id[f["probe_id"]] for f in first if f["status"] == "match")
    assert match["status"] == "match" and match["top_identity"] == {"id": a, "label": "Ada"}
    assert match["top_score"] == pytest.approx(next(f["score"] for f in first if f["status"] == "match"))
    assert len(match["source_sha256"]) == 64 and match["model_version"] == "fake-v1"
    assert by_id[later[0]["probe_id"]]["status"] == "unknown"
    assert [p["id"] for p in client.get("/probes", params={"offset": 1, "limit": 1}).json()["items"]] == ids[1:2]
    r = client.get(f"/probes/{ids[0]}/crop")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    error(client.get("/probes/99999/crop"), 404, "unknown_probe")
    error(client.get("/probes/0/crop"), 422, "invalid_request")
    error(client.get("/probes", params={"limit": 501}), 422, "invalid_request")
    assert client.delete(f"/identities/{a}").status_code == 204  # a deleted identity is no longer named
    assert client.get("/probes").json()["items"][-1]["top_identity"] is None


def test_probes_need_the_read_scope(store, tmp_path):  # noqa: F811
    keys = [ApiKey(name=s, sha256=hash_key(f"{s}-key"), scopes=[s]) for s in ("identify", "read")]
    c, service = make_client(store, tmp_path, api_keys=keys)
    try:
        r = c.post("/identify", headers={"X-API-Key": "identify-key"},
                   files={"file": ("p.png", tiles_png([GREY]), "image/png")})
        probe_id = r.json()["faces"][0]["probe_id"]
        error(c.get("/probes", headers={"X-API-Key": "identify-key"}), 403, "forbidden")
        error(c.get(f"/probes/{probe_id}/crop", headers={"X-API-Key": "identify-key"}), 403, "forbidden")
        error(c.get("/probes"), 401, "unauthorized")
        assert c.get("/probes", headers={"X-API-Key": "read-key"}).json()["items"][0]["id"] == probe_id
        assert c.get(f"/probes/{probe_id}/crop", headers={"X-API-Key": "read-key"}).status_code == 200
    finally:
        service.close()
