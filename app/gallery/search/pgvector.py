"""Vector search inside PostgreSQL with pgvector: no process holds the gallery in RAM.

`PgVectorSearch.version(version, dim)` answers like the in-memory search of that version (search,
scores_for_identity, len, identities, sample), but every answer is a query. Identities are scored by their
template (`templates.vector`, the normalised mean of their faces) or, with scoring="face", by their best face
(`embeddings.vector`). Per model version, the searched table has one partial HNSW index (cosine) on the
`halfvec` cast of its vector (`WHERE model_version = ...`): half the index memory, while the stored vectors
stay float32. A search takes candidates from that index (`hnsw.ef_search` from settings,
`hnsw.iterative_scan = relaxed_order`, so a top-k stays full), then re-scores them exactly in float32.
Galleries below `exact_below` rows are searched exactly (a scan is faster than the graph there, and exact).

A search is one round trip: one statement, built once per version (template scoring fetches each identity's
best face in it too), with the query sent once and cast to halfvec by the server, in autocommit. The HNSW
settings live in the connection's session and are sent only when they change, not per query: the HNSW walk
itself is most of a search's time (benchmarks/search.py --backend pgvector).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Callable

import numpy as np
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import Connection, Index, Select, bindparam, cast, func, select, text, true
from sqlalchemy.orm import Session

from app.gallery.search.base import Match, cosine
from app.gallery.models import Embedding, Face, Identity, Template
from app.gallery.store import GalleryStore
from model.calibration.pairs import pick_identities

log = logging.getLogger(__name__)

_TABLES = {"face": Embedding, "template": Template}
_SETTINGS = "faceid_hnsw_ef_search"  # key in a connection's `info`: the session's hnsw settings


def index_name(version: str, table: str = "embeddings") -> str:
    return f"ix_{table}_hnsw_" + hashlib.sha1(version.encode()).hexdigest()[:16]


def hnsw_index(model, version: str, dim: int, m: int = 32, ef_construction: int = 128) -> Index:
    """The HNSW index of one model version, declared like any SQLAlchemy index (ops class, parameters)."""
    return Index(index_name(version, model.__tablename__), cast(model.vector, HALFVEC(dim)).label("halfvec"),
                 postgresql_using="hnsw", postgresql_ops={"halfvec": "halfvec_cosine_ops"},
                 postgresql_with={"m": m, "ef_construction": ef_construction},
                 postgresql_where=model.model_version == version)


class PgVectorSearch:
    """The search backend (as `MemorySearch` is for SQLite) in PostgreSQL. `changes` (app/gallery/notify.py) says
    when the gallery moved on, so the counts cached here are dropped on change, not on a timer."""

    def __init__(self, store: GalleryStore, changes, scoring: str = "face", ef_search: int = 300,
                 exact_below: int = 10_000, hnsw_m: int = 32, hnsw_ef_construction: int = 128):
        if scoring not in _TABLES:
            raise ValueError(f"unknown scoring {scoring!r}")
        self.store, self.changes, self.scoring = store, changes, scoring
        self.model = _TABLES[scoring]
        self.ef_search, self.exact_below = ef_search, exact_below
        self.hnsw_m, self.hnsw_ef_construction = hnsw_m, hnsw_ef_construction
        self._cache: dict[tuple[str, str], tuple[int, int]] = {}
        self._ready: set[str] = set()
        self._statements: dict[tuple[str, int, str, bool], Select] = {}

    def version(self, version: str, dim: int = 512) -> "PgVectorVersionSearch":
        """The version's search; its HNSW index is built first if missing (once per process)."""
        if version not in self._ready:
            with self.store.engine.begin() as conn:
                self.ensure_index(conn, version, dim)
            self._ready.add(version)
        return PgVectorVersionSearch(self, version, dim)

    def ensure_index(self, conn: Connection, version: str, dim: int) -> None:
        """Build the version's HNSW index unless it exists (replicas starting together take turns)."""
        conn.execute(text("SET LOCAL lock_timeout = 0"))  # an index build may take minutes: wait for it
        conn.execute(select(func.pg_advisory_xact_lock(int(hashlib.sha1(version.encode()).hexdigest()[:15], 16))))
        hnsw_index(self.model, version, dim, self.hnsw_m, self.hnsw_ef_construction).create(conn, checkfirst=True)

    def prepare_switch(self, version: str, dim: int) -> Callable[[Session], None]:
        """Committed with the switch of the serving model: the new version's index, complete."""
        return lambda s: self.ensure_index(s.connection(), version, dim)

    def held(self) -> set[str]:
        return set(self._ready) | {k[0] for k in self._statements} | {k[1] for k in self._cache}

    def retire(self, keep: set[str]) -> None:
        """Forget what this process keeps of the versions not in `keep` (counts, statements, readiness)."""
        self._ready &= keep
        for key in [k for k in self._statements if k[0] not in keep]:
            del self._statements[key]
        for key in [k for k in self._cache if k[1] not in keep]:
            del self._cache[key]

    def reindex(self, version: str, dim: int = 512) -> None:
        """Rebuild the version's HNSW index without taking it away: REINDEX CONCURRENTLY keeps the old index
        usable (searches, and other replicas, use it meanwhile) and swaps in the new one when it is complete.
        Other versions' indexes (a swap candidate's) are left alone."""
        name = index_name(version, self.model.__tablename__)
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # CONCURRENTLY cannot run in a transaction
            if conn.scalar(text("SELECT to_regclass(:n)"), {"n": name}) is None:
                with self.store.engine.begin() as tx:
                    self.ensure_index(tx, version, dim)
            else:
                conn.execute(text(f'REINDEX INDEX CONCURRENTLY "{name}"'))
        self._ready.add(version)

    def drop_indexes(self, keep: set[str]) -> None:
        """Drop the HNSW indexes of versions not in `keep` (the vectors stay where the store keeps them)."""
        table = self.model.__tablename__
        keep_names = {index_name(v, table) for v in keep}
        with self.store.engine.begin() as conn:
            names = conn.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = :t AND indexname LIKE :p "
                                      "AND schemaname = current_schema()"),
                                 {"t": table, "p": f"ix_{table}_hnsw_%"}).all()
            for name in names:
                if name not in keep_names:
                    conn.execute(text(f'DROP INDEX IF EXISTS "{name}"'))
        self.retire(keep)

    def close(self) -> None:
        pass  # the change feed belongs to the service, which closes it

    def configure(self, conn: Connection, limit: int) -> None:
        """The HNSW scan settings of this connection's session, sent only when they differ from what the
        connection already has (its own record: a new connection after an outage starts without)."""
        ef = min(max(self.ef_search, limit), 1000)
        if conn.info.get(_SETTINGS) != ef:
            conn.execute(select(func.set_config("hnsw.ef_search", str(ef), False),
                                func.set_config("hnsw.iterative_scan", "relaxed_order", False)))
            conn.info[_SETTINGS] = ef

    def statement(self, version: str, dim: int, scoring: str, exact: bool) -> Select:
        """The search statement of a version, built once (parameters `q`, the query, and `limit`)."""
        key = (version, dim, scoring, exact)
        if key not in self._statements:
            build = _face_statement if scoring == "face" else _template_statement
            self._statements[key] = build(version, dim, exact)
        return self._statements[key]

    def cached_count(self, kind: str, version: str, query: Callable[[], Select]) -> int:
        """A count of this version (`query` builds its statement, only on a miss), kept until the gallery
        changes."""
        gen = self.changes.generation
        hit = self._cache.get((kind, version))
        if gen is not None and hit is not None and hit[0] == gen:
            return hit[1]
        with self.store.sessions() as s:
            value = int(s.scalar(query()) or 0)
        if gen is not None:
            self._cache[(kind, version)] = (gen, value)
        return value


class PgVectorVersionSearch:
    """One model version of the gallery, searched in the database (`base.VersionSearch`)."""

    def __init__(self, parent: PgVectorSearch, version: str, dim: int):
        self.parent, self.version, self.dim = parent, version, dim
        self.generation = parent.changes.generation
        self.scoring = parent.scoring  # how identities are scored (the gallery's own calibration follows it)

    def sync(self) -> None:
        """Nothing to catch up with: every answer is a query of the committed gallery."""

    def __len__(self) -> int:
        """Vectors of this version (faces embedded by it)."""
        return self.parent.cached_count("faces", self.version, lambda: select(func.count(Embedding.id))
                                        .where(Embedding.model_version == self.version))

    @property
    def identities(self) -> int:
        """Identities a search compares against (what the operating point depends on)."""
        if self.parent.scoring == "template":
            def query():
                return select(func.count(Template.id)).where(Template.model_version == self.version)
        else:
            def query():
                return (select(func.count(func.distinct(Face.identity_id))).select_from(Embedding)
                        .join(Face, Face.id == Embedding.face_id).where(Embedding.model_version == self.version))
        return self.parent.cached_count("identities", self.version, query)

    def _rows(self) -> int:
        return len(self) if self.parent.scoring == "face" else self.identities

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """Top-k identities per query, best first, with each identity's best face."""
        queries = np.asarray(queries, dtype=np.float32)
        n_rows = self._rows() if len(queries) else 0
        if n_rows == 0:
            return [[] for _ in queries]
        exact = n_rows < self.parent.exact_below
        # autocommit: one SELECT is atomic by itself, and no BEGIN/COMMIT round trips
        with self.parent.store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return [self._search_one(conn, q, top_k, n_rows, exact) for q in queries]

    def _search_one(self, conn: Connection, q: np.ndarray, top_k: int, n_rows: int, exact: bool) -> list[Match]:
        if self.parent.scoring == "template":
            if not exact:
                self.parent.configure(conn, top_k)
            rows = conn.execute(self.parent.statement(self.version, self.dim, "template", exact),
                                {"q": q, "limit": top_k}).all()
            return [Match(int(iid), label, int(fid or 0), cosine(sc))
                    for iid, label, sc, fid in sorted(rows, key=lambda r: (-r[2], r[0]))]
        limit = max(top_k * 4, 32)
        while True:
            if not exact:
                self.parent.configure(conn, limit)
            rows = conn.execute(self.parent.statement(self.version, self.dim, "face", exact),
                                {"q": q, "limit": limit}).all()
            matches = _best_per_identity(rows, top_k)
            if len(matches) == top_k or limit >= n_rows:  # many faces of few identities: walk further down
                return matches
            limit *= 4

    def scores_for_identity(self, query: np.ndarray, identity_id: int) -> float | None:
        """The identity's score for `query` (template, or best face), None if it has no vectors here."""
        q = np.asarray(query, dtype=np.float32)
        model = self.parent.model
        stmt = select(func.max(1 - cast(model.vector, VECTOR(self.dim)).cosine_distance(q)))
        if model is Template:
            stmt = stmt.where(Template.identity_id == identity_id, Template.model_version == self.version)
        else:
            stmt = (stmt.join(Face, Face.id == Embedding.face_id)
                    .where(Face.identity_id == identity_id, Embedding.model_version == self.version))
        with self.parent.store.sessions() as s:
            score = s.scalar(stmt)
        return None if score is None else float(score)

    def sample(self, max_faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, identity ids) of all the faces of a random subset of identities, at most `max_faces`
        faces (all of them when there are no more)."""
        base = (select(Embedding.id, Face.identity_id).join(Face, Face.id == Embedding.face_id)
                .where(Embedding.model_version == self.version).order_by(Embedding.id))
        with self.parent.store.sessions() as s:
            pairs = np.asarray(s.execute(base).all(), np.int64).reshape(-1, 2)
            ids = pairs[pick_identities(pairs[:, 1], max_faces, seed), 0]
            rows = s.execute(select(Embedding.vector, Face.identity_id).join(Face, Face.id == Embedding.face_id)
                             .where(Embedding.id.in_(ids.tolist())).order_by(Embedding.id)).all() if len(ids) else []
        if not rows:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64)
        mat = np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), -1)
        return mat.copy(), np.asarray([r[1] for r in rows], np.int64)


def _nearest(model, key, version: str, dim: int, exact: bool, limit):
    """The version's `limit` rows nearest the query `q`: from the HNSW index (its expression: the halfvec
    cast, the query cast the same way) or, exact, by float32 distance."""
    q = cast(bindparam("q", type_=VECTOR(dim)), VECTOR(dim))
    order = (cast(model.vector, VECTOR(dim)).cosine_distance(q) if exact
             else cast(model.vector, HALFVEC(dim)).cosine_distance(cast(q, HALFVEC(dim))))
    return (select(key, model.vector).where(model.model_version == version).order_by(order).limit(limit)
            .subquery(), q)


def _face_statement(version: str, dim: int, exact: bool) -> Select:
    """(face id, identity id, label, exact float32 score) of the faces nearest `q`, at most `limit`."""
    nn, q = _nearest(Embedding, Embedding.face_id, version, dim, exact, bindparam("limit"))
    score = 1 - cast(nn.c.vector, VECTOR(dim)).cosine_distance(q)
    return (select(nn.c.face_id, Face.identity_id, Identity.label, score)
            .join(Face, Face.id == nn.c.face_id).join(Identity, Identity.id == Face.identity_id))


def _template_statement(version: str, dim: int, exact: bool) -> Select:
    """(identity id, label, exact float32 template score, best face id) of the `limit` templates nearest
    `q`, in one statement: each identity's best face comes from a lateral subquery (ties by face id)."""
    nn, q = _nearest(Template, Template.identity_id, version, dim, exact, bindparam("limit"))
    best = (select(Embedding.face_id).join(Face, Face.id == Embedding.face_id)
            .where(Face.identity_id == nn.c.identity_id, Embedding.model_version == version)
            .order_by(cast(Embedding.vector, VECTOR(dim)).cosine_distance(q), Embedding.face_id)
            .limit(1).lateral())
    score = 1 - cast(nn.c.vector, VECTOR(dim)).cosine_distance(q)
    return (select(nn.c.identity_id, Identity.label, score, best.c.face_id)
            .join(Identity, Identity.id == nn.c.identity_id).outerjoin(best, true()))


def _best_per_identity(rows, top_k: int) -> list[Match]:
    """Each identity's best face, best first (ties by face id, so answers are stable)."""
    best: dict[int, Match] = {}
    for face_id, identity_id, label, score in sorted(rows, key=lambda r: (-r[3], r[0])):
        if identity_id not in best:
            best[identity_id] = Match(int(identity_id), label, int(face_id), cosine(score))
            if len(best) == top_k:
                break
    return list(best.values())
