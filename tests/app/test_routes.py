"""Every route in process: FastAPI's TestClient, the service swapped in with `app.dependency_overrides`
(the real FaceService, store and index over fake networks: no weights, no server). Success and error paths.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.deps import get_service
from app.core.config import Settings
from app.core.security import ApiKey, hash_key
from app.main import create_app
from tests.app.conftest import copied_store
from tests.app.fakes import FakeEmbedder, fake_service, tiles_png

RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120)
LOW_SCORE = (90, 90, 1)  # the fake detector scores a blue channel of 1 at 0.5


@pytest.fixture
def store(migrated_db, tmp_path):  # `migrated_db`: tests/app/conftest.py's, migrated once per session
    with copied_store(migrated_db, tmp_path) as s:
        yield s


def make_client(store, tmp_path, **overrides) -> tuple[TestClient, object]:
    settings = Settings(**{"database_url": f"sqlite:///{tmp_path / 'unused.db'}", "api_keys": [], "batching": False,
                           "checkpoints_dir": tmp_path / "checkpoints", **overrides})
    service = fake_service(settings, store)
    app = create_app(settings)
    app.dependency_overrides[get_service] = lambda: service
    return TestClient(app, base_url="http://localhost"), service  # no `with`: the lifespan (model loading) does not run


@pytest.fixture
def client(store, tmp_path):
    c, service = make_client(store, tmp_path)
    yield c
    service.close()


def enroll(client, label, images, **data):
    """`images`: one entry per image, a colour (one face) or a list of colours."""
    images = [[im] if isinstance(im, tuple) else im for im in images]
    return client.post("/enroll", data={"label": label, **data},
                       files=[("files", (f"{i}.png", tiles_png(c), "image/png")) for i, c in enumerate(images)])


def error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code, body
    return body["error"]


# --- embed ---------------------------------------------------------------------------------------------
def test_embed_returns_every_face_with_a_unit_embedding(client):
    r = client.post("/embed", files={"file": ("a.png", tiles_png([RED, GREEN]), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "fake-v1" and body["image_width"] == 220 and body["image_height"] == 120
    assert sorted(f["box"] for f in body["faces"]) == [[20, 20, 100, 100], [120, 20, 200, 100]]
    for f in body["faces"]:
        assert abs(np.linalg.norm(f["embedding"]) - 1) < 1e-5 and len(f["landmarks"]) == 5


def test_embed_accepts_json_base64(client):
    r = client.post("/embed", json={"image": base64.b64encode(tiles_png([RED])).decode()})
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


@pytest.mark.parametrize("kwargs, status, code", [
    ({"files": {"other": ("a.png", b"x", "image/png")}}, 422, "unexpected_field"),
    ({"data": {"x": "1"}}, 422, "missing_file"),
    ({"files": {"file": ("a.png", b"", "image/png")}}, 422, "empty_image"),
    ({"files": {"file": ("a.txt", b"not an image", "text/plain")}}, 422, "not_an_image"),
    ({"json": {"image": "%%%"}}, 422, "invalid_base64"),
    ({"json": {"picture": "AAAA"}}, 422, "invalid_request"),
    ({"content": b"raw", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
])
def test_embed_refuses_bad_input(client, kwargs, status, code):
    error(client.post("/embed", **kwargs), status, code)


def test_a_model_failure_is_a_logged_500_in_the_error_shape(store, tmp_path):
    c, service = make_client(store, tmp_path)

    def broken(crops, max_batch_size=64):
        raise RuntimeError("the network broke")

    service.serving.embedder.embed = broken
    r = TestClient(c.app, base_url="http://localhost", raise_server_exceptions=False).post(
        "/embed", files={"file": ("a.png", tiles_png([RED]), "image/png")})
    error(r, 500, "internal_error")
    service.close()


# --- enroll --------------------------------------------------------------------------------------------
def test_enroll_creates_then_adds_to_an_identity(client):
    r = enroll(client, "Ada", [RED])
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["created"] is True and first["identity"]["label"] == "Ada" and first["identity"]["face_count"] == 1
    r = enroll(client, "Ada", [RED, RED])
    assert r.status_code == 201 and r.json()["created"] is False and r.json()["identity"]["face_count"] == 3
    assert r.json()["identity"]["id"] == first["identity"]["id"]


def test_enroll_json(client):
    r = client.post("/enroll", json={"label": "Ada", "images": [base64.b64encode(tiles_png([RED])).decode()]})
    assert r.status_code == 201, r.text


def test_enroll_picks_the_face_by_index_or_box(client, store):
    order = [f["box"] for f in client.post("/embed", files={"file": ("a.png", tiles_png([RED, GREEN]))}).json()["faces"]]
    r = enroll(client, "Two", [[RED, GREEN]], face_index="1")  # face_index counts as /embed lists the faces
    assert r.status_code == 201, r.text
    assert r.json()["faces"][0]["box"] == order[1]
    r = enroll(client, "Box", [[RED, GREEN]], face_box="15,15,105,105")
    assert r.status_code == 201, r.text
    assert r.json()["faces"][0]["box"] == [20, 20, 100, 100]


@pytest.mark.parametrize("colours, data, status, code", [
    ([[]], {}, 422, "no_face"),
    ([[RED, GREEN]], {}, 422, "ambiguous_face"),
    ([[LOW_SCORE]], {}, 422, "face_not_usable"),
    ([[LOW_SCORE]], {"face_index": "0"}, 422, "face_quality"),
    ([[RED]], {"face_index": "3"}, 422, "face_index_out_of_range"),
    ([[RED]], {"face_index": "-1"}, 422, "invalid_field"),
    ([[RED]], {"face_index": "one"}, 422, "invalid_field"),
    ([[RED]], {"face_box": "300,300,400,400"}, 422, "face_box_no_match"),
    ([[RED]], {"face_box": "1,2,3"}, 422, "invalid_field"),
    ([[RED]], {"label": ""}, 422, "invalid_field"),
    ([[RED]], {"label": "x" * 201}, 422, "invalid_field"),
    ([[RED]] * 11, {}, 413, "too_many_files"),
])
def test_enroll_refuses_bad_input_and_changes_nothing(client, store, colours, data, status, code):
    before = store.counts(), store.generation()
    r = client.post("/enroll", data={"label": "Ada", **data},
                    files=[("files", (f"{i}.png", tiles_png(c), "image/png")) for i, c in enumerate(colours)])
    error(r, status, code)
    assert (store.counts(), store.generation()) == before


def test_enroll_where_one_image_fails_stores_none_of_them(client, store):
    error(enroll(client, "Ada", [[RED], []]), 422, "no_face")
    assert store.counts() == {"identities": 0, "faces": 0}


def test_ambiguous_enroll_lists_the_faces(client):
    detail = error(enroll(client, "Ada", [[RED, GREEN]]), 422, "ambiguous_face")["detail"]
    assert [f["face_index"] for f in detail["faces"]] == [0, 1]


# --- identify ------------------------------------------------------------------------------------------
def test_identify_matches_enrolled_and_flags_unknown(client):
    ada = enroll(client, "Ada", [RED]).json()["identity"]
    enroll(client, "Bob", [GREEN])
    r = client.post("/identify", files={"file": ("p.png", tiles_png([RED, GREY]), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == 0.5
    by_x = {f["box"][0]: f for f in body["faces"]}
    red, grey = by_x[20], by_x[120]
    assert red["status"] == "match" and red["identity"] == {"id": ada["id"], "label": "Ada"}
    assert red["score"] == pytest.approx(1.0, abs=1e-5) and red["matches"][0]["label"] == "Ada"
    assert grey["status"] == "unknown" and grey["identity"] is None and grey["score"] < 0.5
    assert len(grey["matches"]) == 2  # top_k covers both identities, best first
    assert grey["matches"][0]["score"] >= grey["matches"][1]["score"]


def test_identify_top_k_and_threshold_parameters(client):
    enroll(client, "Ada", [RED])
    enroll(client, "Bob", [GREEN])
    r = client.post("/identify", params={"top_k": 1, "threshold": -1.0},
                    files={"file": ("p.png", tiles_png([GREY]), "image/png")})
    face = r.json()["faces"][0]
    assert r.json()["threshold"] == -1.0 and len(face["matches"]) == 1 and face["status"] == "match"


def test_identify_an_empty_gallery_and_an_image_without_faces(client):
    r = client.post("/identify", files={"file": ("p.png", tiles_png([RED]), "image/png")})
    assert r.status_code == 200 and r.json()["faces"][0]["status"] == "unknown"
    assert r.json()["faces"][0]["matches"] == []
    r = client.post("/identify", files={"file": ("p.png", tiles_png([]), "image/png")})
    assert r.status_code == 200 and r.json()["faces"] == []


@pytest.mark.parametrize("params", [{"top_k": 0}, {"top_k": 101}, {"threshold": 1.5}, {"top_k": "x"}])
def test_identify_refuses_bad_parameters(client, params):
    error(client.post("/identify", params=params, files={"file": ("p.png", tiles_png([RED]), "image/png")}),
          422, "invalid_request")


# --- verify --------------------------------------------------------------------------------------------
def test_verify_two_images(client):
    same = client.post("/verify", files={"file": ("a.png", tiles_png([RED]), "image/png"),
                                         "file_b": ("b.png", tiles_png([RED]), "image/png")})
    assert same.status_code == 200, same.text
    assert same.json()["same_person"] is True and same.json()["score"] == pytest.approx(1.0, abs=1e-5)
    other = client.post("/verify", files={"file": ("a.png", tiles_png([RED]), "image/png"),
                                          "file_b": ("b.png", tiles_png([GREEN]), "image/png")})
    assert other.json()["same_person"] is False and other.json()["threshold"] == 0.5


def test_verify_against_an_identity(client):
    ada = enroll(client, "Ada", [RED]).json()["identity"]["id"]
    r = client.post("/verify", data={"identity_id": str(ada)}, files={"file": ("a.png", tiles_png([RED]), "image/png")})
    assert r.status_code == 200 and r.json()["same_person"] is True
    r = client.post("/verify", json={"image": base64.b64encode(tiles_png([GREEN])).decode(), "identity_id": ada})
    assert r.status_code == 200 and r.json()["same_person"] is False


@pytest.mark.parametrize("files, data, status, code", [
    ({"file": tiles_png([RED])}, {}, 422, "invalid_request"),
    ({"file": tiles_png([RED]), "file_b": tiles_png([RED])}, {"identity_id": "1"}, 422, "invalid_request"),
    ({"file": tiles_png([RED])}, {"identity_id": "999"}, 404, "unknown_identity"),
    ({"file": tiles_png([]), "file_b": tiles_png([RED])}, {}, 422, "no_face"),
    ({"file": tiles_png([RED]), "file_b": tiles_png([])}, {}, 422, "no_face"),
])
def test_verify_refuses_bad_input(client, files, data, status, code):
    r = client.post("/verify", data=data, files={k: (f"{k}.png", v, "image/png") for k, v in files.items()})
    error(r, status, code)


# --- gallery -------------------------------------------------------------------------------------------
def test_identities_list_get_rename_delete(client, store):
    a = enroll(client, "Ada", [RED]).json()["identity"]["id"]
    b = enroll(client, "Bob", [GREEN]).json()["identity"]["id"]
    page = client.get("/identities", params={"limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["limit"] == 1
    assert [i["label"] for i in client.get("/identities", params={"prefix": "B"}).json()["items"]] == ["Bob"]
    detail = client.get(f"/identities/{a}").json()
    assert detail["label"] == "Ada" and len(detail["faces"]) == 1
    r = client.patch(f"/identities/{a}", json={"label": "Ada L."})
    assert r.status_code == 200 and r.json()["label"] == "Ada L."
    error(client.patch(f"/identities/{a}", json={"label": "Bob"}), 409, "label_taken")
    assert client.delete(f"/identities/{b}").status_code == 204
    assert store.counts() == {"identities": 1, "faces": 1}


@pytest.mark.parametrize("method, path, body, status, code", [
    ("get", "/identities/999", None, 404, "unknown_identity"),
    ("patch", "/identities/999", {"label": "x"}, 404, "unknown_identity"),
    ("delete", "/identities/999", None, 404, "unknown_identity"),
    ("post", "/identities/999/merge", {"from_identity_id": 1}, 404, "unknown_identity"),
    ("get", "/faces/999", None, 404, "unknown_face"),
    ("get", "/faces/999/crop", None, 404, "unknown_face"),
    ("delete", "/faces/999", None, 404, "unknown_face"),
    ("get", "/identities/0", None, 422, "invalid_request"),
    ("get", "/identities/abc", None, 422, "invalid_request"),
    ("get", "/identities?limit=501", None, 422, "invalid_request"),
    ("patch", "/identities/1", {"label": "two\nlines"}, 422, "invalid_request"),  # padding is stripped, not refused
    ("patch", "/identities/1", {"label": "Ada\u200b"}, 422, "invalid_request"),
    ("patch", "/identities/1", {"label": ""}, 422, "invalid_request"),
    ("get", "/nowhere", None, 404, "not_found"),
    ("put", "/identities", None, 405, "method_not_allowed"),
])
def test_gallery_errors(client, method, path, body, status, code):
    enroll(client, "Ada", [RED])
    error(client.request(method, path, json=body), status, code)


def test_merge_and_its_errors(client, store):
    a = enroll(client, "Ada", [RED]).json()["identity"]["id"]
    b = enroll(client, "Ada 2", [RED, RED]).json()["identity"]["id"]
    error(client.post(f"/identities/{a}/merge", json={"from_identity_id": a}), 422, "merge_into_self")
    error(client.post(f"/identities/{a}/merge", json={"from_identity_id": 999}), 404, "unknown_identity")
    r = client.post(f"/identities/{a}/merge", json={"from_identity_id": b})
    assert r.status_code == 200 and r.json()["face_count"] == 3
    assert store.get_identity(b) is None


def test_faces_get_crop_delete(client, store):
    face = enroll(client, "Ada", [RED]).json()["faces"][0]
    assert client.get(f"/faces/{face['id']}").json()["identity_id"] == face["identity_id"]
    crop = client.get(f"/faces/{face['id']}/crop")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
    arr = np.asarray(Image.open(io.BytesIO(crop.content)))
    assert arr.shape == (32, 32, 3) and (arr == RED).all()  # the stored crop is what the embedder saw
    assert client.delete(f"/faces/{face['id']}").status_code == 204
    assert store.counts() == {"identities": 0, "faces": 0}  # the last face takes its identity with it


# --- health, readiness, metrics ------------------------------------------------------------------------
def test_health_ready_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    enroll(client, "Ada", [RED])
    ready = client.get("/ready").json()
    assert ready["model_version"] == "fake-v1" and ready["identities"] == 1 and ready["faces"] == 1
    assert ready["indexed_vectors"] == 1 and ready["threshold"] == 0.5 and ready["batching"] is False
    assert ready["precision"] == "fp32" and ready["precision_reason"] == "fp32 requested"  # why this precision
    metrics = client.get("/metrics")
    assert metrics.status_code == 200, metrics.text
    assert 'faceid_gallery_size{kind="faces"} 1.0' in metrics.text, metrics.text  # what /metrics says is the gallery
    assert 'faceid_gallery_size{kind="identities"} 1.0' in metrics.text, metrics.text
    enroll(client, "Bob", [GREEN])
    metrics = client.get("/metrics").text
    assert 'faceid_gallery_size{kind="faces"} 2.0' in metrics and 'faceid_gallery_size{kind="identities"} 2.0' in metrics


def test_identify_says_where_its_time_went(client):
    """Server-Timing: every stage of an identification, in the order they ran, then `other` and `total`, and
    each counted in faceid_stage_seconds (one label: the stage)."""
    enroll(client, "Ada", [RED])
    r = client.post("/identify", files={"file": ("a.png", tiles_png([RED, GREEN]), "image/png")})
    assert r.status_code == 200, r.text
    stages = {}
    for part in r.headers["server-timing"].split(", "):
        name, dur = part.split(";dur=")
        stages[name] = float(dur)
    assert list(stages) == ["read", "decode", "detect", "align", "embed", "search", "probes", "other", "total"]
    assert all(v >= 0 for v in stages.values())
    assert sum(v for k, v in stages.items() if k != "total") == pytest.approx(stages["total"], abs=0.5)
    assert client.get("/health").headers["server-timing"].startswith("total;dur=")  # no stages: the total alone
    metrics = client.get("/metrics").text
    assert 'faceid_stage_seconds_count{stage="detect"}' in metrics and 'faceid_stage_seconds_count{stage="probes"}' in metrics


# --- admin ---------------------------------------------------------------------------------------------
def test_admin_model_state_and_reindex(client, store):
    enroll(client, "Ada", [RED])
    state = client.get("/admin/model").json()
    assert state["serving_version"] == "fake-v1" and state["swap"]["state"] == "idle"
    assert state["versions_in_gallery"] == {"fake-v1": 1}
    assert client.post("/admin/reindex").json()["serving_version"] == "fake-v1"
    assert client.get("/ready").json()["indexed_vectors"] == 1


@pytest.mark.parametrize("checkpoint, status, code", [
    ("missing.pt", 404, "unknown_checkpoint"),
    ("../outside.pt", 422, "checkpoint_outside_directory"),
    ("", 422, "invalid_request"),
])
def test_admin_swap_refuses_bad_checkpoints(client, checkpoint, status, code):
    error(client.post("/admin/model", json={"checkpoint": checkpoint}), status, code)
    assert client.get("/admin/model").json()["swap"]["state"] == "idle"


def test_admin_swap_refuses_a_file_that_is_not_a_checkpoint(client, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "junk.pt").write_bytes(b"not a checkpoint")
    error(client.post("/admin/model", json={"checkpoint": "junk.pt"}), 422, "invalid_checkpoint")
    assert client.get("/admin/model").json()["serving_version"] == "fake-v1"


# --- auth ----------------------------------------------------------------------------------------------
def test_keys_and_scopes_in_process(store, tmp_path):
    keys = {"read": "r" * 32, "write": "w" * 32}
    c, service = make_client(store, tmp_path, api_keys=[
        ApiKey(name=f"{s}-key", sha256=hash_key(k), scopes=[s]) for s, k in keys.items()])
    r = c.post("/embed", files={"file": ("a.png", tiles_png([RED]), "image/png")})
    error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "ApiKey"
    error(c.post("/enroll", data={"label": "Ada"}, files={"files": ("a.png", tiles_png([RED]), "image/png")},
                 headers={"X-API-Key": keys["read"]}), 403, "forbidden")
    r = c.post("/enroll", data={"label": "Ada"}, files={"files": ("a.png", tiles_png([RED]), "image/png")},
               headers={"X-API-Key": keys["write"]})
    assert r.status_code == 201, r.text
    assert c.get("/health").status_code == 200  # open
    service.close()


def test_openapi_lists_every_route(client):
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/embed", "/enroll", "/identify", "/verify", "/identities", "/identities/{identity_id}",
            "/identities/{identity_id}/merge", "/faces/{face_id}", "/faces/{face_id}/crop", "/health", "/ready",
            "/metrics", "/admin/model", "/admin/reindex", "/unknown", "/unknown/{cluster_id}", "/unknown/refine",
            "/unknown/{cluster_id}/enroll", "/unknown/{cluster_id}/dismiss", "/unknown/faces/{face_id}",
            "/unknown/faces/{face_id}/crop"} <= paths
    assert json.dumps  # noqa: B018 - keep the import honest for parametrised JSON bodies


@pytest.mark.parametrize("overrides, floor", [({}, 24.0), ({"search_min_face_size": 60}, 60.0),
                                              ({"detect_below_gate": True}, 0.0)])
def test_detection_looks_for_faces_down_to_the_search_gate(store, tmp_path, overrides, floor):
    """Every route asks the detector for faces of at least the search gate (one floor, so a face_index means
    the same face everywhere); FACEID_DETECT_BELOW_GATE asks for the smaller ones too."""
    c, service = make_client(store, tmp_path, **overrides)
    assert enroll(c, "red", [RED]).status_code == 201
    assert c.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).status_code == 200
    assert c.post("/embed", files={"file": ("a.png", tiles_png([RED]), "image/png")}).status_code == 200
    assert service.pipeline.detector.min_sizes == [[floor]] * 3
    service.close()


def test_a_search_face_below_the_size_gate_is_low_quality_not_unknown(store, tmp_path):
    """The 80 px tiles pass the default gate and match; with the gate above their size the same search is
    `low_quality`, with the reason and no identity (and it stays findable in `matches`)."""
    plain, service = make_client(store, tmp_path)
    assert enroll(plain, "red", [RED]).status_code == 201
    face = plain.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).json()["faces"][0]
    assert face["status"] == "match" and face["identity"]["label"] == "red" and face["score"] >= face["threshold"]
    service.close()
    gated, service = make_client(store, tmp_path, search_min_face_size=100)
    face = gated.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).json()["faces"][0]
    assert face["status"] == "low_quality" and face["identity"] is None
    assert "100 px" in face["quality_problem"] and face["matches"][0]["label"] == "red"
    service.close()


def test_each_face_needs_its_own_cohort_threshold(store, tmp_path):
    """With a cohort in the model's calibration, a face that resembles the cohort needs a higher score: two
    faces of one photo get different thresholds, each the normalised one plus the face's own shift (never
    below the floor), and each decision follows its own threshold."""
    from model.calibration.cohort import Cohort
    from model.calibration.pairs import normalised_pair_scores
    from model.calibration.tail import ImpostorTail

    probe = FakeEmbedder()
    red, green = probe.embed(np.stack([np.full((8, 8, 3), c, np.uint8) for c in (RED, GREEN)]))
    cohort = Cohort(red[None, :], top=1, weight=0.5, reference_shift=0.1)  # red: shift 0.5, green: about 0
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3000, 512)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    plain = ImpostorTail.from_scores((ref[:1500] * ref[1500:]).sum(1))
    tail = ImpostorTail.from_scores(normalised_pair_scores(ref[:800], np.arange(800), cohort))
    thresholds = {"cosine": 0.5, "impostor_tail": plain.to_dict(),
                  "normalised": {"cohort": cohort.to_dict(), "impostor_tail": tail.to_dict()}}
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", api_keys=[], batching=False,
                        checkpoints_dir=tmp_path / "checkpoints")
    service = fake_service(settings, store, FakeEmbedder(thresholds=thresholds))
    app = create_app(settings)
    app.dependency_overrides[get_service] = lambda: service
    client = TestClient(app, base_url="http://localhost")
    assert enroll(client, "red", [RED]).status_code == 201 and enroll(client, "green", [GREEN]).status_code == 201
    body = client.post("/identify", files={"file": ("a.png", tiles_png([RED, GREEN]), "image/png")}).json()
    op = body["operating_point"]
    assert op["normalisation"] == "cohort" and op["floor"] is not None
    by_label = {f["matches"][0]["label"]: f for f in body["faces"]}
    shifts = {"red": float(cohort.shift(red[None])[0]), "green": float(cohort.shift(green[None])[0])}
    assert shifts["red"] == pytest.approx(0.5, abs=1e-3) and abs(shifts["green"]) < 0.1
    for label, face in by_label.items():
        want = max(op["normalised_threshold"] + shifts[label], op["floor"])
        assert face["threshold"] == pytest.approx(want, abs=2e-4)
        assert face["status"] == ("match" if face["score"] >= face["threshold"] else "unknown")
    assert by_label["red"]["threshold"] > by_label["green"]["threshold"] + 0.3
    assert body["threshold"] == pytest.approx(max(op["normalised_threshold"] + 0.1, op["floor"]), abs=2e-4)
    service.close()


def test_verify_reports_its_false_accept_target_not_the_search_fpir(store, tmp_path):
    """Issue 28: /verify sent `target_far` from the operating point's `target_fpir`, and a 1:1 operating point
    carried the FAR in its FPIR field. A verification's target is FACEID_TARGET_FAR; it has no FPIR target."""
    from model.calibration.tail import ImpostorTail

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3000, 512)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    thresholds = {"cosine": 0.5, "impostor_tail": ImpostorTail.from_scores((ref[:1500] * ref[1500:]).sum(1)).to_dict()}
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", api_keys=[], batching=False,
                        checkpoints_dir=tmp_path / "checkpoints", target_fpir=0.05, target_far=0.002)
    service = fake_service(settings, store, FakeEmbedder(thresholds=thresholds))
    app = create_app(settings)
    app.dependency_overrides[get_service] = lambda: service
    client = TestClient(app, base_url="http://localhost")
    files = {"file": ("a.png", tiles_png([RED]), "image/png"), "file_b": ("b.png", tiles_png([GREEN]), "image/png")}
    body = client.post("/verify", files=files).json()
    assert body["operating_point"]["source"] == "calibrated"
    assert body["target_far"] == 0.002 and body["operating_point"]["target_fpir"] is None
    assert body["operating_point"]["per_comparison_rate"] == 0.002
    assert body["threshold"] == pytest.approx(ImpostorTail.from_dict(thresholds["impostor_tail"]).score_at(0.002))
    ident = client.post("/identify", files={"file": files["file"]}).json()
    assert ident["target_fpir"] == 0.05 and ident["operating_point"]["target_fpir"] == 0.05  # searches keep theirs
    asked = client.post("/verify", files=files, params={"threshold": 0.3}).json()
    assert asked["target_far"] is None and asked["operating_point"]["source"] == "request"  # no target: a fixed one
    service.close()
