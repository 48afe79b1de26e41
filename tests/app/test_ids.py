"""Ids are never reused after a delete (identities, faces, probes, reports), on a new gallery and on one
migrated from before migration 0007 with its data intact (real SQLite files; PostgreSQL's sequences never go
back: tests/app/test_postgres.py covers that database)."""
from __future__ import annotations

import numpy as np
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, func, select, text

from app.gallery.feedback import FaceCrop, FeedbackStore
from app.gallery.models import Embedding, Face, Identity, OutboxEvent, Probe, Template
from app.gallery.store import MIGRATIONS, GalleryStore, make_engine, migrate
from tests.app.test_transfer_routes import new_face

SHA = "a" * 64


def _crop() -> FaceCrop:
    return FaceCrop(b"png", 16, 0, SHA, [0.0, 0.0, 1.0, 1.0], [[0.0, 0.0]] * 5, 0.9, "v1")


def _reuse_check(store: GalleryStore, rng) -> None:
    ident, faces, _ = store.enroll("last", [new_face(rng, SHA)])
    assert store.delete_identity(ident.id)
    again, again_faces, _ = store.enroll("next", [new_face(rng, SHA)])
    assert again.id > ident.id and again_faces[0].id > faces[0].id
    feedback = FeedbackStore(store)
    probe = feedback.keep_probes([(_crop(), "unknown", None, None)], 60)[0]
    with store.sessions() as s, s.begin():
        s.execute(delete(Probe))
    assert feedback.keep_probes([(_crop(), "unknown", None, None)], 60)[0] > probe
    report = feedback.add("nobody", _crop(), None)
    assert feedback.delete(report.id)
    assert feedback.add("nobody", _crop(), None).id > report.id


def test_a_new_gallery_never_reuses_ids(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    migrate(engine)
    _reuse_check(GalleryStore(engine), np.random.default_rng(0))
    engine.dispose()


def test_a_gallery_from_before_the_migration_keeps_its_rows_and_stops_reusing_ids(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # the schema as main had it (revision 0005), with a gallery in it
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.exec_driver_sql("INSERT INTO gallery_state (id, generation, rebuild_generation) VALUES (1, 0, 0)")
    store = GalleryStore(engine)
    rng = np.random.default_rng(1)
    OutboxEvent.__table__.create(engine)  # today's enroll also writes its event (0009); gone before migrating
    with engine.begin() as conn:  # and reads identities.cover_face_id (0011); gone before migrating too
        conn.exec_driver_sql("ALTER TABLE identities ADD COLUMN cover_face_id INTEGER")
    for label in ("ann", "bob", "cy"):
        store.enroll(label, [new_face(rng, SHA), new_face(rng, SHA)])
    OutboxEvent.__table__.drop(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE identities DROP COLUMN cover_face_id")
    with store.sessions() as s:
        before = [s.scalar(select(func.count()).select_from(t)) for t in (Identity, Face, Embedding, Template)]
    assert before == [3, 6, 6, 3]
    migrate(engine)
    with store.sessions() as s:
        assert [s.scalar(select(func.count()).select_from(t)) for t in (Identity, Face, Embedding, Template)] == before
        for table in ("identities", "faces", "probes", "feedback"):
            sql = s.execute(text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}).scalar()
            assert "AUTOINCREMENT" in sql, sql
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    _reuse_check(store, rng)
    assert store.delete_identity(1)  # cascades still work after the rebuild
    with store.sessions() as s:
        assert s.scalar(select(func.count(Face.id)).where(Face.identity_id == 1)) == 0
    engine.dispose()
