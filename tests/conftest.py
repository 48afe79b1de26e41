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


@pytest.fixture(scope="session", autouse=True)
def _no_weights_in_fast_runs():
    """With FACEID_TEST_FAST=1 (and `-m "not slow"`), loading weights or starting a server fails with a
    clear message: how to find the tests that still need their `slow` mark."""
    if not os.environ.get("FACEID_TEST_FAST"):
        yield
        return
    from app import testing
    from model import pipeline, weights

    def refuse(*args, **kwargs):
        raise RuntimeError("make test-fast loads no weights and starts no server: mark this test @pytest.mark.slow")

    mp = pytest.MonkeyPatch()
    mp.setattr(weights, "fetch", refuse)
    mp.setattr(pipeline, "fetch", refuse)
    mp.setattr(testing.Server, "start", refuse)
    yield
    mp.undo()

