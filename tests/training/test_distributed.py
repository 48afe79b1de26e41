"""`torchrun --nproc_per_node=2 -m training.main` on CPU (gloo): the two-process run of a global P x K batch
follows the one-process run of the same batches step for step (mining over the gathered batch, gradients
averaged by DDP), and rank 0 writes the checkpoint. A tiny network and synthetic identities keep it short."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from harness import REPO, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """10 synthetic identities x 6 images: a random pattern each, plus noise."""
    root = tmp_path_factory.mktemp("people")
    rng = np.random.default_rng(0)
    for person in range(10):
        proto = rng.integers(0, 255, (20, 20, 3))
        (root / f"p{person}").mkdir()
        for i in range(6):
            img = np.clip(np.kron(proto, np.ones((8, 8, 1))) + rng.normal(0, 30, (160, 160, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / f"p{person}" / f"{i}.png")
    return root


def train(folder, out, nproc: int | None) -> dict:
    args = ["-m", "training.main", "--rootdir", str(folder), "--arch", "tiny", "--aligned", "--no-augment", "--bs", "16",
            "--k", "4", "--max-steps", "6", "--lrin", "3e-3", "--val-identities", "0.2", "--out", str(out),
            "--logdir", str(out.parent / "runs")]
    launcher = [sys.executable] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(launcher + args, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.with_suffix(".report.json").read_text())


def test_two_processes_follow_one_process_of_the_same_global_batch(folder, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = train(folder, tmp_path / "one" / "ck.pt", None)
    two = train(folder, tmp_path / "two" / "ck.pt", 2)
    assert one["processes"] == 1 and two["processes"] == 2 and len(one["loss_curve"]) == 6
    assert one["loss_curve"][-1] < one["loss_curve"][0]  # it learns: the comparison is of a moving curve
    assert np.allclose(two["loss_curve"], one["loss_curve"], rtol=1e-3, atol=1e-4), (one["loss_curve"],
                                                                                     two["loss_curve"])
    a = torch.load(tmp_path / "one" / "ck.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two" / "ck.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert not list((tmp_path / "two").glob("ck.*.rank*"))  # one checkpoint, by rank 0
