"""What the web UI's face pickers and operating-point presets need from the API, in process (fake networks):
/verify picks a face and says which it compared, /admin/calibration names the presets, /admin/checkpoints lists
what a swap can name."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.deps import get_service
from app.core.config import Settings
from app.main import create_app
from tests.app.fakes import FakeEmbedder, fake_service, tiles_png
from tests.app.test_routes import GREEN, RED, enroll, error, make_client, store  # noqa: F401 - `store`: a fixture


@pytest.fixture
def client(store, tmp_path):  # noqa: F811 - `store` is the fixture imported above
    c, service = make_client(store, tmp_path)
    yield c
    service.close()


def verify(client, a, b=None, **data):
    files = {"file": ("a.png", tiles_png(a), "image/png")}
    if b is not None:
        files["file_b"] = ("b.png", tiles_png(b), "image/png")
    return client.post("/verify", files=files, data=data)


def test_verify_says_which_face_it_compared_and_takes_the_one_asked_for(client):
    plain = verify(client, [RED, GREEN], [GREEN])
    assert plain.status_code == 200, plain.text
    a, b = plain.json()["faces"]
    assert a["chosen_by"] == "largest" and len(a["faces"]) == 2
    assert b == {"face_index": 0, "chosen_by": "largest", "faces": [b["faces"][0]]}
    green = next(f["face_index"] for f in a["faces"] if f["box"] == [120.0, 20.0, 200.0, 100.0])  # the second tile
    red = 1 - green
    picked = {i: verify(client, [RED, GREEN], [GREEN], face_index=str(i)).json() for i in (red, green)}
    assert picked[green]["faces"][0] == {**a, "face_index": green, "chosen_by": "request"}
    assert picked[green]["same_person"] is True and picked[red]["same_person"] is False
    by_box = verify(client, [GREEN], [RED, GREEN], face_box_b="118,22,198,99").json()
    assert by_box["faces"][1]["chosen_by"] == "request" and by_box["same_person"] is True


def test_verify_refuses_a_face_that_is_not_there(client):
    error(verify(client, [RED, GREEN], [GREEN], face_index="2"), 422, "face_index_out_of_range")
    error(verify(client, [RED], [GREEN], face_box_b="500,500,600,600"), 422, "face_box_no_match")
    error(verify(client, [RED], [GREEN], face_box="1,2,3"), 422, "invalid_field")
    ident = enroll(client, "Ada", [RED]).json()["identity"]
    error(verify(client, [RED], identity_id=str(ident["id"]), face_index_b="0"), 422, "invalid_request")
    one = verify(client, [GREEN, RED], identity_id=str(ident["id"]), face_box="120,20,200,100").json()
    assert one["same_person"] is True and one["faces"][0]["chosen_by"] == "request" and len(one["faces"]) == 1


def test_calibration_names_the_presets_strict_balanced_loose(store, tmp_path):  # noqa: F811
    from model.calibration.tail import ImpostorTail

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3000, 512)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    thresholds = {"cosine": 0.5, "impostor_tail": ImpostorTail.from_scores((ref[:1500] * ref[1500:]).sum(1)).to_dict()}
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", api_keys=[], batching=False,
                        checkpoints_dir=tmp_path / "checkpoints", target_fpir=0.01, target_far=0.1)  # no floor
    service = fake_service(settings, store, FakeEmbedder(thresholds=thresholds))
    app = create_app(settings)
    app.dependency_overrides[get_service] = lambda: service
    client = TestClient(app, base_url="http://localhost")
    for n, colour in enumerate([RED, GREEN, (30, 30, 200), (200, 200, 30)]):
        enroll(client, f"P{n}", [colour])
    body = client.get("/admin/calibration").json()
    presets = {p["name"]: p for p in body["presets"]}
    assert list(presets) == ["strict", "balanced", "loose"]
    assert [p["target_fpir"] for p in presets.values()] == [0.001, 0.01, 0.05]
    assert presets["strict"]["threshold"] > presets["balanced"]["threshold"] > presets["loose"]["threshold"]
    assert presets["balanced"]["threshold"] == pytest.approx(body["search"]["threshold"], abs=1e-4)  # the one in force
    assert all(p["measured_fnir"] is None and p["measured_on"] is None for p in presets.values())  # never measured
    service.close()


def test_the_shipped_miss_rates_are_openset_s_for_the_shipped_model():
    """model/measured/casia-webface.json is what `benchmarks.openset --measured` writes from the recorded run: the
    shipped scoring, 1,000 people with 3 photos; a rate or a model not measured has none."""
    import json
    from pathlib import Path

    from model.weights import measured_fnir

    run = json.loads((Path(__file__).resolve().parents[2] / "benchmarks/results/openset.json").read_text())
    row = next(r for r in run["results"] if r["gallery"] == "1000" and r["enrolled_per_person"] == 3
               and r["scoring"] == "template+cohort")
    for fpir in (0.001, 0.01, 0.05):
        fnir, on = measured_fnir(run["model_version"], fpir)
        assert fnir == row[f"fnir_at_fpir_{fpir:g}"]["fnir"] and "1,000 people" in on
        assert measured_fnir(run["model_version"] + "+flip", fpir)[0] == fnir
    assert measured_fnir(run["model_version"], 0.2) is None and measured_fnir("0" * 16, 0.01) is None


def test_checkpoints_lists_the_files_a_swap_can_name_then_the_registry(client, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "older.pt").write_bytes(b"x" * 10)
    (folder / "notes.txt").write_text("not a checkpoint")
    (folder / "newer.pt").write_bytes(b"y" * 20)
    import os

    os.utime(folder / "older.pt", (1_000_000, 1_000_000))
    items = client.get("/admin/checkpoints").json()
    assert [(c["name"], c["source"], c["size_bytes"]) for c in items[:2]] == [("newer.pt", "file", 20),
                                                                              ("older.pt", "file", 10)]
    registry = [c["name"] for c in items if c["source"] == "registry"]
    assert "casia-webface" in registry and "mtcnn" not in registry


def test_checkpoints_need_the_admin_scope(store, tmp_path):  # noqa: F811
    from app.core.security import ApiKey, hash_key

    key = "r" * 32
    c, service = make_client(store, tmp_path, api_keys=[ApiKey(name="read", sha256=hash_key(key), scopes=["read"])])
    error(c.get("/admin/checkpoints", headers={"X-API-Key": key}), 403, "forbidden")
    service.close()


def test_an_enrollment_without_a_usable_face_says_why(client):
    """A face below the enrollment gate: the message names the problem (the UI says "too small"), and each
    detected face carries its own problem, so a picker can say which faces can be enrolled."""
    small = client.post("/enroll", data={"label": "Tiny"}, files={"files": ("s.png", tiles_png([RED], size=20), "image/png")})
    err = error(small, 422, "face_not_usable")
    assert "face is 20 px, enrollment needs at least 40 px" in err["message"]
    assert [f["problem"] for f in err["detail"]["faces"]] == ["face is 20 px, enrollment needs at least 40 px"]
    two = error(enroll(client, "Two", [[RED, GREEN]]), 422, "ambiguous_face")
    assert [f["problem"] for f in two["detail"]["faces"]] == [None, None]
