"""The face endpoints over real HTTP with real weights and real photos."""
from __future__ import annotations

import base64

import numpy as np
import pytest

pytestmark = [pytest.mark.faces, pytest.mark.slow]


def upload(path):
    return (path.name, path.read_bytes())


def test_embed_returns_unit_vectors_with_model_version(client, faces):
    r = client.post("/embed", files={"file": upload(faces / "multi" / "couple.jpg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["faces"]) == 2
    for f in body["faces"]:
        v = np.array(f["embedding"])
        assert v.shape == (512,) and abs(np.linalg.norm(v) - 1) < 1e-4
        assert len(f["landmarks"]) == 5 and f["detection_score"] > 0.9
    assert body["model_version"] == client.get("/ready").json()["model_version"]


def test_json_base64_body_gives_the_same_embedding(client, faces):
    path = faces / "photos" / "Matt_Damon" / sorted(p.name for p in (faces / "photos" / "Matt_Damon").iterdir())[0]
    a = client.post("/embed", files={"file": upload(path)}).json()
    b = client.post("/embed", json={"image": base64.b64encode(path.read_bytes()).decode()}).json()
    assert np.allclose(a["faces"][0]["embedding"], b["faces"][0]["embedding"], atol=1e-5)


def test_selfie_identifies_angelina_and_no_one_else(client, faces):
    photos = sorted((faces / "photos" / "Angelina_Jolie").glob("*.jpg"))[:4]
    r = client.post("/enroll", data={"label": "Angelina_Jolie"}, files=[("files", upload(p)) for p in photos])
    assert r.status_code == 201, r.text
    assert r.json()["identity"]["face_count"] == len(photos)
    r = client.post("/identify", files={"file": upload(faces / "multi" / "selfie-many-people.jpg")})
    body = r.json()
    assert r.status_code == 200
    matched = [f for f in body["faces"] if f["status"] == "match"]
    assert len(body["faces"]) >= 6
    assert [f["identity"]["label"] for f in matched] == ["Angelina_Jolie"]
    assert all(f["identity"] is None and f["score"] < f["threshold"] for f in body["faces"] if f not in matched)
    assert all(f["score"] >= f["threshold"] for f in matched)


def test_verify_two_images_and_image_against_identity(client, faces):
    d = faces / "photos" / "Leonardo_DiCaprio"
    imgs = sorted(d.glob("*.jpg"))
    other = sorted((faces / "photos" / "Jeff_Bezos").glob("*.jpg"))[0]
    same = client.post("/verify", files={"file": upload(imgs[0]), "file_b": upload(imgs[1])}).json()
    diff = client.post("/verify", files={"file": upload(imgs[0]), "file_b": upload(other)}).json()
    assert same["same_person"] is True and diff["same_person"] is False
    assert same["score"] > diff["score"]
    ident = client.post("/enroll", data={"label": "Leonardo"}, files={"files": upload(imgs[0])}).json()["identity"]
    v = client.post("/verify", data={"identity_id": str(ident["id"])}, files={"file": upload(imgs[1])}).json()
    assert v["same_person"] is True and abs(v["score"] - same["score"]) < 0.05


def test_gallery_management(client, faces):
    imgs = sorted((faces / "photos" / "George_Clooney").glob("*.jpg"))[:2]
    created = client.post("/enroll", data={"label": "gc"}, files=[("files", upload(p)) for p in imgs]).json()
    iid = created["identity"]["id"]
    page = client.get("/identities", params={"prefix": "gc"}).json()
    assert [i["label"] for i in page["items"]] == ["gc"] and page["total"] == 1
    assert client.patch(f"/identities/{iid}", json={"label": "George Clooney"}).json()["label"] == "George Clooney"
    detail = client.get(f"/identities/{iid}").json()
    assert detail["face_count"] == 2 and len(detail["faces"]) == 2
    fid = detail["faces"][0]["id"]
    crop = client.get(f"/faces/{fid}/crop")
    assert crop.headers["content-type"] == "image/png" and crop.content[:4] == b"\x89PNG"
    r = client.post("/identify", files={"file": upload(imgs[1])}).json()
    assert r["faces"][0]["identity"]["label"] == "George Clooney"
    assert client.delete(f"/faces/{fid}").status_code == 204
    assert client.get(f"/identities/{iid}").json()["face_count"] == 1
    assert client.delete(f"/identities/{iid}").status_code == 204
    assert client.get(f"/identities/{iid}").status_code == 404
    r = client.post("/identify", files={"file": upload(imgs[1])}).json()
    assert all(m["identity_id"] != iid for f in r["faces"] for m in f["matches"])


def test_rename_to_an_existing_label_conflicts(client, faces):
    img = sorted((faces / "photos" / "Katy_Perry").glob("*.jpg"))[0]
    a = client.post("/enroll", data={"label": "kp-a"}, files={"files": upload(img)}).json()["identity"]["id"]
    client.post("/enroll", data={"label": "kp-b"}, files={"files": upload(img)})
    r = client.patch(f"/identities/{a}", json={"label": "kp-b"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "label_taken"


def test_enroll_with_several_faces_needs_face_index(client, faces):
    couple = faces / "multi" / "couple.jpg"
    r = client.post("/enroll", data={"label": "couple"}, files={"files": upload(couple)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "ambiguous_face"
    assert len(r.json()["error"]["detail"]["faces"]) == 2
    r = client.post("/enroll", data={"label": "couple-left", "face_index": "0"}, files={"files": upload(couple)})
    assert r.status_code == 201, r.text
