"""Tables: identities, faces (aligned crop kept for re-embedding), embeddings (one per face and model version),
templates (one per identity and model version); probes (faces of recent /identify answers) and feedback
(reports on faces, with their crops); distinct_pairs (identities said not to be duplicates); identity_changes
(the change log the in-memory search follows); event_outbox, subscriptions, dead_letters (events, app/gallery/events.py);
unknown_clusters, unknown_faces, unknown_embeddings (unknown faces kept by choice, app/gallery/unknown.py);
collections (the registry of the other collections, in the default collection's database only:
app/services/collections.py)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String,
                        Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


MAX_ID = 2**31 - 1  # ids are INTEGER on both databases (PostgreSQL: 32-bit; a larger id cannot exist)
# Ids are never reused after a delete (a CSV, an automation or `faceid verify --identity 7` must not silently
# point at someone else): SQLite AUTOINCREMENT (migration 0007); PostgreSQL's sequences never go back.
NEVER_REUSED = {"sqlite_autoincrement": True}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UnitVector(TypeDecorator):
    """A float32 vector, bytes (little-endian) on the Python side on every database: `bytea` on SQLite,
    pgvector's `vector` on PostgreSQL, where it is searched in the database (migration 0004 converts the
    column; HNSW indexes are built on its `halfvec` cast, see app/gallery/search/pgvector.py). The stored
    value stays exact float32 on both, so copies between the two round-trip bit for bit."""
    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(VECTOR() if dialect.name == "postgresql" else LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None or dialect.name != "postgresql":
            return value
        return np.frombuffer(value, dtype="<f4")

    def process_result_value(self, value, dialect):
        if value is None or dialect.name != "postgresql":
            return value
        return np.asarray(value, dtype="<f4").tobytes()


class Base(DeclarativeBase):
    pass


class Identity(Base):
    __tablename__ = "identities"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # the face its gallery card shows (None: the first); no foreign key (faces point here already): the store
    # clears it when that face is deleted or moved to someone else (migration 0011)
    cover_face_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    faces: Mapped[list["Face"]] = relationship(back_populates="identity", cascade="all, delete-orphan",
                                               passive_deletes=True, order_by="Face.id")


class Face(Base):
    __tablename__ = "faces"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), index=True)
    crop_png: Mapped[bytes] = mapped_column(LargeBinary)   # what the embedder saw, lossless
    crop_size: Mapped[int] = mapped_column(Integer)
    crop_margin: Mapped[int] = mapped_column(Integer)
    source_sha256: Mapped[str] = mapped_column(String(64), index=True)
    box: Mapped[list] = mapped_column(JSON)
    landmarks: Mapped[list] = mapped_column(JSON)
    detection_score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    identity: Mapped[Identity] = relationship(back_populates="faces")
    embeddings: Mapped[list["Embedding"]] = relationship(back_populates="face", cascade="all, delete-orphan",
                                                         passive_deletes=True)


class Embedding(Base):
    __tablename__ = "embeddings"
    # ids never reused either: an in-memory search appends the embeddings past the last id it has seen
    __table_args__ = (UniqueConstraint("face_id", "model_version", name="uq_embedding_face_version"), NEVER_REUSED)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    vector: Mapped[bytes] = mapped_column(UnitVector)       # float32 little-endian, unit length
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    face: Mapped[Face] = relationship(back_populates="embeddings")


class Template(Base):
    """An identity searched as a whole: the normalised mean of its faces' embeddings of one model version.
    Kept by the store in the same transaction as every write that changes the identity's faces."""
    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("identity_id", "model_version", name="uq_template_identity_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    vector: Mapped[bytes] = mapped_column(UnitVector)       # float32 little-endian, unit length
    n_faces: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class GalleryState(Base):
    """One row. `generation` is bumped by every write; `rebuild_generation` only by writes that are not
    pure appends (delete, rename, prune), so a process refreshes its index incrementally when it can."""
    __tablename__ = "gallery_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    rebuild_generation: Mapped[int] = mapped_column(Integer, default=0)
    # the model every process should serve (set by a hot swap), so all workers and replicas follow it
    serving_model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    serving_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # bumped by every write of kept unknown faces or their clusters: a process's cached clusters are current
    # while it matches (app/gallery/unknown.py)
    unknown_revision: Mapped[int] = mapped_column(Integer, default=0)


class FaceCropColumns:
    """A face kept outside the gallery (probes, feedback): its crop, where it was found, the model that saw it
    (`app.gallery.feedback.FaceCrop` is the same record in memory)."""
    crop_png: Mapped[bytes] = mapped_column(LargeBinary)
    crop_size: Mapped[int] = mapped_column(Integer)
    crop_margin: Mapped[int] = mapped_column(Integer)
    source_sha256: Mapped[str] = mapped_column(String(64))
    box: Mapped[list] = mapped_column(JSON)
    landmarks: Mapped[list] = mapped_column(JSON)
    detection_score: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64))


class Probe(FaceCropColumns, Base):
    """A face of an /identify answer, kept for a bounded time (FACEID_PROBE_RETENTION_S) so a later
    POST /feedback can point at it by id instead of uploading the image again. Not part of the gallery."""
    __tablename__ = "probes"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16))                   # the answer: match | unknown | low_quality
    top_identity_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # best match, above threshold or not
    top_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # who got the answer: the API key's name, or "client:<address>" without keys; only they may report on it
    owner: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True)


KINDS = ("is", "is_not", "nobody")  # what a Feedback report says (its `kind`)


class Feedback(FaceCropColumns, Base):
    """A report on a face: `is` (it is identity_id), `is_not` (it is not identity_id) or `nobody` (nobody
    enrolled). Stored with the crop and the model version that answered. `answered_identity_id` is the
    identity the answer named (a `match`, when the report points at a probe): a face reported as someone
    else, or as nobody, is a hard negative for it. Deleting an identity deletes the reports that name it
    (`identity_id`) and forgets it as the answered one; a merge moves both to the merged identity."""
    __tablename__ = "feedback"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), nullable=True,
                                                    index=True)
    answered_identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"),
                                                             nullable=True)
    answered_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    probe_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)  # the probe it came from
    # (probes expire; one report per probe and reporter: a later one replaces it)
    reported_by: Mapped[str | None] = mapped_column(String(100), nullable=True)  # API key name
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DistinctPair(Base):
    """Two identities a person has said are not the same person: never suggested as duplicates, never left out
    of the gallery's impostor tail. Stored once per pair (`identity_a` < `identity_b`); goes with either."""
    __tablename__ = "distinct_pairs"
    __table_args__ = (CheckConstraint("identity_a < identity_b", name="ck_distinct_pair_order"),)
    identity_a: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True)
    identity_b: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"), primary_key=True,
                                            index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdentityChange(Base):
    """The change log of writes that are not pure appends (rename, delete, move, merge): which identities the
    write at `generation` touched, so a process's in-memory search reloads just those identities instead of
    the whole gallery. Kept for the last CHANGE_LOG_GENERATIONS generations (a process further behind reloads
    everything). No foreign key: a deleted identity's entry is what tells the search to forget it."""
    __tablename__ = "identity_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation: Mapped[int] = mapped_column(Integer, index=True)
    identity_id: Mapped[int] = mapped_column(Integer)


class OutboxEvent(Base):
    """An event to deliver (app/gallery/events.py), written in the same transaction as the change it describes
    where there is one. `seq` orders delivery; `event_id` is what receivers deduplicate by. Rows every
    subscription has passed are deleted."""
    __tablename__ = "event_outbox"
    __table_args__ = NEVER_REUSED  # cursors point at seqs: one reused after a prune would be skipped
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(40), index=True)
    body: Mapped[str] = mapped_column(Text)             # the JSON delivered, byte for byte
    created_at: Mapped[float] = mapped_column(Float)    # unix seconds


class Subscription(Base):
    """Where events go: a webhook (`kind` webhook: url, secret) or the MQTT broker (`kind` mqtt, its URL in the
    settings only). `cursor` is the last outbox seq handled (delivered or dead-lettered), so each subscription
    gets its events in order; `lease_owner` / `lease_until` let one worker of many replicas deliver it."""
    __tablename__ = "subscriptions"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list] = mapped_column(JSON)          # event types wanted; ["*"]: all
    secret: Mapped[str] = mapped_column(String(200))
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # failed tries of the event after `cursor`
    next_attempt_at: Mapped[float] = mapped_column(Float, default=0.0)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)


class DeadLetter(Base):
    """An event a subscription gave up on (attempts exhausted, or dropped past the backlog cap), kept with its
    body so `POST /webhooks/{id}/dead-letters/replay` can queue it again (`replay` true). Capped per subscription,
    oldest dropped first."""
    __tablename__ = "dead_letters"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    replay: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class UnknownCluster(Base):
    """A group of kept unknown faces that score as one person (app/services/unknown.py). `dismissed`: the person
    said never to suggest it (its faces stay together, new ones still join it). The suggestion is the enrolled
    identity the cluster's template matches at the service's operating point, refreshed with the clusters."""
    __tablename__ = "unknown_clusters"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    suggested_identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id", ondelete="SET NULL"),
                                                              nullable=True)
    suggested_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UnknownFace(FaceCropColumns, Base):
    """A face an /identify answered `unknown`, kept by choice (remember_unknown, FACEID_REMEMBER_UNKNOWN) until
    `expires_at` (None: until deleted); `model_version` is the model that saw it first. A photo's face is kept once
    (found again by `source_sha256` and its box, however often the photo is identified)."""
    __tablename__ = "unknown_faces"
    __table_args__ = (Index("ix_unknown_faces_source_sha256", "source_sha256"), NEVER_REUSED)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("unknown_clusters.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)


class UnknownEmbedding(Base):
    """A kept unknown face's embedding by one model version (a hot swap adds the new model's, as for the gallery)."""
    __tablename__ = "unknown_embeddings"
    __table_args__ = (UniqueConstraint("face_id", "model_version", name="uq_unknown_embedding_face_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("unknown_faces.id", ondelete="CASCADE"), index=True)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    vector: Mapped[bytes] = mapped_column(UnitVector)


class CollectionRow(Base):
    """A collection other than `default`: a gallery of its own in its own database (SQLite: a file beside the
    default one; PostgreSQL: a schema), named by `id` there, so a name deleted and made again never meets the old
    data. `state` is `deleting` from the moment a delete is asked until its data is gone (a restart finishes it).
    Only the default collection's database has rows here."""
    __tablename__ = "collections"
    __table_args__ = NEVER_REUSED
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)  # per-collection overrides of the service's settings
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
