"""Collections: isolated galleries in one service, sharing one model.

`default` is the gallery the service always had (its database, unchanged). Every other collection is a gallery of
its own in its own database: SQLite, the file `<default database>.collections/c<id>.db`; PostgreSQL, the schema
`faceid_c<id>` of the same database (its own tables and HNSW indexes, reached through `search_path`). So a
collection's search, operating point, probes, reports, kept unknown faces and duplicates are the same code as the
default's, and nothing of one can be reached through another: there is no query that could forget a filter.
The registry (`collections` table, default database) names them, keeps their setting overrides, and marks a
delete in progress (`deleting`) until the data is gone, so a crash half-way is finished at the next start.

A collection is opened on first use (`Collections.get`) and kept open up to FACEID_COLLECTIONS_MAX_OPEN (the least
recently used is closed first); each process re-reads a collection's registry row at most every REVALIDATE_S, so
one deleted (or made again) by another process or replica is seen within that time.

Events: the outbox the delivery worker reads is the default's. A collection's writes put their events in its own
outbox in the same transaction (as the default's do); the worker relays them to the default's outbox (insert, then
delete: a crash in between relays them again and the outbox's unique event id drops the copy) before delivering.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, event, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app.core.errors import AppError
from app.gallery.models import CollectionRow
from app.gallery.store import GalleryStore, make_engine, migrate

if TYPE_CHECKING:
    from app.core.background import Background
    from app.services.recognition import FaceService

log = logging.getLogger(__name__)

DEFAULT = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
REVALIDATE_S = 1.0
CREATING_S = 600.0  # a collection still `creating` after this long was left by a crash
# the settings a collection may set for itself (None or absent: the service's)
OVERRIDABLE = ("target_fpir", "target_far", "match_threshold", "gallery_calibration", "top_k",
               "enroll_min_face_size", "enroll_min_detection_score", "probe_retention_s", "remember_unknown",
               "unknown_retention_s", "unknown_max_faces")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise AppError(422, "invalid_collection_name", f"collection names are 1 to 63 of a-z, 0-9, '_' and '-', "
                       f"starting with a letter or digit; got {name[:80]!r}")
    return name


def collection_url(default_url: str, cid: int) -> tuple[str, str | None]:
    """(database URL, PostgreSQL schema or None) of collection `cid`."""
    url = make_url(default_url)
    if url.get_backend_name() == "sqlite":
        db = url.database or ""
        if not db or db == ":memory:":
            raise AppError(409, "collections_need_a_file", "an in-memory SQLite gallery has no room for collections")
        return url.set(database=str(Path(f"{db}.collections") / f"c{cid}.db")).render_as_string(False), None
    return default_url, f"faceid_c{cid}"


def _search_path(conn) -> None:
    """The engine_connect hook of the collections' shared PostgreSQL engine: each connection taken from the shared
    pool is pointed at the schema of the collection that takes it (committed: session-level, before any begin)."""
    schema = conn.get_execution_options().get("faceid_schema")
    if schema:
        conn.exec_driver_sql(f'SET search_path TO "{schema}", public')
        conn.commit()


def collection_engine(default_url: str, cid: int, busy_timeout_s: float) -> Engine:
    """A standalone engine of collection `cid` (tools, tests; the service shares one pool among its collections)."""
    url, schema = collection_url(default_url, cid)
    if schema is None:
        return make_engine(url, busy_timeout_s)
    # the collection's schema first, then public (pgvector's types): its tables, indexes and alembic_version
    return make_engine(url, busy_timeout_s, search_path=f"{schema},public", pool_size=2)


class Collections:
    """The registry and the open collections of this process (the default's FaceService is `default`)."""

    def __init__(self, default: "FaceService", max_open: int = 1024, background: "Background | None" = None):
        """`background`: where each open collection's refiner runs (app/core/background.py; None: this loop)."""
        self.default, self.max_open, self.background = default, max_open, background
        self.settings = default.settings
        self.registry = default.store
        self._open: OrderedDict[str, tuple[int, float, FaceService]] = OrderedDict()  # name -> (id, checked, svc)
        self._opening: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task | concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._pg: Engine | None = None  # PostgreSQL: the engine (and pool) every collection shares
        default.serving.elsewhere = self
        self.is_postgres = default.store.is_postgres

    # --- the registry (blocking) ------------------------------------------------------------------------------
    def row(self, name: str) -> CollectionRow | None:
        with self.registry.sessions() as s:
            return s.scalar(select(CollectionRow).where(CollectionRow.name == name, CollectionRow.state == "active"))

    def rows(self) -> list[CollectionRow]:
        with self.registry.sessions() as s:
            return list(s.scalars(select(CollectionRow).where(CollectionRow.state == "active")
                                  .order_by(CollectionRow.name)))

    def effective(self, overrides: dict):
        """The service's settings with a collection's overrides."""
        return self.settings.model_copy(update={k: v for k, v in (overrides or {}).items() if v is not None})

    def check_settings(self, overrides: dict) -> dict:
        """Overrides validated as the service's settings are (a bad value is a 422 naming it)."""
        from pydantic import ValidationError

        unknown = sorted(set(overrides) - set(OVERRIDABLE))
        if unknown:
            raise AppError(422, "unknown_collection_setting", f"a collection cannot set {unknown}; it may set "
                           f"{list(OVERRIDABLE)}")
        try:
            type(self.settings).model_validate({**self.settings.model_dump(), **{k: v for k, v in overrides.items()
                                                                               if v is not None}})
        except ValidationError as exc:
            raise AppError(422, "invalid_collection_setting", str(exc).splitlines()[0][:300],
                           {"errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]}) from exc
        return overrides

    def create(self, name: str, overrides: dict) -> CollectionRow:
        check_name(name)
        if name == DEFAULT:
            raise AppError(409, "collection_exists", "the collection 'default' always exists")
        overrides = self.check_settings(overrides)
        taken = AppError(409, "collection_exists", f"a collection named {name!r} exists (or is being deleted)")
        try:
            with self.registry.sessions() as s, s.begin():
                if s.scalar(select(CollectionRow.id).where(CollectionRow.name == name)) is not None:
                    raise taken
                row = CollectionRow(name=name, settings=overrides, state="creating")
                s.add(row)
        except IntegrityError:  # made by a concurrent request between the check and the insert
            raise taken from None
        try:
            engine = self._engine(row.id, create=True)
            migrate(engine)
            if self._owns(engine):
                engine.dispose()
        except Exception:
            self._drop_data(row.id)
            with self.registry.sessions() as s, s.begin():
                s.execute(delete(CollectionRow).where(CollectionRow.id == row.id))
            raise
        with self.registry.sessions() as s, s.begin():
            row = s.get(CollectionRow, row.id)
            row.state = "active"
        return row

    def update(self, name: str, overrides: dict) -> CollectionRow:
        overrides = self.check_settings(overrides)
        with self.registry.sessions() as s, s.begin():
            row = s.scalar(select(CollectionRow).where(CollectionRow.name == name, CollectionRow.state == "active"))
            if row is None:
                raise _unknown(name)
            merged = {**(row.settings or {}), **overrides}
            row.settings = {k: v for k, v in merged.items() if v is not None}
        self._close(name)  # reopened with the new settings by the next request
        return row

    def counts(self, name: str) -> dict:
        svc = self.default if name == DEFAULT else (self._open.get(name) or (None, None, None))[2]
        if svc is not None:
            return svc.store.counts()
        row = self.row(name)
        if row is None:
            raise _unknown(name)
        engine = self._engine(row.id)
        try:
            return GalleryStore(engine).counts()
        finally:
            if self._owns(engine):
                engine.dispose()

    def _engine(self, cid: int, create: bool = False) -> Engine:
        """SQLite: the collection's own engine (dispose it after use). PostgreSQL: a view of one engine all
        collections share (its pool: the connections do not grow with the collections open), each connection
        pointed at the collection's schema as it is taken; never disposed but at shutdown (`_owns`)."""
        url, schema = collection_url(self.settings.database_url, cid)
        if schema is None:
            return make_engine(url, self.settings.db_busy_timeout_s)
        if create:
            with self.registry.engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        with self._lock:
            if self._pg is None:
                self._pg = make_engine(self.settings.database_url, self.settings.db_busy_timeout_s)
                event.listen(self._pg, "engine_connect", _search_path)
        return self._pg.execution_options(faceid_schema=schema)

    def _owns(self, engine: Engine) -> bool:
        return self._pg is None or engine.pool is not self._pg.pool

    def _drop_data(self, cid: int) -> None:
        """Delete collection `cid`'s data (idempotent: what is already gone is skipped)."""
        url, schema = collection_url(self.settings.database_url, cid)
        if schema is not None:
            with self.registry.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            return
        db = Path(make_url(url).database)
        for suffix in ("-wal", "-shm", ".reserve", ".migrate.lock", ""):  # the database file last
            db.with_name(db.name + suffix).unlink(missing_ok=True)

    def delete_blocking(self, name: str) -> None:
        with self.registry.sessions() as s, s.begin():
            row = s.scalar(select(CollectionRow).where(CollectionRow.name == name, CollectionRow.state == "active"))
            if row is None:
                raise _unknown(name)
            row.state = "deleting"  # from here on it is not served, and a restart finishes the delete
            cid = row.id
        self._close(name)
        self._drop_data(cid)
        with self.registry.sessions() as s, s.begin():
            s.execute(delete(CollectionRow).where(CollectionRow.id == cid))

    def finish_deletes(self) -> int:
        """At start-up: deletes (and creations) a crash interrupted are finished (their data removed). A creation
        is left alone for CREATING_S (another process may be making it now: it takes a fraction of a second)."""
        from datetime import timedelta

        from app.gallery.models import utcnow

        stale = utcnow() - timedelta(seconds=CREATING_S)
        with self.registry.sessions() as s:
            left = list(s.scalars(select(CollectionRow.id).where(
                (CollectionRow.state == "deleting")
                | ((CollectionRow.state == "creating") & (CollectionRow.created_at < stale)))))
        for cid in left:
            self._drop_data(cid)
            with self.registry.sessions() as s, s.begin():
                s.execute(delete(CollectionRow).where(CollectionRow.id == cid))
            log.info("finished deleting collection c%d", cid)
        return len(left)

    # --- open collections ------------------------------------------------------------------------------------
    async def get(self, name: str) -> "FaceService":
        """The FaceService of collection `name` (404 unknown_collection), opened on first use."""
        if name == DEFAULT:
            return self.default
        got = self._open.get(name)
        now = time.monotonic()
        if got is not None and now - got[1] < REVALIDATE_S:
            with self._lock:  # (_close pops from threads)
                if name in self._open:
                    self._open.move_to_end(name)
            return got[2]
        row = await run_in_threadpool(self.row, name)
        if row is None:
            if got is not None:
                await self._aclose(name)
            raise _unknown(name)
        if got is not None and got[0] == row.id and got[2].collection_settings == (row.settings or {}):
            with self._lock:
                self._open[name] = (row.id, now, got[2])
                self._open.move_to_end(name)
            return got[2]
        if got is not None:  # deleted and made again, or its settings changed, by another process: open it again
            await self._aclose(name)
        lock = self._opening.setdefault(name, asyncio.Lock())
        async with lock:
            got = self._open.get(name)
            if got is not None and got[0] == row.id and got[2].collection_settings == (row.settings or {}):
                return got[2]
            svc = await self._open_service(row)
            with self._lock:
                self._open[name] = (row.id, time.monotonic(), svc)
            self._tasks[name] = (self.background.spawn(svc.unknown.run()) if self.background is not None
                                 else asyncio.get_running_loop().create_task(svc.unknown.run()))
        while len(self._open) > self.max_open:  # the least recently used first
            await self._aclose(self.open_names()[0])
        return svc

    async def _open_service(self, row: CollectionRow) -> "FaceService":
        from app.services.recognition import FaceService

        default = self.default

        def build():
            engine = self._engine(row.id)
            store = GalleryStore(engine, collection_url(self.settings.database_url, row.id)[1])
            store.owns_engine = self._owns(engine)
            store.reserve = default.store.reserve
            svc = FaceService(self.effective(row.settings), default.pipeline, default.serving.embedder, store,
                              shared=default, collection=row.name)
            svc.collection_settings = dict(row.settings or {})  # what it was opened with (get() compares)
            return svc

        svc = await run_in_threadpool(build)
        emb = default.serving.embedder
        if svc.serving.embedder.version != emb.version:  # the default swapped while it was being opened
            await svc.serving.adopt(emb)
        else:
            added = await svc.serving.reembed_missing(emb)  # swapped while it was closed
            added += await svc.serving.reembed_others(emb)
            if added:
                await run_in_threadpool(svc.serving.current.synced)
        await run_in_threadpool(svc.events.relay)  # events a crash left in its outbox
        return svc

    def _close(self, name: str) -> None:
        """Forget an open collection (from any thread): its requests in flight finish on what they hold."""
        with self._lock:
            got = self._open.pop(name, None)
        task = self._tasks.pop(name, None)
        if isinstance(task, asyncio.Task):
            task.get_loop().call_soon_threadsafe(task.cancel)
        elif task is not None:
            task.cancel()  # a background future: cancels its task there, from any thread
        if got is not None:
            self.default.events.relays.discard(got[2].events)
            try:
                got[2].close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.warning("closing collection %s failed", name, exc_info=True)

    async def _aclose(self, name: str) -> None:
        await run_in_threadpool(self._close, name)

    def open_names(self) -> list[str]:
        """The open collections, least recently used first."""
        with self._lock:
            return list(self._open)

    async def aclose(self) -> None:
        for name in self.open_names():
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                if isinstance(task, asyncio.Task):
                    await asyncio.gather(task, return_exceptions=True)
            await self._aclose(name)
        if self._pg is not None:
            self._pg.dispose()

    # --- model swaps (called by the default's Serving) --------------------------------------------------------
    async def reembed_elsewhere(self, embedder) -> None:
        """Before a swap switches: every collection's stored crops embedded by the candidate."""
        for row in await run_in_threadpool(self.rows):
            try:
                svc = await self.get(row.name)
                await svc.serving.reembed_missing(embedder)
                await svc.serving.reembed_others(embedder)
            except Exception:
                if await run_in_threadpool(self.row, row.name) is None:
                    continue  # deleted meanwhile: nothing of it to embed
                raise

    async def switched_elsewhere(self, embedder, prune: bool) -> None:
        """After the default switched: every open collection switches too (a closed one opens on the new model)."""
        for name in self.open_names():
            got = self._open.get(name)
            if got is not None:
                await got[2].serving.adopt(embedder, prune=prune)


def _unknown(name: str) -> AppError:
    return AppError(404, "unknown_collection", f"collection {name!r} does not exist")


def public(row: CollectionRow, counts: dict | None = None) -> dict:
    out = {"name": row.name, "created_at": row.created_at, "settings": dict(row.settings or {})}
    if counts is not None:
        out["counts"] = counts
    return out

