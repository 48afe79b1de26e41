"""Gallery store: engine set-up (SQLite WAL, foreign keys, busy timeout), migrations, and CRUD.

The database is the source of truth. Every write bumps `gallery_state.generation` in the same transaction,
so any process can tell cheaply whether its in-memory index is stale.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from sqlalchemy import create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload, sessionmaker

from app.gallery.events import add_event
from app.gallery.png import encode_rgb
from app.gallery.reserve import StorageReserve
from model.templates import template_of
from app.gallery.models import (DistinctPair, Embedding, Face, Feedback, GalleryState, Identity, IdentityChange,
                                Template, utcnow)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# identity_changes keeps this many generations of non-append writes: an in-memory search further behind than
# that (a process paused for a very long time) reloads the whole gallery instead of the identities touched
CHANGE_LOG_GENERATIONS = 100_000
NOTIFY_CHANNEL = "faceid_gallery"  # PostgreSQL: every committed write is announced here (app/gallery/notify.py)
_MIGRATION_LOCK_KEY = 0x66616365  # PostgreSQL advisory lock that serialises migrations of several replicas


def make_engine(url: str, busy_timeout_s: float = 5.0, search_path: str | None = None, pool_size: int = 10) -> Engine:
    """`busy_timeout_s`: how long SQLite waits for another writer's lock before 'database is locked' (the
    API answers 503 database_busy); shorter than a client's request timeout. PostgreSQL: `search_path` (a
    collection's schema, app/services/collections.py) and the pool's size."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged enrollment survives power loss too
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.close()
        return engine
    # PostgreSQL (or another server): connections checked before use, so a database restart costs the
    # requests made while it was down (503) and nothing after. psycopg's prepared statements are off:
    # a generic plan could not use the per-model-version partial HNSW indexes.
    # lock_timeout: a writer waiting on another's lock gives up after `busy_timeout_s` (503 database_busy), as
    # SQLite's busy timeout does.
    options = f"-c lock_timeout={max(1, int(busy_timeout_s * 1000))}"
    if search_path:
        options += f" -c search_path={search_path}"
    connect_args = ({"prepare_threshold": None, "options": options} if url.startswith("postgresql+psycopg") else {})
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=20, connect_args=connect_args)


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest Alembic revision (idempotent; safe with several processes)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with _migration_lock(engine), engine.connect() as conn:
        if sqlite:  # tables rebuilt in batch mode are dropped: with foreign keys on, the drop would cascade
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # (before the transaction: inside one it is ignored)
            conn.commit()
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":  # DDL is transactional: the lock ends with the transaction
                    conn.execute(text("SET LOCAL lock_timeout = 0"))  # replicas wait their turn, however long
                    conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
                    schema = conn.scalar(text("SELECT current_schema()"))
                    if schema != "public":  # a collection's schema: its own version table, its own tables
                        cfg.attributes["schema"] = schema
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the migration left rows whose foreign keys point nowhere; not committed")
                if conn.scalar(select(GalleryState.id).where(GalleryState.id == 1)) is None:
                    conn.execute(insert(GalleryState).values(id=1, generation=0, rebuild_generation=0))
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


@contextmanager
def _migration_lock(engine: Engine):
    """Several workers start at once: SQLite DDL is not transactional here, so serialise with a file lock
    (PostgreSQL takes an advisory lock inside the migration transaction instead)."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def crop_to_png(crop: np.ndarray) -> bytes:
    """A face crop (H x W x 3 uint8) as PNG (app/gallery/png.py: 2.25x faster than Pillow's encoder); anything
    else through Pillow."""
    if crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3 and crop.size:
        return encode_rgb(crop)
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_to_crop(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def vector_to_bytes(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype="<f4").tobytes()


def bytes_to_matrix(blobs: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)


@dataclass
class IndexRows:
    """What an in-memory search holds of one model version: embedding rows (ids, faces, identities, vectors),
    the labels and stored templates of the identities they belong to. Read in one session (consistent)."""
    emb_ids: np.ndarray
    face_ids: np.ndarray
    ident_ids: np.ndarray
    mat: np.ndarray
    labels: dict[int, str]
    templates: dict[int, np.ndarray]


@dataclass
class NewFace:
    """A face ready to store: crop, where it was found, and its embeddings by model version."""
    crop: np.ndarray
    crop_margin: int
    source_sha256: str
    box: list
    landmarks: list
    detection_score: float
    embeddings: dict[str, np.ndarray]


def _brief(ident: Identity) -> dict:
    """An identity as events name it."""
    return {"id": ident.id, "label": ident.label}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Unchanged(Exception):
    """Raised inside a write transaction to roll it back."""


class NotFound(LookupError):
    """A write names a row that does not exist (nothing was changed): `kind` ('face', 'identity', ...), `id`."""

    def __init__(self, kind: str, id_: int):
        super().__init__(f"{kind} {id_} does not exist")
        self.kind, self.id = kind, id_


class GalleryStore:
    def __init__(self, engine: Engine, schema: str | None = None):
        """`schema`: PostgreSQL, a collection's (its engine's search_path); its writes are announced on a channel
        of its own."""
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.is_postgres = engine.dialect.name == "postgresql"
        self.schema = schema
        self.channel = NOTIFY_CHANNEL if schema is None else f"{NOTIFY_CHANNEL}_{schema}"
        self.owns_engine = True  # False: an engine shared with other collections (not disposed with this store)
        self.reserve = StorageReserve(None, 0)  # build_service puts one beside a SQLite file (deletes on a full disk)

    def _bump(self, s: Session, rebuild: bool = False) -> None:
        values = {"generation": GalleryState.generation + 1}
        if rebuild:
            values["rebuild_generation"] = GalleryState.rebuild_generation + 1
        s.execute(update(GalleryState).where(GalleryState.id == 1).values(**values))
        self._notify(s)

    @staticmethod
    def _log_changes(s: Session, identity_ids) -> None:
        """Record that this transaction's write (already bumped) touched `identity_ids`, for the in-memory
        searches that follow the log (`changed_identities`); entries older than CHANGE_LOG_GENERATIONS go."""
        ids = sorted({int(i) for i in identity_ids})
        gen = s.scalar(select(GalleryState.generation).where(GalleryState.id == 1))
        if not ids or gen is None:
            return
        s.execute(insert(IdentityChange), [{"generation": gen, "identity_id": i} for i in ids])
        if gen % 1000 == 0:
            s.execute(delete(IdentityChange).where(IdentityChange.generation < gen - CHANGE_LOG_GENERATIONS))

    def changed_identities(self, since_generation: int) -> set[int] | None:
        """The identities that non-append writes after `since_generation` touched; None when the log no longer
        reaches back that far (reload everything)."""
        with self.sessions() as s:
            gen = s.scalar(select(GalleryState.generation).where(GalleryState.id == 1)) or 0
            if since_generation < gen - CHANGE_LOG_GENERATIONS:
                return None
            return set(s.scalars(select(IdentityChange.identity_id)
                                 .where(IdentityChange.generation > since_generation)).all())

    def _notify(self, s: Session) -> None:
        """PostgreSQL: tell every other process of this write when it commits (NOTIFY is transactional)."""
        if self.is_postgres:
            gen = select(func.concat(GalleryState.generation, ",", GalleryState.rebuild_generation)) \
                .where(GalleryState.id == 1).scalar_subquery()
            s.execute(select(func.pg_notify(self.channel, gen)))

    def generation(self) -> tuple[int, int]:
        """(generation, rebuild_generation)."""
        with self.sessions() as s:
            row = s.execute(select(GalleryState.generation, GalleryState.rebuild_generation)
                            .where(GalleryState.id == 1)).first()
            return (row[0], row[1]) if row else (0, 0)

    def serving(self) -> tuple[str | None, str | None]:
        """(checkpoint spec, model version) that the processes on this gallery should serve."""
        with self.sessions() as s:
            row = s.execute(select(GalleryState.serving_model, GalleryState.serving_version)
                            .where(GalleryState.id == 1)).first()
            return (row[0], row[1]) if row else (None, None)

    def set_serving(self, spec: str, version: str, prepare=None) -> None:
        """Record the model every process should serve. `prepare(session)` runs first in the same
        transaction (PostgreSQL: the new version's HNSW index), so the switch and what it needs commit together."""
        with self.sessions() as s, s.begin():
            if prepare is not None:
                prepare(s)
            previous = s.scalar(select(GalleryState.serving_version).where(GalleryState.id == 1))
            s.execute(update(GalleryState).where(GalleryState.id == 1)
                      .values(serving_model=spec, serving_version=version))
            add_event(s, "model.swapped", {"model": spec, "model_version": version, "previous_version": previous})
            self._notify(s)

    # --- writes -------------------------------------------------------------------------------------
    @staticmethod
    def _refresh_templates(s: Session, identity_ids, version: str | None = None) -> None:
        """Re-make the templates of `identity_ids` (all model versions, or one) from their faces' embeddings,
        inside the caller's transaction; an identity or version without embeddings keeps no template."""
        ids = sorted(set(int(i) for i in identity_ids))
        if not ids:
            return
        q = delete(Template).where(Template.identity_id.in_(ids))
        e = (select(Face.identity_id, Embedding.model_version, Embedding.vector)
             .join(Face, Face.id == Embedding.face_id).where(Face.identity_id.in_(ids)))
        if version is not None:
            q = q.where(Template.model_version == version)
            e = e.where(Embedding.model_version == version)
        s.execute(q)
        groups: dict[tuple[int, str], list[bytes]] = {}
        for iid, ver, blob in s.execute(e.order_by(Embedding.id)).all():
            groups.setdefault((iid, ver), []).append(blob)
        for (iid, ver), blobs in groups.items():
            s.add(Template(identity_id=iid, model_version=ver, n_faces=len(blobs),
                           vector=vector_to_bytes(template_of(bytes_to_matrix(blobs)))))

    def enroll(self, label: str | None, faces: list[NewFace], identity_id: int | None = None,
               also: Callable[[Session], list[NewFace]] | None = None) -> tuple[Identity, list[Face], bool]:
        """Add faces to identity `label` (created if new), or to the existing `identity_id` (NotFound when there is
        none), in one transaction. `also(session)`, run first inside it, may return more faces (and do its own
        writes: enrolling a cluster of kept unknown faces deletes it). Returns (identity, faces, created)."""
        with self.sessions() as s, s.begin():
            self._bump(s)  # takes SQLite's write lock first, so the label lookup below cannot race
            if also is not None:
                faces = list(faces) + also(s)
            if identity_id is not None:
                ident = s.get(Identity, identity_id)
                if ident is None:
                    raise NotFound("identity", identity_id)
            else:
                ident = s.scalar(select(Identity).where(Identity.label == label))
            created = ident is None
            if created:
                ident = Identity(label=label)
                s.add(ident)
                s.flush()
            rows = []
            for nf in faces:
                face = Face(identity_id=ident.id, crop_png=crop_to_png(nf.crop), crop_size=int(nf.crop.shape[0]),
                            crop_margin=nf.crop_margin, source_sha256=nf.source_sha256, box=nf.box,
                            landmarks=nf.landmarks, detection_score=nf.detection_score)
                s.add(face)
                s.flush()
                for version, vec in nf.embeddings.items():
                    s.add(Embedding(face_id=face.id, model_version=version, vector=vector_to_bytes(vec)))
                rows.append(face)
            s.flush()
            self._refresh_templates(s, [ident.id])
            add_event(s, "enroll", {"identity": _brief(ident), "created": created, "face_ids": [f.id for f in rows],
                                    "model_versions": sorted({v for nf in faces for v in nf.embeddings})})
            return ident, rows, created

    # Read-modify-write methods take the write lock first (`_bump`: an UPDATE of gallery_state, SQLite's
    # write lock, a row lock on PostgreSQL), then read: two concurrent deletes or a rename racing a delete
    # see each other's committed result (404) instead of a stale row (500). Nothing found: roll back.
    def rename(self, identity_id: int, label: str, cover: bool = False, cover_face_id: int | None = None
               ) -> Identity | None:
        """Relabel the identity (None when it does not exist), and with `cover` set its cover first, in the same
        transaction (`set_cover`: its NotFound comes before a taken label, and nothing changes)."""
        with self.sessions() as s, s.begin() as tx:
            self._bump(s)
            ident = s.get(Identity, identity_id)
            if ident is None:
                tx.rollback()
                return None
            if cover:
                self._set_cover(s, identity_id, cover_face_id)
            self._log_changes(s, [identity_id])
            previous = ident.label
            ident.label = label
            s.flush()
            add_event(s, "identity.updated", {"identity": _brief(ident), "previous_label": previous,
                                              "change": "renamed"})
            if cover:
                s.refresh(ident)  # the cover was written by a statement, not through this object
            return ident

    def delete_identity(self, identity_id: int) -> bool:
        return self.reserve.freeing(lambda: self._delete_identity(identity_id))

    def _delete_identity(self, identity_id: int) -> bool:
        with self.sessions() as s, s.begin() as tx:
            self._bump(s)
            ident = s.get(Identity, identity_id)
            if ident is None:
                tx.rollback()
                return False
            self._log_changes(s, [identity_id])
            add_event(s, "identity.deleted", {"identity": _brief(ident)})
            s.delete(ident)
            return True

    def delete_face(self, face_id: int) -> bool:
        """Delete one face; an identity left without faces is deleted too (no empty identities)."""
        return self.reserve.freeing(lambda: self._delete_face(face_id))

    def _delete_face(self, face_id: int) -> bool:
        with self.sessions() as s, s.begin() as tx:
            self._bump(s)
            face = s.get(Face, face_id)
            if face is None:
                tx.rollback()
                return False
            identity_id = face.identity_id
            self._log_changes(s, [identity_id])
            s.delete(face)
            s.flush()
            ident = s.get(Identity, identity_id)  # exists: the write lock is ours since the first read
            if ident.cover_face_id == face_id:
                ident.cover_face_id = None
            if not s.scalar(select(func.count(Face.id)).where(Face.identity_id == identity_id)):
                add_event(s, "identity.deleted", {"identity": _brief(ident), "last_face_id": face_id})
                s.delete(ident)
            else:
                self._refresh_templates(s, [identity_id])
                add_event(s, "identity.updated", {"identity": _brief(ident), "change": "face_deleted",
                                                  "face_id": face_id})
            return True

    def merge(self, into_id: int, from_id: int) -> Identity | None:
        """Move every face of identity `from_id` into `into_id` and delete `from_id`, in one transaction.
        None when either identity does not exist (nothing changes)."""
        try:
            with self.sessions() as s, s.begin():
                self._bump(s)  # takes SQLite's write lock first: no enroll can slip in between
                into, source = s.get(Identity, into_id), s.get(Identity, from_id)
                if into is None or source is None:
                    raise _Unchanged  # leaving the block rolls the bump back
                add_event(s, "identity.merged", {"identity": _brief(into), "merged": _brief(source)})
                self._log_changes(s, [into_id, from_id])
                # bulk statements: loading the source's faces would let the ORM's delete-orphan cascade delete them
                s.execute(update(Face).where(Face.identity_id == from_id).values(identity_id=into_id))
                for column in (Feedback.identity_id, Feedback.answered_identity_id):  # reports follow the person
                    s.execute(update(Feedback).where(column == from_id).values({column.key: into_id}))
                self._move_distinct_marks(s, from_id, into_id)
                s.execute(delete(Identity).where(Identity.id == from_id))
                self._refresh_templates(s, [into_id])
                into.updated_at = utcnow()
                return into
        except _Unchanged:
            return None

    @staticmethod
    def _move_distinct_marks(s: Session, from_id: int, into_id: int) -> None:
        """A merge keeps what people said about the merged identity: "A is not C" becomes "B is not C" when A
        goes into B (a mark between the two merged identities ends with the merge)."""
        rows = s.execute(select(DistinctPair.identity_a, DistinctPair.identity_b).where(
            (DistinctPair.identity_a == from_id) | (DistinctPair.identity_b == from_id))).all()
        s.execute(delete(DistinctPair).where((DistinctPair.identity_a == from_id) | (DistinctPair.identity_b == from_id)))
        others = {b if a == from_id else a for a, b in rows} - {into_id}
        have = {tuple(r) for r in s.execute(select(DistinctPair.identity_a, DistinctPair.identity_b).where(
            (DistinctPair.identity_a == into_id) | (DistinctPair.identity_b == into_id))).all()}
        for o in sorted(others):
            pair = (min(o, into_id), max(o, into_id))
            if pair not in have:
                s.add(DistinctPair(identity_a=pair[0], identity_b=pair[1]))

    def move_face(self, face_id: int, to_identity_id: int | None = None, to_label: str | None = None):
        """Move one face to identity `to_identity_id`, or to the identity labelled `to_label` (created if new),
        in one transaction; templates of both follow, and an identity left without faces is deleted.
        Returns (face, identity, created, emptied_identity_id or None). Raises NotFound (nothing changes)."""
        if (to_identity_id is None) == (to_label is None):
            raise ValueError("give exactly one of to_identity_id or to_label")
        with self.sessions() as s, s.begin():
            self._bump(s)  # the write lock first: the reads below see committed state
            face = s.get(Face, face_id)
            if face is None:
                raise NotFound("face", face_id)
            created = False
            if to_label is not None:
                target = s.scalar(select(Identity).where(Identity.label == to_label))
                if target is None:
                    target, created = Identity(label=to_label), True
                    s.add(target)
                    s.flush()
            else:
                target = s.get(Identity, to_identity_id)
                if target is None:
                    raise NotFound("identity", to_identity_id)
            source_id = face.identity_id
            if source_id == target.id:
                return face, target, False, None
            self._log_changes(s, [source_id, target.id])
            s.execute(update(Identity).where(Identity.id == source_id, Identity.cover_face_id == face_id)
                      .values(cover_face_id=None))  # a cover is one of the identity's own faces
            # a bulk statement: changing face.identity through the ORM would trip the delete-orphan cascade
            s.execute(update(Face).where(Face.id == face_id).values(identity_id=target.id))
            target.updated_at = utcnow()
            emptied = None
            if not s.scalar(select(func.count(Face.id)).where(Face.identity_id == source_id)):
                s.execute(delete(Identity).where(Identity.id == source_id))
                emptied = source_id
            self._refresh_templates(s, [target.id] + ([] if emptied else [source_id]))
            s.flush()
            s.refresh(face)
            add_event(s, "identity.updated", {"identity": _brief(target), "change": "face_moved_in",
                                              "face_id": face_id, "created": created})
            if emptied:
                add_event(s, "identity.deleted", {"identity": {"id": source_id}, "last_face_id": face_id})
            else:
                add_event(s, "identity.updated", {"identity": _brief(s.get(Identity, source_id)),
                                                  "change": "face_moved_out", "face_id": face_id})
            return face, target, created, emptied

    def set_cover(self, identity_id: int, face_id: int | None) -> Identity:
        """Make `face_id` (one of the identity's faces; None: none) the face its card shows: one conditional
        UPDATE after the write lock (PostgreSQL would otherwise see a face whose delete or move is committing, and
        keep a cover that outlives it). Raises NotFound ('identity', or 'face' when the face is not one of its
        faces); nothing changes then."""
        with self.sessions() as s, s.begin():
            self._bump(s)  # leaving the block on NotFound rolls the bump back
            self._set_cover(s, identity_id, face_id)
            return s.get(Identity, identity_id)

    @staticmethod
    def _set_cover(s: Session, identity_id: int, face_id: int | None) -> None:
        q = update(Identity).where(Identity.id == identity_id)
        if face_id is not None:
            q = q.where(select(Face.id).where(Face.id == face_id, Face.identity_id == identity_id).exists())
        if not s.execute(q.values(cover_face_id=face_id)).rowcount:
            raise NotFound("identity", identity_id) if s.get(Identity, identity_id) is None \
                else NotFound("face", face_id)

    def add_embeddings(self, version: str, vectors: dict[int, np.ndarray]) -> int:
        """Store embeddings of existing faces for `version` (faces deleted meanwhile are skipped)."""
        with self.sessions() as s, s.begin():
            existing = set(s.scalars(select(Face.id).where(Face.id.in_(list(vectors)))))
            have = set(s.scalars(select(Embedding.face_id).where(Embedding.model_version == version,
                                                                 Embedding.face_id.in_(list(vectors)))))
            n = 0
            for fid, vec in vectors.items():
                if fid in existing and fid not in have:
                    s.add(Embedding(face_id=fid, model_version=version, vector=vector_to_bytes(vec)))
                    n += 1
            if n:
                s.flush()
                touched = s.scalars(select(Face.identity_id).where(Face.id.in_(list(existing - have))).distinct())
                self._refresh_templates(s, list(touched), version)
                self._bump(s)  # nothing added, nothing to announce
            return n

    def prune_versions(self, keep: set[str]) -> int:
        with self.sessions() as s, s.begin():
            rows = s.scalars(select(Embedding).where(Embedding.model_version.not_in(keep))).all()
            for r in rows:
                s.delete(r)
            s.execute(delete(Template).where(Template.model_version.not_in(keep)))
            self._bump(s, rebuild=True)
            return len(rows)

    # --- reads --------------------------------------------------------------------------------------
    def get_identity(self, identity_id: int, crops: bool = True) -> Identity | None:
        """The identity with its faces (`crops=False`: without loading their crop images)."""
        load = selectinload(Identity.faces) if crops else selectinload(Identity.faces).defer(Face.crop_png)
        with self.sessions() as s:
            return s.scalar(select(Identity).where(Identity.id == identity_id).options(load))

    def face_count(self, identity_id: int) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count(Face.id)).where(Face.identity_id == identity_id)) or 0

    def list_identities(self, offset: int, limit: int, prefix: str | None = None, contains: str | None = None,
                        sort: str = "id"):
        """(rows of (identity, face count), total): labels starting with `prefix` and/or containing `contains`
        (ignoring case), ordered by `sort`: id, label (ignoring case), faces (most first) or newest; ties by id."""
        with self.sessions() as s:
            n_faces = func.count(Face.id)
            q = select(Identity, n_faces).outerjoin(Face).group_by(Identity.id)
            cq = select(func.count(Identity.id))
            where = []
            if prefix:
                where.append(Identity.label.startswith(prefix, autoescape=True))
            if contains:
                where.append(Identity.label.icontains(contains, autoescape=True))
            if where:
                q, cq = q.where(*where), cq.where(*where)
            order = {"id": [Identity.id], "label": [func.lower(Identity.label), Identity.id],
                     "faces": [n_faces.desc(), Identity.id], "newest": [Identity.id.desc()]}[sort]
            rows = s.execute(q.order_by(*order).offset(offset).limit(limit)).all()
            return [(r[0], r[1]) for r in rows], s.scalar(cq) or 0

    def identities_by_id(self, identity_ids) -> dict[int, tuple[Identity, int]]:
        """{id: (identity, face count)} of those of `identity_ids` that exist."""
        ids = sorted({int(i) for i in identity_ids})
        if not ids:
            return {}
        with self.sessions() as s:
            rows = s.execute(select(Identity, func.count(Face.id)).outerjoin(Face).where(Identity.id.in_(ids))
                             .group_by(Identity.id)).all()
            return {r[0].id: (r[0], r[1]) for r in rows}

    def labels(self, identity_ids) -> dict[int, str]:
        """{id: label} of those of `identity_ids` that exist."""
        ids = sorted({int(i) for i in identity_ids})
        if not ids:
            return {}
        with self.sessions() as s:
            return dict(s.execute(select(Identity.id, Identity.label).where(Identity.id.in_(ids))).all())

    def get_face(self, face_id: int) -> Face | None:
        with self.sessions() as s:
            return s.get(Face, face_id)

    def faces_by_source(self, hashes: list[str]) -> list[tuple[Face, str]]:
        """(face, its identity's label) for every stored face whose source image hash is in `hashes`."""
        with self.sessions() as s:
            rows = s.execute(select(Face, Identity.label).join(Identity, Identity.id == Face.identity_id)
                             .where(Face.source_sha256.in_(hashes)).order_by(Face.id)).all()
            return [(r[0], r[1]) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return {"identities": s.scalar(select(func.count(Identity.id))) or 0,
                    "faces": s.scalar(select(func.count(Face.id))) or 0}

    def vectors(self, version: str, after_id: int = 0):
        """(embedding ids, face ids, identity ids, labels, matrix) of `version`, embedding id > after_id."""
        with self.sessions() as s:
            rows = s.execute(
                select(Embedding.id, Embedding.face_id, Face.identity_id, Identity.label, Embedding.vector)
                .join(Face, Face.id == Embedding.face_id).join(Identity, Identity.id == Face.identity_id)
                .where(Embedding.model_version == version, Embedding.id > after_id).order_by(Embedding.id)).all()
        if not rows:
            return (np.zeros(0, np.int64),) * 3 + ([], np.zeros((0, 0), np.float32))
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        fids = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        iids = np.fromiter((r[2] for r in rows), np.int64, len(rows))
        return ids, fids, iids, [r[3] for r in rows], bytes_to_matrix([r[4] for r in rows])

    def index_rows(self, version: str, after_id: int = 0, identity_ids=None) -> IndexRows:
        """`version`'s embedding rows with embedding id > `after_id` (or every row of `identity_ids`), with the
        labels and stored templates of the identities they belong to, in one session."""
        q = select(Embedding.id, Embedding.face_id, Face.identity_id, Embedding.vector, Embedding.model_version)
        if identity_ids is not None:  # from the identities' faces (indexed): no model_version filter in SQL, which
            # SQLite would take as the index to scan (every row of the version) rather than a filter
            q = (q.select_from(Face).join(Embedding, Embedding.face_id == Face.id)
                 .where(Face.identity_id.in_(sorted(identity_ids))))
        else:
            q = (q.join(Face, Face.id == Embedding.face_id)
                 .where(Embedding.model_version == version, Embedding.id > after_id))
        with self.sessions() as s, s.begin():
            rows = [r for r in s.execute(q.order_by(Embedding.id)).all() if r[4] == version]
            ids = sorted({r[2] for r in rows})
            labels, templates = {}, {}
            for chunk in (ids[i:i + 10_000] for i in range(0, len(ids), 10_000)):
                labels.update(s.execute(select(Identity.id, Identity.label).where(Identity.id.in_(chunk))).all())
                templates.update((i, np.frombuffer(v, dtype="<f4").copy()) for i, v in s.execute(
                    select(Template.identity_id, Template.vector)
                    .where(Template.model_version == version, Template.identity_id.in_(chunk))).all())
        n = len(rows)
        return IndexRows(np.fromiter((r[0] for r in rows), np.int64, n), np.fromiter((r[1] for r in rows), np.int64, n),
                         np.fromiter((r[2] for r in rows), np.int64, n),
                         bytes_to_matrix([r[3] for r in rows]) if n else np.zeros((0, 0), np.float32),
                         labels, templates)

    def templates(self, version: str) -> dict[int, tuple[np.ndarray, int]]:
        """{identity id: (template vector, number of faces)} of `version`."""
        with self.sessions() as s:
            rows = s.execute(select(Template.identity_id, Template.vector, Template.n_faces)
                             .where(Template.model_version == version)).all()
        return {r[0]: (np.frombuffer(r[1], dtype="<f4").copy(), r[2]) for r in rows}

    def versions(self) -> dict[str, int]:
        with self.sessions() as s:
            return dict(s.execute(select(Embedding.model_version, func.count(Embedding.id))
                                  .group_by(Embedding.model_version)).all())

    def some_crops(self, n: int) -> list[np.ndarray]:
        """Up to n stored face crops (the first enrolled), e.g. to probe a candidate model with."""
        with self.sessions() as s:
            return [png_to_crop(b) for b in s.scalars(select(Face.crop_png).order_by(Face.id).limit(n))]

    def faces_missing(self, version: str, batch: int = 256):
        """Yield batches of (face id, crop) for faces without an embedding of `version`."""
        last = 0
        while True:
            with self.sessions() as s:
                have = select(Embedding.face_id).where(Embedding.model_version == version)
                rows = s.execute(select(Face.id, Face.crop_png).where(Face.id > last, Face.id.not_in(have))
                                 .order_by(Face.id).limit(batch)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[0], png_to_crop(r[1])) for r in rows]
