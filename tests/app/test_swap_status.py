"""A swap's status record holds what it says: `faces_total` is a count of faces at every moment (a status read
between two assignments must never see the database's whole counts dict). The real lifespan, real weights, a
second checkpoint, in process; every assignment to the record is watched."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.services import checkpoints
from training.perturb import perturbed_checkpoint

pytestmark = pytest.mark.slow  # loads the real weights


def test_faces_total_is_only_ever_a_count(tmp_path, monkeypatch):
    seen = []
    assign = checkpoints.SwapStatus.__setattr__

    def watched(self, name, value):
        if name == "faces_total":
            seen.append(value)
        assign(self, name, value)

    monkeypatch.setattr(checkpoints.SwapStatus, "__setattr__", watched)
    ckdir = tmp_path / "checkpoints"
    version = perturbed_checkpoint(ckdir / "second.pt")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'gallery.db'}", checkpoints_dir=ckdir, api_keys=[],
                        precision="fp32")
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        assert c.post("/admin/model", json={"checkpoint": "second.pt"}).status_code == 202
        deadline = time.monotonic() + 300
        state = c.get("/admin/model").json()
        while state["swap"]["state"] not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the status with a deadline, not ordering
            state = c.get("/admin/model").json()
        assert state["swap"]["state"] == "done" and state["serving_version"] == version, state
        assert isinstance(state["swap"]["faces_total"], int)
    assert seen and all(type(v) is int for v in seen), seen
