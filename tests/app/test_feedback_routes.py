"""Corrections in process (TestClient, the real FaceService, store and index over fake networks): identify
answers carry probe ids, POST /feedback on a probe or an upload, list/get/delete, moving faces; every bad input
answers 4xx and changes nothing."""
from __future__ import annotations

import base64

import numpy as np
import pytest
from sqlalchemy import func, select

from app.core.security import ApiKey, hash_key
from app.gallery.feedback import FaceCrop, FeedbackStore
from app.gallery.models import Feedback, Probe
from app.gallery.store import png_to_crop
from tests.app.fakes import tiles_png
from tests.app.test_routes import enroll, error, make_client, store  # noqa: F401 - fixtures

RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)


@pytest.fixture
def client(store, tmp_path):  # noqa: F811 - `store` is the imported fixture
    c, service = make_client(store, tmp_path)
    yield c
    service.close()


@pytest.fixture
def ada_bob(client):
    """Ada (red) and Bob (green) enrolled; their identity ids."""
    a = enroll(client, "Ada", [RED]).json()["identity"]["id"]
    b = enroll(client, "Bob", [GREEN]).json()["identity"]["id"]
    return a, b


def identify(client, colours) -> list[dict]:
    r = client.post("/identify", files={"file": ("p.png", tiles_png(colours), "image/png")})
    assert r.status_code == 200, r.text
    return sorted(r.json()["faces"], key=lambda f: f["box"][0])


def counts(store) -> tuple[int, int, list]:  # noqa: F811
    with store.sessions() as s:
        return (s.scalar(select(func.count(Feedback.id))), s.scalar(select(func.count(Probe.id))),
                [(i.id, i.label, n) for i, n in store.list_identities(0, 100)[0]])


def test_identify_answers_carry_probe_ids_that_keep_the_face(client, store, ada_bob):  # noqa: F811
    faces = identify(client, [RED, BLUE])
    assert [f["status"] for f in faces] == ["match", "unknown"]
    ids = [f["probe_id"] for f in faces]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 2
    probe = FeedbackStore(store).get_probe(ids[1])
    assert probe.model_version == "fake-v1" and probe.status == "unknown" and probe.box == faces[1]["box"]
    assert tuple(png_to_crop(probe.crop_png).reshape(-1, 3).mean(0).round()) == BLUE


def test_report_on_a_probe_is_stored_listed_and_deletable(client, store, ada_bob):  # noqa: F811
    ada, bob = ada_bob
    red = identify(client, [RED])[0]
    assert red["identity"]["id"] == ada
    r = client.post("/feedback", json={"kind": "is", "identity_id": bob, "probe_id": red["probe_id"]})
    assert r.status_code == 201, r.text
    fb = r.json()
    assert fb["kind"] == "is" and fb["identity"] == {"id": bob, "label": "Bob"}
    assert fb["answered_identity"] == {"id": ada, "label": "Ada"}  # the mistake: a hard negative for Ada
    assert fb["answered_score"] == pytest.approx(red["score"]) and fb["probe_id"] == red["probe_id"]
    assert fb["model_version"] == "fake-v1" and fb["box"] == red["box"] and fb["reported_by"] is None
    crop = client.get(f"/feedback/{fb['id']}/crop")
    assert crop.headers["content-type"] == "image/png"
    assert tuple(png_to_crop(crop.content).reshape(-1, 3).mean(0).round()) == RED
    assert client.get(f"/feedback/{fb['id']}").json() == fb
    page = client.get("/feedback").json()
    assert page["total"] == 1 and page["items"] == [fb]
    assert client.delete(f"/feedback/{fb['id']}").status_code == 204
    error(client.get(f"/feedback/{fb['id']}"), 404, "unknown_feedback")
    error(client.delete(f"/feedback/{fb['id']}"), 404, "unknown_feedback")
    assert client.get("/feedback").json()["total"] == 0


def test_an_unknown_answer_names_no_answered_identity(client, ada_bob):
    blue = identify(client, [BLUE])[0]
    r = client.post("/feedback", json={"kind": "nobody", "probe_id": blue["probe_id"]})
    assert r.status_code == 201, r.text
    assert r.json()["identity"] is None and r.json()["answered_identity"] is None


@pytest.mark.parametrize("as_json", [False, True])
def test_report_with_an_upload_picks_the_face(client, ada_bob, as_json):
    ada, _ = ada_bob
    image = tiles_png([GREY, BLUE])
    if as_json:
        r = client.post("/feedback", json={"kind": "is_not", "identity_id": ada, "face_index": 1,
                                           "image": base64.b64encode(image).decode()})
    else:
        r = client.post("/feedback", data={"kind": "is_not", "identity_id": str(ada), "face_index": "1"},
                        files={"file": ("p.png", image, "image/png")})
    assert r.status_code == 201, r.text
    fb = r.json()
    assert fb["identity"]["id"] == ada and fb["probe_id"] is None and fb["answered_identity"] is None
    detected = client.post("/embed", files={"file": ("p.png", image, "image/png")}).json()["faces"]
    assert fb["box"] == detected[1]["box"] != detected[0]["box"]


def _bad_requests(ada: int, probe: int) -> list:
    img = ("p.png", tiles_png([RED]), "image/png")
    two = ("p.png", tiles_png([RED, GREEN]), "image/png")
    return [
        ({"json": {"kind": "is", "identity_id": ada, "probe_id": 999_999}}, 404, "unknown_probe"),
        ({"json": {"kind": "is", "identity_id": 999_999, "probe_id": probe}}, 404, "unknown_identity"),
        ({"json": {"kind": "is", "identity_id": 2**40, "probe_id": probe}}, 404, "unknown_identity"),
        ({"data": {"kind": "is", "identity_id": "999999"}, "files": {"file": img}}, 404, "unknown_identity"),
        ({"json": {"kind": "maybe", "identity_id": ada, "probe_id": probe}}, 422, "invalid_request"),
        ({"data": {"kind": "maybe", "identity_id": str(ada)}, "files": {"file": img}}, 422, "invalid_field"),
        ({"json": {"kind": "is", "probe_id": probe}}, 422, "invalid_request"),
        ({"json": {"kind": "is_not", "probe_id": probe}}, 422, "invalid_request"),
        ({"json": {"kind": "nobody", "identity_id": ada, "probe_id": probe}}, 422, "invalid_request"),
        ({"json": {"kind": "nobody"}}, 422, "invalid_request"),
        ({"json": {"kind": "nobody", "probe_id": probe, "image": base64.b64encode(img[1]).decode()}}, 422,
         "invalid_request"),
        ({"json": {"kind": "nobody", "probe_id": probe, "face_index": 0}}, 422, "invalid_request"),
        ({"json": {"kind": "nobody", "probe_id": 0}}, 422, "invalid_request"),
        ({"json": {"kind": "nobody", "probe_id": probe, "extra": 1}}, 422, "invalid_request"),
        ({"data": {"kind": "nobody", "probe_id": "x"}}, 422, "invalid_field"),
        ({"data": {"kind": "nobody"}, "files": {"file": two}}, 422, "ambiguous_face"),
        ({"data": {"kind": "nobody", "face_index": "5"}, "files": {"file": img}}, 422, "face_index_out_of_range"),
        ({"data": {"kind": "nobody"}, "files": {"file": ("p.png", b"not an image", "image/png")}}, 422,
         "not_an_image"),
        ({"content": b"kind=is", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
    ]


def test_bad_reports_answer_4xx_and_change_nothing(client, store, ada_bob):  # noqa: F811
    probe = identify(client, [RED])[0]["probe_id"]
    before = counts(store)
    for kwargs, status, code in _bad_requests(ada_bob[0], probe):
        error(client.post("/feedback", **kwargs), status, code)
        assert counts(store) == before, (kwargs, code)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"kind": "maybe"},
                                    {"identity_id": 0}])
def test_feedback_list_refuses_bad_parameters(client, params):
    error(client.get("/feedback", params=params), 422, "invalid_request")


def test_feedback_list_pages_and_filters(client, ada_bob):
    ada, bob = ada_bob
    for body in ({"kind": "is", "identity_id": bob}, {"kind": "is_not", "identity_id": bob}, {"kind": "nobody"}):
        for p in [f["probe_id"] for f in identify(client, [RED, GREEN, BLUE])]:  # one report per probe and key
            assert client.post("/feedback", json={**body, "probe_id": p}).status_code == 201
    page = client.get("/feedback", params={"offset": 2, "limit": 4}).json()
    assert page["total"] == 9 and [i["id"] for i in page["items"]] == [3, 4, 5, 6]
    assert client.get("/feedback", params={"kind": "nobody"}).json()["total"] == 3
    assert {i["kind"] for i in client.get("/feedback", params={"identity_id": bob}).json()["items"]} == {"is", "is_not"}


def test_deleting_an_identity_deletes_its_reports_and_forgets_it_as_answered(client, ada_bob):
    ada, bob = ada_bob
    red, red2 = (identify(client, [RED])[0]["probe_id"] for _ in range(2))
    client.post("/feedback", json={"kind": "is", "identity_id": bob, "probe_id": red})   # answered: Ada
    client.post("/feedback", json={"kind": "is_not", "identity_id": ada, "probe_id": red2})
    assert client.delete(f"/identities/{ada}").status_code == 204
    items = client.get("/feedback").json()["items"]
    assert [(i["kind"], i["identity"]["id"], i["answered_identity"]) for i in items] == [("is", bob, None)]


def test_merge_moves_the_reports_with_the_faces(client, ada_bob):
    ada, bob = ada_bob
    red = identify(client, [RED])[0]["probe_id"]
    client.post("/feedback", json={"kind": "is_not", "identity_id": ada, "probe_id": red})
    assert client.post(f"/identities/{bob}/merge", json={"from_identity_id": ada}).status_code == 200
    [item] = client.get("/feedback").json()["items"]
    assert item["identity"]["id"] == bob and item["answered_identity"]["id"] == bob


def test_retention_zero_keeps_no_probes(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path, probe_retention_s=0)
    enroll(c, "Ada", [RED])
    assert [f["probe_id"] for f in identify(c, [RED, BLUE])] == [None, None]
    assert counts(store)[1] == 0
    service.close()


def test_expired_probes_are_not_found_and_are_pruned(store):  # noqa: F811
    fs = FeedbackStore(store, prune_every_s=0.0)
    face = FaceCrop(b"png", 8, 0, "0" * 64, [0, 0, 8, 8], [[0, 0]] * 5, 0.99, "m1")
    [old] = fs.keep_probes([(face, "unknown", None, None)], retention_s=-1)  # expired on arrival
    assert fs.get_probe(old) is None
    [new] = fs.keep_probes([(face, "unknown", None, None)], retention_s=3600)  # prunes the expired one
    assert fs.get_probe(new) is not None
    with store.sessions() as s:
        assert s.scalars(select(Probe.id)).all() == [new]


def test_move_a_face_to_another_identity_and_to_a_new_one(client, store):  # noqa: F811
    ada = enroll(client, "Ada", [RED, RED]).json()
    bob = enroll(client, "Bob", [GREEN]).json()["identity"]["id"]
    f1, f2 = (f["id"] for f in ada["faces"])
    r = client.post(f"/faces/{f1}/move", json={"identity_id": bob})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["face"]["identity_id"] == bob and body["identity"]["face_count"] == 2
    assert body["created"] is False and body["deleted_identity_id"] is None
    # the index follows the move: Bob's template now mixes red and green, Ada keeps red only
    tmpl = store.templates("fake-v1")
    assert tmpl[bob][1] == 2 and tmpl[ada["identity"]["id"]][1] == 1
    r = client.post(f"/faces/{f2}/move", json={"label": " Cy "})
    body = r.json()
    assert r.status_code == 200 and body["created"] is True and body["identity"]["label"] == "Cy"
    assert body["deleted_identity_id"] == ada["identity"]["id"]  # its last face left
    error(client.get(f"/identities/{ada['identity']['id']}"), 404, "unknown_identity")
    assert identify(client, [RED])[0]["identity"]["label"] == "Cy"
    again = client.post(f"/faces/{f2}/move", json={"label": "Cy"})  # already there: nothing to do
    assert again.status_code == 200 and again.json()["created"] is False
    assert client.post(f"/faces/{f2}/move", json={"label": "Bob"}).json()["identity"]["id"] == bob


@pytest.mark.parametrize("path, body, status, code", [
    ("/faces/999/move", {"identity_id": 1}, 404, "unknown_face"),
    ("/faces/1/move", {"identity_id": 999}, 404, "unknown_identity"),
    ("/faces/1/move", {"identity_id": 2**40}, 404, "unknown_identity"),
    ("/faces/1/move", {}, 422, "invalid_request"),
    ("/faces/1/move", {"identity_id": 1, "label": "x"}, 422, "invalid_request"),
    ("/faces/1/move", {"label": "\u200b"}, 422, "invalid_request"),
    ("/faces/1/move", {"label": ""}, 422, "invalid_request"),
    ("/faces/1/move", {"identity_id": 0}, 422, "invalid_request"),
    ("/faces/0/move", {"identity_id": 1}, 422, "invalid_request"),
    ("/faces/1/move", {"identity_id": 1, "extra": True}, 422, "invalid_request"),
])
def test_move_refuses_bad_input_and_changes_nothing(client, store, path, body, status, code):  # noqa: F811
    enroll(client, "Ada", [RED])
    before = (counts(store), store.generation())
    error(client.post(path, json=body), status, code)
    assert (counts(store), store.generation()) == before


def test_feedback_scopes_in_process(store, tmp_path):  # noqa: F811
    keys = {"identify": "i" * 32, "read": "r" * 32, "write": "w" * 32}
    c, service = make_client(store, tmp_path, api_keys=[
        ApiKey(name=f"{s}-key", sha256=hash_key(k), scopes=[s]) for s, k in keys.items()])
    w = {"X-API-Key": keys["write"]}
    assert c.post("/enroll", data={"label": "Ada"}, files={"files": ("a.png", tiles_png([RED]), "image/png")},
                  headers=w).status_code == 201
    r = c.post("/identify", files={"file": ("p.png", tiles_png([RED]), "image/png")},
               headers={"X-API-Key": keys["identify"]})
    probe = r.json()["faces"][0]["probe_id"]
    body = {"kind": "is_not", "identity_id": 1, "probe_id": probe}
    error(c.post("/feedback", json=body), 401, "unauthorized")
    error(c.post("/feedback", json=body, headers={"X-API-Key": keys["read"]}), 403, "forbidden")
    error(c.post("/faces/1/move", json={"label": "B"}, headers={"X-API-Key": keys["read"]}), 403, "forbidden")
    error(c.get("/feedback", headers={"X-API-Key": keys["identify"]}), 403, "forbidden")
    error(c.post("/feedback", json=body, headers=w), 404, "unknown_probe")  # the identify key's answer, not ours
    r = c.post("/identify", files={"file": ("p.png", tiles_png([RED]), "image/png")}, headers=w)
    r = c.post("/feedback", json={**body, "probe_id": r.json()["faces"][0]["probe_id"]}, headers=w)
    assert r.status_code == 201 and r.json()["reported_by"] == "write-key"
    assert c.get("/feedback", headers={"X-API-Key": keys["read"]}).json()["total"] == 1
    error(c.delete("/feedback/1", headers={"X-API-Key": keys["read"]}), 403, "forbidden")
    assert c.delete("/feedback/1", headers=w).status_code == 204
    service.close()


def test_crops_are_stored_losslessly(client, store, ada_bob):  # noqa: F811
    red = identify(client, [RED])[0]
    fb = client.post("/feedback", json={"kind": "nobody", "probe_id": red["probe_id"]}).json()
    crop = png_to_crop(client.get(f"/feedback/{fb['id']}/crop").content)
    assert crop.shape == (32, 32, 3) and np.all(crop == np.array(RED, np.uint8))
