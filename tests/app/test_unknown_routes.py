"""Kept unknown faces and their clusters through the routes, in process (the real FaceService, store and
clustering over the fake networks: a colour is a person, two tiles of one colour are two photos of them)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.core.security import ApiKey, hash_key
from app.gallery.models import UnknownCluster, UnknownEmbedding, UnknownFace, utcnow
from tests.app.fakes import TILE, tiles_png
from tests.app.test_routes import GREEN, GREY, RED, enroll, error, make_client, store  # noqa: F401 - fixture

TEAL, OLIVE = (30, 160, 160), (160, 160, 30)


@pytest.fixture
def made(store, tmp_path):  # noqa: F811
    clients = []

    def make(**overrides):
        c, service = make_client(store, tmp_path, **overrides)
        clients.append(service)
        return c, service
    yield make
    for s in clients:
        s.close()


def identify(client, colours, size=TILE, **params):
    """`size`: another tile size is another photo of the same faces (a photo sent again is kept once)."""
    r = client.post("/identify", params=params, files={"file": ("p.png", tiles_png(colours, size), "image/png")})
    assert r.status_code == 200, r.text
    return sorted(r.json()["faces"], key=lambda f: f["box"][0])


def rows(store, model):  # noqa: F811
    with store.sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_nothing_is_kept_unless_asked(made, store):  # noqa: F811
    c, _ = made()
    faces = identify(c, [GREY, TEAL])
    assert [f["status"] for f in faces] == ["unknown", "unknown"]
    assert all(f["unknown_face_id"] is None and f["cluster_id"] is None for f in faces)
    assert rows(store, UnknownFace) == 0 and c.get("/unknown").json()["total"] == 0


def test_unknown_faces_cluster_and_a_cluster_is_named_in_one_step(made, store):  # noqa: F811
    c, service = made()
    assert enroll(c, "red", [RED]).status_code == 201
    first = identify(c, [GREY, TEAL, RED], remember_unknown="true")
    assert [f["status"] for f in first] == ["unknown", "unknown", "match"]
    assert first[2]["unknown_face_id"] is None  # a match is not kept
    second = identify(c, [TEAL, GREY], remember_unknown="true")
    assert second[1]["cluster_id"] == first[0]["cluster_id"]  # the same person joins the same cluster
    assert second[0]["cluster_id"] == first[1]["cluster_id"]
    identify(c, [GREY, OLIVE], remember_unknown="true")
    page = c.get("/unknown").json()
    assert [(i["id"], i["size"]) for i in page["items"]] == [(first[0]["cluster_id"], 3), (first[1]["cluster_id"], 2)]
    assert page["total"] == 2 and c.get("/unknown", params={"min_faces": 1}).json()["total"] == 3
    grey = page["items"][0]
    assert grey["suggestion"] is None and grey["first_seen"] <= grey["last_seen"] and len(grey["face_ids"]) == 3
    crop = c.get(f"/unknown/faces/{grey['face_ids'][0]}/crop")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
    detail = c.get(f"/unknown/{grey['id']}").json()
    assert {f["cluster_id"] for f in detail["faces"]} == {grey["id"]} and len(detail["faces"]) == 3
    assert all(f["expires_at"] is None and f["model_version"] == "fake-v1" for f in detail["faces"])

    r = c.post(f"/unknown/{grey['id']}/enroll", json={"label": "grey"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] and body["identity"]["label"] == "grey" and body["identity"]["face_count"] == 3
    error(c.get(f"/unknown/{grey['id']}"), 404, "unknown_cluster")
    assert rows(store, UnknownFace) == 3  # teal x2, olive
    [after] = identify(c, [GREY])
    assert after["status"] == "match" and after["identity"]["label"] == "grey"

    teal = first[1]["cluster_id"]
    r = c.post(f"/unknown/{teal}/enroll", json={"identity_id": body["identity"]["id"]})  # to an existing identity
    assert r.status_code == 201 and not r.json()["created"] and r.json()["identity"]["face_count"] == 5
    error(c.post(f"/unknown/{teal}/enroll", json={"label": "x"}), 404, "unknown_cluster")


def test_enroll_refuses_bad_requests_and_changes_nothing(made, store):  # noqa: F811
    c, _ = made()
    cid = identify(c, [GREY], remember_unknown="true")[0]["cluster_id"]
    error(c.post(f"/unknown/{cid}/enroll", json={}), 422, "invalid_request")
    error(c.post(f"/unknown/{cid}/enroll", json={"label": "a", "identity_id": 1}), 422, "invalid_request")
    error(c.post(f"/unknown/{cid}/enroll", json={"identity_id": 999}), 404, "unknown_identity")
    assert c.post(f"/unknown/{cid}/enroll", json={"label": "  "}).status_code == 422
    assert c.get(f"/unknown/{cid}").status_code == 200 and c.get("/identities").json()["total"] == 0


def test_dismiss_delete_remove_a_face_and_purge(made, store):  # noqa: F811
    c, _ = made()
    one, two = (identify(c, [GREY, TEAL, OLIVE], size, remember_unknown="true") for size in (TILE, TILE + 4))
    a = [one[0], two[0], one[1], two[1], one[2], two[2]]  # grey, grey, teal, teal, olive, olive
    grey, teal, olive = a[0]["cluster_id"], a[2]["cluster_id"], a[4]["cluster_id"]
    assert len({grey, teal, olive}) == 3 and a[1]["cluster_id"] == grey
    r = c.post(f"/unknown/{grey}/dismiss")
    assert r.status_code == 200 and r.json()["dismissed"]
    assert grey not in [i["id"] for i in c.get("/unknown").json()["items"]]
    assert [i["id"] for i in c.get("/unknown", params={"dismissed": "true"}).json()["items"]] == [grey]
    assert identify(c, [GREY], remember_unknown="true")[0]["cluster_id"] == grey  # still joins, still hidden
    assert c.post("/unknown/refine").json()["applied"]
    assert c.get(f"/unknown/{grey}").json()["size"] == 3 and c.get(f"/unknown/{grey}").json()["dismissed"]

    assert c.delete(f"/unknown/{teal}").status_code == 204
    error(c.get(f"/unknown/{teal}"), 404, "unknown_cluster")
    error(c.delete(f"/unknown/{teal}"), 404, "unknown_cluster")
    assert c.delete(f"/unknown/faces/{a[4]['unknown_face_id']}").status_code == 204
    assert c.get(f"/unknown/{olive}").json()["size"] == 1
    error(c.get(f"/unknown/faces/{a[4]['unknown_face_id']}/crop"), 404, "unknown_face")
    assert c.delete(f"/unknown/faces/{a[5]['unknown_face_id']}").status_code == 204
    error(c.get(f"/unknown/{olive}"), 404, "unknown_cluster")  # its last face: the cluster is gone
    assert c.delete("/unknown").json() == {"deleted_faces": 3}
    assert rows(store, UnknownFace) == rows(store, UnknownCluster) == rows(store, UnknownEmbedding) == 0


def test_a_photo_identified_again_leaves_its_faces_once(made, store):  # noqa: F811
    """A photo library scanned twice, or the same upload retried: its unknown faces are kept once."""
    c, service = made()
    first = identify(c, [GREY, TEAL], remember_unknown="true")
    again = identify(c, [GREY, TEAL], remember_unknown="true")
    assert [(f["unknown_face_id"], f["cluster_id"]) for f in again] == \
        [(f["unknown_face_id"], f["cluster_id"]) for f in first]
    assert rows(store, UnknownFace) == 2
    other = identify(c, [TEAL, GREY], remember_unknown="true")  # another photo of the same two: kept, clustered
    assert rows(store, UnknownFace) == 4 and {f["cluster_id"] for f in other} == {f["cluster_id"] for f in first}
    assert service.unknown._since_refine == 4  # the faces kept again are not new faces for the refine


def test_the_cap_drops_the_oldest_and_retention_expires(made, store):  # noqa: F811
    c, service = made(unknown_max_faces=3, remember_unknown=True, unknown_retention_s=3600)
    first = sorted(identify(c, [GREY, TEAL]), key=lambda f: f["unknown_face_id"])
    later = [identify(c, [OLIVE], size)[0]["unknown_face_id"] for size in (TILE, TILE + 4)]
    with store.sessions() as s:
        kept = s.scalars(select(UnknownFace.id).order_by(UnknownFace.id)).all()
    assert kept == [first[1]["unknown_face_id"], *later]  # the oldest dropped
    error(c.get(f"/unknown/{first[0]['cluster_id']}"), 404, "unknown_cluster")  # its only face was dropped
    assert c.get("/unknown", params={"min_faces": 1}).json()["total"] == 2
    detail = c.get(f"/unknown/{first[1]['cluster_id']}").json()
    assert detail["faces"][0]["expires_at"] is not None
    assert service.unknown.store.prune_expired(now=utcnow() + timedelta(seconds=3599)) == 0
    assert service.unknown.store.prune_expired(now=utcnow() + timedelta(seconds=3601)) == 3
    assert rows(store, UnknownFace) == rows(store, UnknownCluster) == 0
    assert identify(c, [GREY])[0]["cluster_id"] is not None  # the cached clusters followed the deletes


def test_scopes_an_identify_key_sees_nothing(made, store):  # noqa: F811
    keys = [ApiKey(name=s, sha256=hash_key(f"{s}-key"), scopes=[s]) for s in ("identify", "read", "write")]
    c, _ = made(api_keys=keys)
    for key, want in (("identify-key", 403), ("read-key", 403)):
        r = c.post("/identify", params={"remember_unknown": "true"}, headers={"X-API-Key": key},
                   files={"file": ("p.png", tiles_png([GREY]), "image/png")})
        error(r, want, "forbidden")
    assert rows(store, UnknownFace) == 0
    r = c.post("/identify", params={"remember_unknown": "true"}, headers={"X-API-Key": "write-key"},
               files={"file": ("p.png", tiles_png([GREY]), "image/png")})
    cid = r.json()["faces"][0]["cluster_id"]
    fid = r.json()["faces"][0]["unknown_face_id"]
    for url in ("/unknown", f"/unknown/{cid}", f"/unknown/faces/{fid}/crop"):
        error(c.get(url, headers={"X-API-Key": "identify-key"}), 403, "forbidden")
        assert c.get(url, headers={"X-API-Key": "read-key"}).status_code == 200
    for method, url in (("POST", f"/unknown/{cid}/dismiss"), ("DELETE", f"/unknown/{cid}"), ("DELETE", "/unknown"),
                        ("POST", "/unknown/refine"), ("DELETE", f"/unknown/faces/{fid}")):
        error(c.request(method, url, headers={"X-API-Key": "read-key"}), 403, "forbidden")
    error(c.post(f"/unknown/{cid}/enroll", json={"label": "x"}, headers={"X-API-Key": "read-key"}), 403, "forbidden")


def test_deployment_wide_keeping_hides_ids_from_an_identify_key(made, store):  # noqa: F811
    keys = [ApiKey(name="door", sha256=hash_key("door-key"), scopes=["identify"])]
    c, _ = made(api_keys=keys, remember_unknown=True)
    r = c.post("/identify", headers={"X-API-Key": "door-key"}, files={"file": ("p.png", tiles_png([GREY]), "image/png")})
    assert r.status_code == 200 and r.json()["faces"][0]["cluster_id"] is None
    assert rows(store, UnknownFace) == 1  # kept (the deployment asked for it), shown to nobody with this key


def test_a_cluster_that_resembles_an_enrolled_identity_carries_it_as_its_suggestion(made, store):  # noqa: F811
    c, _ = made()
    first = identify(c, [RED, GREY], remember_unknown="true")
    assert [f["status"] for f in first] == ["unknown", "unknown"]
    assert enroll(c, "red", [RED]).status_code == 201  # the same person enrolled since
    assert c.post("/unknown/refine").status_code == 200
    by_id = {i["id"]: i for i in c.get("/unknown", params={"min_faces": 1}).json()["items"]}
    red, grey = by_id[first[0]["cluster_id"]], by_id[first[1]["cluster_id"]]
    assert red["suggestion"]["identity"]["label"] == "red" and red["suggestion"]["score"] > 0.99
    assert grey["suggestion"] is None
    assert c.post(f"/unknown/{red['id']}/dismiss").json()["suggestion"] is None  # never suggested again
    c.post("/unknown/refine")
    assert c.get(f"/unknown/{red['id']}").json()["suggestion"] is None


@pytest.mark.parametrize("probes", [True, False], ids=["probes kept", "probes off"])
def test_unknown_faces_ride_on_the_probes_commit(made, store, probes):  # noqa: F811
    """With probes kept, an answer's unknown faces are written in their transaction: one commit per answer, not
    two; with probes off they are kept on their own."""
    from sqlalchemy import event

    c, _ = made(**({} if probes else {"probe_retention_s": 0}))
    assert enroll(c, "red", [RED]).status_code == 201
    commits = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(store.engine, "commit", listener)
    try:
        faces = identify(c, [RED, GREY, TEAL], remember_unknown="true")
    finally:
        event.remove(store.engine, "commit", listener)
    assert [f["status"] for f in faces] == ["match", "unknown", "unknown"]
    assert faces[0]["unknown_face_id"] is None and all(f["unknown_face_id"] and f["cluster_id"] for f in faces[1:])
    assert rows(store, UnknownFace) == 2
    assert len(commits) == 1  # probes kept: theirs, with the unknown faces (it was 2); off: the unknown faces' own
    assert (None in {f["probe_id"] for f in faces}) is (not probes)
    again = identify(c, [RED, GREY, TEAL], remember_unknown="true")  # the same photo: its faces kept once
    assert [f["unknown_face_id"] for f in again] == [f["unknown_face_id"] for f in faces]
    assert rows(store, UnknownFace) == 2
