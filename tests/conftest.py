"""Shared fixtures: real weights from the cache (converted once), real faces from ../shared/faces."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from training.datasets import faces_dir

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_HOME", str(REPO / ".torch"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (real weights, servers, data sets)")
    config.addinivalue_line("markers", "faces: needs the research face data (../shared/faces or FACEID_FACES_DIR)")


@pytest.fixture(scope="session")
def faces() -> Path:
    root = faces_dir()
    if not (root / "lfw").is_dir():
        pytest.skip(f"face data not found at {root} (set FACEID_FACES_DIR to the shared faces folder)")
    return root


@pytest.fixture(scope="session")
def pipeline():
    from model.pipeline import FacePipeline

    return FacePipeline.load(weights="casia-webface", device="cpu")
