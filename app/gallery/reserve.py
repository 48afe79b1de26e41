"""Room to free space on a full disk: a reserve file beside a SQLite gallery, given up for a delete.

On a full disk SQLite cannot even delete: a delete writes its pages to the WAL first. The store keeps
`<database>.reserve` (FACEID_STORAGE_RESERVE_BYTES, allocated, not sparse); a delete or a probe eviction that
fails because the disk is full deletes the reserve file, runs again in the room it leaves, and puts the
reserve back when there is room again. Writes that add data never use it: they answer 507 storage_full.
PostgreSQL manages its own storage: there the reserve is off (a delete on a full PostgreSQL disk fails as
PostgreSQL decides, 507 as well).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from app.core.errors import is_disk_full

log = logging.getLogger(__name__)
T = TypeVar("T")


class StorageReserve:
    def __init__(self, path: Path | None, size_bytes: int):
        self.path, self.size_bytes = path, size_bytes

    @classmethod
    def beside(cls, engine: Engine, size_bytes: int) -> "StorageReserve":
        """For a SQLite file database: `<file>.reserve`; otherwise a reserve that does nothing."""
        db = engine.url.database
        sqlite_file = engine.dialect.name == "sqlite" and db and db != ":memory:"
        return cls(Path(f"{db}.reserve") if sqlite_file and size_bytes > 0 else None, size_bytes)

    def ensure(self) -> bool:
        """Allocate the reserve file if it is missing and there is room; whether it is in place."""
        if self.path is None:
            return False
        if self.path.exists():
            return True
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size_bytes)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            return True
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("no room for the storage reserve %s (%s)", self.path, exc)
            return False

    def freeing(self, fn: Callable[[], T]) -> T:
        """Run `fn` (a write that frees space); on a full disk, give up the reserve and run it once more."""
        try:
            return fn()
        except OperationalError as exc:
            if self.path is None or not is_disk_full(exc) or not self.path.exists():
                raise
            log.warning("disk full: using the storage reserve %s to free space", self.path)
            self.path.unlink(missing_ok=True)
        try:
            return fn()
        finally:
            self.ensure()
