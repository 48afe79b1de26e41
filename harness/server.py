"""Run this service for real: a uvicorn subprocess on 127.0.0.1 with its own SQLite file or PostgreSQL database."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(db: Path | str) -> str:
    """A SQLite file path, or already a database URL (e.g. PostgreSQL from EmbeddedPostgres below)."""
    return str(db) if "://" in str(db) else f"sqlite:///{db}"


class Server:
    """`db_path`: a SQLite file, or a database URL (PostgreSQL). `checkout`: the source tree to run (default:
    this one; another, e.g. main's from `git archive`, for before/after benchmarks). `wrap`: a command the
    server runs under (e.g. `unshare` with a small file system mounted for a full-disk test)."""

    def __init__(self, db_path: Path | str, port: int | None = None, workers: int = 1, env: dict | None = None,
                 log_path: Path | None = None, checkout: Path | str | None = None, wrap: list[str] | None = None):
        self.db_path = Path(db_path)
        self.checkout = Path(checkout) if checkout else REPO
        self.port = port or free_port()
        self.workers = workers
        self.env = {**os.environ, "FACEID_DATABASE_URL": database_url(db_path),
                    "FACEID_HOST": "127.0.0.1", "FACEID_PORT": str(self.port), **(env or {})}
        self.env.setdefault("TORCH_HOME", str(REPO / ".torch"))
        # the checkout's own client package (label rule, key hashing) before any installed one
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.checkout / "client"),
                                                               self.env.get("PYTHONPATH")]))
        if log_path is None:
            log_dir = Path(db_path).parent if "://" not in str(db_path) else Path(tempfile.mkdtemp(prefix="faceid-"))
            log_path = log_dir / f"server.{self.port}.log"
        self.log_path = log_path
        self.wrap = list(wrap or [])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300.0) -> "Server":  # a loaded 2-core machine needs minutes
        self._log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers)]
        self.proc = subprocess.Popen(self.wrap + cmd, cwd=self.checkout, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout_s}s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        if getattr(self, "_log", None):
            self._log.close()


@contextmanager
def running(db_path: Path, **kwargs):
    server = Server(db_path, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
