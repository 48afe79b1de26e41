"""POST /admin/train against a real server, real weights and real faces: a job that beats the (untrained)
serving model is published and hot-swapped; a running job refuses a second one (409) and is cancelled."""
from __future__ import annotations

import base64
import time

import httpx
import pytest
import torch

from app.gallery.store import crop_to_png
from harness import running
from model.inception_resnet import InceptionResnetV1
from model.pipeline import load_checkpoint
from training.data import cached_crops
from training.datasets import faces_dir
from training.publish import checkpoint_payload, write_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.faces]


def wait_for(fn, timeout_s: float = 900.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("condition not reached")


def test_training_job_publishes_swaps_refuses_a_second_and_cancels(tmp_path, faces):
    ckdir = tmp_path / "checkpoints"
    ckpt = load_checkpoint("casia-webface")
    torch.manual_seed(0)
    write_checkpoint(checkpoint_payload(InceptionResnetV1(), name="untrained", base_weights="casia-webface",
                                        preprocessing=ckpt.preprocessing, thresholds=dict(ckpt.thresholds)),
                     ckdir / "untrained.pt")
    names = [p.name for p in sorted((faces_dir() / "lfw").iterdir()) if len(list(p.glob("*.jpg"))) >= 5][:12]
    paths = [sorted((faces_dir() / "lfw" / n).glob("*.jpg"))[i] for n in names for i in range(5)]
    crops = cached_crops(paths, ".cache/training", ckpt.preprocessing)
    env = {"FACEID_CHECKPOINTS_DIR": str(ckdir), "FACEID_WEIGHTS": "untrained.pt", "FACEID_MATCH_THRESHOLD": "0.5"}
    with running(tmp_path / "g.db", env=env) as srv, httpx.Client(base_url=srv.url, timeout=300) as c:
        serving = c.get("/ready").json()["model_version"]
        for p, name in enumerate(names):
            faces_ = [{"crop": base64.b64encode(crop_to_png(crops[5 * p + i])).decode(), "source_sha256": "0" * 64,
                       "box": [0, 0, 1, 1], "landmarks": [[0, 0]] * 5, "detection_score": 0.99, "crop_margin": 32}
                      for i in range(4)]
            assert c.post("/faces/import", json={"label": name, "faces": faces_}).status_code == 201
        job = {"max_steps": 2, "lr": 1e-7, "batch_size": 8, "k": 2, "lfw_pairs": 40, "val_identities": 0.34,
               "start_from": "casia-webface"}
        r = c.post("/admin/train", json=job)
        assert r.status_code == 202, r.text
        assert c.post("/admin/train", json=job).json()["error"]["code"] == "training_in_progress"
        done = wait_for(lambda: (s := c.get("/admin/train").json())["returncode"] is not None and s)
        assert done["state"] == "published", done
        result = done["result"]
        assert result["candidate"]["held_out"]["rank1"] > result["base"]["held_out"]["rank1"]
        assert done["swap"]["candidate_version"] == result["candidate"]["version"] != serving
        wait_for(lambda: c.get("/ready").json()["model_version"] == result["candidate"]["version"])

        r = c.post("/admin/train", json={**job, "max_steps": None, "max_minutes": 30})
        assert r.status_code == 202, r.text
        wait_for(lambda: (c.get("/admin/train").json().get("step") or 0) >= 1)
        assert c.delete("/admin/train").status_code == 200
        assert wait_for(lambda: (s := c.get("/admin/train").json())["state"] == "cancelled" and s)["returncode"] < 0
        assert c.post("/admin/train", json={**job, "lr": 1.0}).status_code == 202  # the lock went with it
        bad = wait_for(lambda: (s := c.get("/admin/train").json())["returncode"] is not None and s)
        assert bad["state"] == "not_published" and bad["swap"] is None, bad
        assert c.get("/ready").json()["model_version"] == result["candidate"]["version"]
