"""GET /faces?source_sha256 and POST /faces/import with real weights and photos (the app in process)."""
from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import gallery_state

pytestmark = [pytest.mark.faces, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(app_client):
    """The app in process (nothing here needs a socket), real weights, both backends."""
    return app_client


@pytest.fixture(scope="module")
def enrolled(client, faces):
    """One enrolled Scarlett Johansson photo: (its bytes, the enrolled face as the API shows it)."""
    path = sorted((faces / "photos" / "Scarlett_Johansson").glob("*.jpg"))[0]
    r = client.post("/enroll", data={"label": "sj-transfer"}, files={"files": (path.name, path.read_bytes())})
    assert r.status_code == 201, r.text
    return path.read_bytes(), r.json()["faces"][0]


def test_faces_by_source_hash_finds_the_enrolled_face_with_its_label(client, enrolled):
    data, face = enrolled
    sha = hashlib.sha256(data).hexdigest()
    assert face["source_sha256"] == sha and len(face["landmarks"]) == 5 and face["crop_size"] == 160
    r = client.get("/faces", params={"source_sha256": [sha, "0" * 64]})
    assert r.status_code == 200, r.text
    found = [f for f in r.json()["items"] if f["id"] == face["id"]]
    assert len(found) == 1 and found[0]["label"] == "sj-transfer" and found[0]["box"] == face["box"]
    assert all(f["source_sha256"] == sha for f in r.json()["items"])


@pytest.mark.parametrize("params", [{"source_sha256": "abc"}, {"source_sha256": ["0" * 64] * 101}, {}])
def test_faces_by_source_hash_refuses_bad_queries(client, params):
    r = client.get("/faces", params=params)
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_field", "invalid_request")


def _import_body(label, face, crop: bytes) -> dict:
    return {"label": label, "faces": [{"crop": base64.b64encode(crop).decode(), "source_sha256": face["source_sha256"],
                                       "box": face["box"], "landmarks": face["landmarks"],
                                       "detection_score": face["detection_score"], "crop_margin": face["crop_margin"]}]}


def test_import_embeds_a_stored_crop_as_the_original_enrollment_did(client, enrolled):
    data, face = enrolled
    crop = client.get(f"/faces/{face['id']}/crop").content
    r = client.post("/faces/import", json=_import_body("sj-imported", face, crop))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] and body["identity"]["label"] == "sj-imported" and body["identity"]["face_count"] == 1
    new = body["faces"][0]
    assert (new["source_sha256"], new["box"], new["landmarks"]) == (face["source_sha256"], face["box"], face["landmarks"])
    stored = client.get(f"/faces/{new['id']}/crop").content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), np.asarray(Image.open(io.BytesIO(crop))))
    # the same pixels, the same model: both identities score alike against the original photo
    matches = client.post("/identify", files={"file": ("a.jpg", data)}, params={"top_k": 10}).json()["faces"][0]["matches"]
    scores = {m["label"]: m["score"] for m in matches}
    assert abs(scores["sj-imported"] - scores["sj-transfer"]) < 1e-3 and scores["sj-imported"] > 0.99


@pytest.mark.parametrize("change", ["small_crop", "not_base64", "not_an_image", "nan_box"])
def test_import_refuses_a_bad_crop_and_changes_nothing(client, enrolled, change):
    _, face = enrolled
    crop = client.get(f"/faces/{face['id']}/crop").content
    body = _import_body("sj-bad", face, crop)
    if change == "small_crop":
        buf = io.BytesIO()
        Image.open(io.BytesIO(crop)).resize((100, 100)).save(buf, "PNG")
        body["faces"][0]["crop"] = base64.b64encode(buf.getvalue()).decode()
    elif change == "not_base64":
        body["faces"][0]["crop"] = "%%%"
    elif change == "not_an_image":
        body["faces"][0]["crop"] = base64.b64encode(b"hello").decode()
    else:
        body = str(body).replace("'", '"').replace(str(face["box"][0]), "NaN", 1)
    before = gallery_state(client)
    r = client.post("/faces/import", json=body) if isinstance(body, dict) else \
        client.post("/faces/import", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    code = r.json()["error"]["code"]
    assert code == {"small_crop": "crop_size_mismatch", "not_base64": "invalid_base64"}.get(change, code)
    assert gallery_state(client) == before
