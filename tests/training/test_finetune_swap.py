"""A new user's path: fine-tune on a small folder with the CLI, then hot-swap to the checkpoint. Its
calibration (a few held-out identities) cannot support the target FPIR, so the swap is refused with the
reason, and the server keeps serving its calibrated model; an explicit threshold lets it through."""
from __future__ import annotations

import json

import httpx
import pytest

from harness import running
from model.pipeline import load_checkpoint
from training.main import main as train_main

pytestmark = [pytest.mark.slow, pytest.mark.faces]


@pytest.fixture(scope="module")
def small_finetune(tmp_path_factory, faces):
    out = tmp_path_factory.mktemp("ft") / "checkpoints" / "ft-small.pt"
    rc = train_main(["--rootdir", str(faces / "photos"), "--bs", "8", "--k", "2", "--epochs", "1", "--train", "1",
                     "--out", str(out), "--max-minutes", "0.5", "--val-identities", "0.3",
                     "--logdir", str(out.parent / "runs")])
    assert rc == 0
    return out


def test_finetuned_checkpoint_carries_its_tail_and_how_thin_it_is(small_finetune):
    th = load_checkpoint(small_finetune).thresholds
    tail = th["impostor_tail"]
    assert tail["n_pairs"] < 5000 and th["supported_down_to"] > 1e-4  # a few held-out people: a thin tail
    assert all(k >= 10 for _, _, k in tail["points"])
    report = json.loads(small_finetune.with_suffix(".report.json").read_text())
    assert report["calibration"]["supported_down_to"] == th["supported_down_to"]


def test_swap_to_a_thinly_calibrated_checkpoint_is_refused_with_the_reason(small_finetune, tmp_path, faces):
    ckdir = small_finetune.parent
    with running(tmp_path / "g.db", env={"FACEID_CHECKPOINTS_DIR": str(ckdir)}) as srv:
        c = httpx.Client(base_url=srv.url, timeout=120)
        before = c.get("/ready").json()
        r = c.post("/admin/model", json={"checkpoint": small_finetune.name})
        assert r.status_code == 422 and r.json()["error"]["code"] == "calibration_too_thin", r.text
        assert "FPIR" in r.json()["error"]["message"]
        after = c.get("/ready").json()
        assert after["model_version"] == before["model_version"] and after["threshold"] == before["threshold"]
    # an operator who sets a fixed threshold takes the responsibility: then the swap goes through
    with running(tmp_path / "g2.db", env={"FACEID_CHECKPOINTS_DIR": str(ckdir),
                                          "FACEID_MATCH_THRESHOLD": "0.6"}) as srv:
        r = httpx.post(f"{srv.url}/admin/model", json={"checkpoint": small_finetune.name}, timeout=120)
        assert r.status_code == 202, r.text
