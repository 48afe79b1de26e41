"""Start-up and shutdown: whatever fails after the service is built, it is closed (its database connections, its
threads); at shutdown its background tasks are cancelled. The real lifespan, real weights, a real SQLite file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.core.config import Settings
from app.gallery.store import make_engine, migrate
from app.main import create_app

pytestmark = pytest.mark.slow  # loads the real weights


def open_files(path: Path) -> list[str]:
    """This process's open file descriptors on `path` (and its -wal / -shm companions)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


def test_a_failed_start_up_still_closes_the_service(tmp_path):
    """A stored face whose crop cannot be decoded, not yet embedded by the serving model: re-embedding it at
    start-up fails, and the service's database connections must not outlive the failed start."""
    db = tmp_path / "gallery.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO identities (id, label, created_at, updated_at) "
                          "VALUES (1, 'ada', '2026-01-01', '2026-01-01')"))
        conn.execute(text("INSERT INTO faces (id, identity_id, crop_png, crop_size, crop_margin, source_sha256, box, "
                          "landmarks, detection_score, created_at) VALUES (1, 1, :junk, 160, 0, :h, '[0,0,1,1]', "
                          "'[]', 0.99, '2026-01-01')"), {"junk": b"not a png", "h": "0" * 64})
    engine.dispose()
    settings = Settings(database_url=f"sqlite:///{db}", api_keys=[], checkpoints_dir=tmp_path / "ck")
    app = create_app(settings)
    with pytest.raises(Exception):
        with TestClient(app, base_url="http://localhost"):
            pass
    assert open_files(db) == []
    assert app.state.service.executor._shutdown


def test_shutdown_closes_the_database_and_stops_the_batchers(tmp_path):
    """An orderly shutdown: the batchers' tasks are stopped by the service itself (`FaceService.aclose`, before
    its model thread goes), and no connection to the gallery stays open."""
    db = tmp_path / "gallery.db"
    settings = Settings(database_url=f"sqlite:///{db}", api_keys=[], checkpoints_dir=tmp_path / "ck", batching=True)
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost") as c:
        assert c.post("/embed", files={"file": ("x.png", _png(), "image/png")}).status_code == 200
        queue = app.state.service.detect_batch.queue
        task = queue._task
        assert task is not None and not task.done()
    assert task.cancelled() and queue._task is None
    assert open_files(db) == []


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


BLAS_THREADS = ("from threadpoolctl import threadpool_info; "
                "print([p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'])")


def blas_threads_in_a_process(code: str, **env) -> list[int]:
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "FACEID_BLAS_THREADS")}
    out = subprocess.run([sys.executable, "-c", f"{code}; {BLAS_THREADS}"], env={**clean, **env},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return eval(out.strip().splitlines()[-1])  # noqa: S307 - a list of ints this test printed


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS runs one thread anyway")
def test_the_server_holds_numpy_s_blas_to_one_thread():
    """OpenBLAS's idle threads spin on a core after each call: in a server, beside the model's threads, that costs
    CPU and gains nothing (FACEID_BLAS_THREADS, default 1). Loaded after `app` (as uvicorn does), or before it and
    then limited by build_service's call; FACEID_BLAS_THREADS=0 leaves the library's default."""
    libs = "import numpy, scipy.sparse.csgraph"
    default = blas_threads_in_a_process(libs)
    if not default or not all(n > 1 for n in default):
        pytest.skip(f"OpenBLAS runs {default} threads here by default (OMP_NUM_THREADS, CPU affinity)")
    assert blas_threads_in_a_process(f"import app; {libs}") == [1] * len(default)
    assert blas_threads_in_a_process(f"import app; {libs}", FACEID_BLAS_THREADS="0") == default
    limit = "from app.main import limit_blas_threads; import os; limit_blas_threads({}); " \
            "assert 'OPENBLAS_NUM_THREADS' not in os.environ"  # as build_service does; its children get the default
    assert blas_threads_in_a_process(f"{libs}; {limit.format(1)}") == [1] * len(default)  # loaded before `app`
    assert blas_threads_in_a_process(f"import app; {libs}; {limit.format(0)}") == default  # 0 read from .env
