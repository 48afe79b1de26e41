"""Hot swap over real HTTP: no failed request, versions never mixed, gallery re-embedded, bad checkpoints refused."""
from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch

from training.perturb import perturbed_checkpoint
from harness import running
from model.pipeline import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.faces]


def photos(faces, name, n):
    return sorted((faces / "photos" / name).glob("*.jpg"))[:n]


def wait_swap(client, timeout_s=180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = client.get("/admin/model").json()
        if state["swap"]["state"] in ("done", "failed"):
            return state
        time.sleep(0.1)
    raise TimeoutError(state)


def test_swap_under_load_then_equal_to_fresh_server(tmp_path, faces, gallery_db):
    ckdir = tmp_path / "checkpoints"
    new_version = perturbed_checkpoint(ckdir / "second.pt")
    db = gallery_db
    env = {"FACEID_CHECKPOINTS_DIR": str(ckdir)}
    people = ["Angelina_Jolie", "Matt_Damon", "Jennifer_Aniston", "George_Clooney", "Leonardo_DiCaprio"]
    probe = faces / "multi" / "selfie-many-people.jpg"
    with running(db, env=env) as srv:
        c = httpx.Client(base_url=srv.url, timeout=120)
        for name in people:
            for p in photos(faces, name, 2):
                assert c.post("/enroll", data={"label": name}, files={"files": (p.name, p.read_bytes())}).status_code == 201
        old_version = c.get("/ready").json()["model_version"]
        expected = {old_version: c.post("/identify", params={"top_k": 100},
                                        files={"file": ("p.jpg", probe.read_bytes())}).json()}

        failures, responses, enrolled = [], [], []
        stop = threading.Event()
        answered = {old_version: threading.Event(), new_version: threading.Event()}  # an identify answered by each
        extra = photos(faces, "Katy_Perry", 3) + photos(faces, "Jeff_Bezos", 3)

        def worker(w: int):
            with httpx.Client(base_url=srv.url, timeout=120) as h:
                i = 0
                while not stop.is_set():
                    try:
                        if w % 2 == 0:
                            r = h.post("/identify", params={"top_k": 100},
                                       files={"file": ("p.jpg", probe.read_bytes())})
                            (responses.append(r.json()) if r.status_code == 200 else failures.append(r.text))
                            if r.status_code == 200 and r.json()["model_version"] in answered:
                                answered[r.json()["model_version"]].set()
                        else:
                            p = extra[(i + w) % len(extra)]
                            label = f"swap-{w}-{i}"
                            r = h.post("/enroll", data={"label": label}, files={"files": (p.name, p.read_bytes())})
                            (enrolled.append((label, r.json()["model_version"])) if r.status_code == 201
                             else failures.append(r.text))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    i += 1

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        assert answered[old_version].wait(600)  # load is running before the swap starts
        r = c.post("/admin/model", json={"checkpoint": "second.pt"})
        assert r.status_code == 202, r.text
        busy = c.post("/admin/model", json={"checkpoint": "casia-webface"})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "swap_in_progress"
        state = wait_swap(c)
        answered[new_version].wait(600)  # and goes on until the new model has answered under load
        stop.set()
        for t in threads:
            t.join()
        assert state["swap"]["state"] == "done", state
        assert state["serving_version"] == new_version != old_version
        assert failures == []
        versions = {r["model_version"] for r in responses}
        assert versions == {old_version, new_version}, versions
        expected[new_version] = c.post("/identify", params={"top_k": 100},
                                       files={"file": ("p.jpg", probe.read_bytes())}).json()

        def people_scores(resp):  # the scores of the 5 original people, per face (gallery growth aside)
            return [sorted((m["label"], round(m["score"], 4)) for m in f["matches"] if m["label"] in people)
                    for f in resp["faces"]]

        assert people_scores(expected[old_version]) != people_scores(expected[new_version])
        for resp in responses:  # each answer's scores are those of the model it names
            assert people_scores(resp) == people_scores(expected[resp["model_version"]])
        labels_now = {i["label"] for i in c.get("/identities", params={"limit": 500}).json()["items"]}
        assert {label for label, _ in enrolled} <= labels_now and len(enrolled) > 0
        gallery = c.get("/admin/model").json()["versions_in_gallery"]
        n_faces = c.get("/ready").json()["faces"]
        assert gallery[new_version] == n_faces
        after_swap = c.post("/identify", files={"file": ("p.jpg", probe.read_bytes())}).json()
    with running(db, env={**env, "FACEID_WEIGHTS": "second.pt"}) as fresh:
        again = httpx.post(f"{fresh.url}/identify", files={"file": ("p.jpg", probe.read_bytes())}, timeout=120).json()
    for answer in (again, after_swap):  # each /identify keeps its faces under a new probe id (POST /feedback)
        for f in answer["faces"]:
            f.pop("probe_id", None)
    assert again == after_swap


def test_bad_checkpoints_are_refused_and_old_model_keeps_serving(tmp_path, faces):
    ckdir = tmp_path / "checkpoints"
    ckdir.mkdir()
    perturbed_checkpoint(ckdir / "good.pt")
    (ckdir / "truncated.pt").write_bytes((ckdir / "good.pt").read_bytes()[:100_000])
    torch.save({"state_dict": {"conv.weight": torch.zeros(3, 3)}}, ckdir / "wrong-arch.pt")
    ckpt = load_checkpoint("casia-webface")
    sd = {k: v.clone() for k, v in ckpt.state_dict.items()}
    sd["last_linear.weight"][0, 0] = float("nan")
    torch.save(sd, ckdir / "nan.pt")
    (tmp_path / "outside.pt").write_bytes((ckdir / "good.pt").read_bytes())
    good = torch.load(ckdir / "good.pt", weights_only=True)
    calibrated = good["metadata"]["thresholds"]  # the bad thresholds keep the impostor tail: only `cosine` is bad
    bad_metadata = {"thr-inf.pt": {"thresholds": {**calibrated, "cosine": float("inf")}},
                    "thr-nan.pt": {"thresholds": {**calibrated, "cosine": float("nan")}},
                    "thr-str.pt": {"thresholds": {**calibrated, "cosine": "0.5"}},
                    "size-4.pt": {"preprocessing": {**good["metadata"]["preprocessing"], "image_size": 4}},
                    "size-112.pt": {"preprocessing": {**good["metadata"]["preprocessing"], "image_size": 112}},
                    "name-dict.pt": {"name": {"a": 1}}, "name-long.pt": {"name": "n" * 300}}
    for name, change in bad_metadata.items():
        torch.save({**good, "metadata": {**good["metadata"], **change, "version": name}}, ckdir / name)
    probe = photos(faces, "Matt_Damon", 1)[0]
    with running(tmp_path / "g.db", env={"FACEID_CHECKPOINTS_DIR": str(ckdir)}) as srv:
        c = httpx.Client(base_url=srv.url, timeout=120)
        serving = c.get("/ready").json()["model_version"]
        for name, status, code in (("truncated.pt", 422, "invalid_checkpoint"), ("wrong-arch.pt", 422, "invalid_checkpoint"),
                                   ("nan.pt", 422, "invalid_checkpoint"),
                                   ("../outside.pt", 422, "checkpoint_outside_directory"),
                                   (str(tmp_path / "outside.pt"), 422, "checkpoint_outside_directory"),
                                   ("missing.pt", 404, "unknown_checkpoint"),
                                   *((name, 422, "invalid_checkpoint_metadata") for name in bad_metadata)):
            r = c.post("/admin/model", json={"checkpoint": name})
            assert (r.status_code, r.json().get("error", {}).get("code")) == (status, code), (name, r.text)
            r = c.post("/identify", files={"file": (probe.name, probe.read_bytes())})
            assert r.status_code == 200 and r.json()["model_version"] == serving
            assert c.get("/ready").status_code == 200
        assert c.get("/admin/model").json()["serving_version"] == serving
        # the serving weights recalibrated: a swap cannot change thresholds, and says so rather than "done"
        torch.save({**good, "state_dict": ckpt.state_dict,
                    "metadata": {**good["metadata"], "version": ckpt.version,
                                 "thresholds": {**calibrated, "cosine": calibrated["cosine"] + 0.01}}},
                   ckdir / "recalibrated.pt")
        r = c.post("/admin/model", json={"checkpoint": "recalibrated.pt"})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "same_weights_new_calibration"), r.text
        assert c.get("/admin/model").json()["swap"]["state"] != "reembedding"
        # the same numbers with another calibration note: nothing to change, the swap is done at once
        torch.save({**good, "state_dict": ckpt.state_dict,
                    "metadata": {**good["metadata"], "version": ckpt.version,
                                 "thresholds": {**ckpt.thresholds, "calibration": "reworded note"}}},
                   ckdir / "renoted.pt")
        r = c.post("/admin/model", json={"checkpoint": "renoted.pt"})
        assert r.status_code == 202 and r.json()["swap"]["state"] == "done", r.text
        assert r.json()["serving_version"] == serving
        # a second swap while one runs is a conflict; rolling back to the previous version is immediate
        assert c.post("/admin/model", json={"checkpoint": "good.pt"}).status_code == 202
        wait_swap(c)
        r = c.post("/admin/model", json={"checkpoint": "casia-webface"})
        assert r.status_code == 202
        assert wait_swap(c)["serving_version"] == serving


def test_other_processes_follow_a_swap_and_restarts_keep_it(tmp_path, faces, gallery_db):
    ckdir = tmp_path / "checkpoints"
    new_version = perturbed_checkpoint(ckdir / "second.pt")
    env = {"FACEID_CHECKPOINTS_DIR": str(ckdir)}
    db = gallery_db
    img = photos(faces, "Matt_Damon", 2)
    with running(db, env=env) as a, running(db, env=env) as b:
        ca, cb = httpx.Client(base_url=a.url, timeout=120), httpx.Client(base_url=b.url, timeout=120)
        assert ca.post("/enroll", data={"label": "Matt"}, files={"files": ("a.jpg", img[0].read_bytes())}).status_code == 201
        assert ca.post("/admin/model", json={"checkpoint": "second.pt"}).status_code == 202
        assert wait_swap(ca)["serving_version"] == new_version
        deadline = time.monotonic() + 60
        while cb.get("/ready").json()["model_version"] != new_version and time.monotonic() < deadline:
            time.sleep(0.2)
        r = cb.post("/identify", files={"file": ("b.jpg", img[1].read_bytes())}).json()
        assert r["model_version"] == new_version and r["faces"][0]["identity"]["label"] == "Matt"
        # both processes let go of the old version (its vectors, its tails): memory does not grow with swaps
        assert ca.get("/admin/model").json()["held_in_memory"] == [new_version]
        assert cb.get("/admin/model").json()["held_in_memory"] == [new_version]
    with running(db, env=env) as c:  # a restarted worker serves the swapped model, not FACEID_WEIGHTS
        assert httpx.get(f"{c.url}/ready").json()["model_version"] == new_version


def test_starting_another_model_on_a_gallery_embeds_it_at_start(tmp_path, faces):
    ckdir = tmp_path / "checkpoints"
    new_version = perturbed_checkpoint(ckdir / "second.pt")
    db = tmp_path / "g.db"
    img = photos(faces, "Jennifer_Aniston", 2)
    with running(db) as a:
        httpx.post(f"{a.url}/enroll", data={"label": "Jen"}, files={"files": ("a.jpg", img[0].read_bytes())}, timeout=120)
    with running(db, env={"FACEID_CHECKPOINTS_DIR": str(ckdir), "FACEID_WEIGHTS": "second.pt"}) as b:
        ready = httpx.get(f"{b.url}/ready").json()
        assert ready["model_version"] == new_version and ready["indexed_vectors"] == ready["faces"] == 1
        r = httpx.post(f"{b.url}/identify", files={"file": ("b.jpg", img[0].read_bytes())}, timeout=120).json()
        assert r["faces"][0]["identity"]["label"] == "Jen"


def test_a_swap_builds_the_candidates_int8_model_before_it_serves(tmp_path, monkeypatch, faces):
    """FACEID_PRECISION=auto on a VNNI CPU: validation only reads the int8 cache (the request stays quick) and
    runs the float path when it is empty; run_swap's first step builds and gates the int8 model."""
    import asyncio

    import numpy as np

    from app.services.checkpoints import validate_candidate, with_int8
    from model.fast import plan_precision
    from model.weights import checkpoint_dir

    if plan_precision(torch.device("cpu"), "auto")[0][0] != "int8":
        pytest.skip("this CPU has no VNNI or AMX: auto never builds int8 here")
    weights = checkpoint_dir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))  # an empty int8 cache, the same weight files
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "checkpoints").mkdir()
    for f in weights.glob("*.pt"):
        (tmp_path / "home" / "checkpoints" / f.name).symlink_to(f)
    ckdir = tmp_path / "checkpoints"
    version = perturbed_checkpoint(ckdir / "third.pt", seed=3)
    probe = np.zeros((2, 160, 160, 3), np.uint8)
    cand = validate_candidate(str(ckdir / "third.pt"), torch.device("cpu"), "auto", probe, 512)
    assert cand.version == version and cand.precision != "int8" and "no int8 model" in cand.precision_reason
    built = asyncio.run(with_int8(cand, "third.pt", ckdir))
    assert built.version == version and built.precision == "int8", built.precision_reason
    assert "passed its gate" in built.precision_reason
