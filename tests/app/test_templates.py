"""Identity templates stay the normalised mean of their faces' embeddings through every gallery write."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from app.gallery.store import GalleryStore, NewFace, make_engine, migrate
from model.templates import template_of
from tests.app.conftest import copied_store


def unit(rng, n=1, dim=16):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def new_face(rng, versions=("v1",)):
    return NewFace(crop=np.zeros((8, 8, 3), np.uint8), crop_margin=0, source_sha256="0" * 64, box=[0, 0, 1, 1],
                   landmarks=[[0, 0]] * 5, detection_score=0.99, embeddings={v: unit(rng)[0] for v in versions})


@pytest.fixture
def store(migrated_db, tmp_path):
    with copied_store(migrated_db, tmp_path) as s:
        yield s


def expected_templates(store: GalleryStore, version: str) -> dict[int, tuple[np.ndarray, int]]:
    _, _, iids, _, mat = store.vectors(version)
    return {int(i): (template_of(mat[iids == i]), int((iids == i).sum())) for i in np.unique(iids)}


def assert_consistent(store: GalleryStore, versions=("v1",)):
    for v in versions:
        got, want = store.templates(v), expected_templates(store, v)
        assert set(got) == set(want)
        for i, (vec, n) in want.items():
            assert got[i][1] == n
            np.testing.assert_allclose(got[i][0], vec, atol=1e-6)
            assert abs(np.linalg.norm(got[i][0]) - 1) < 1e-5


def test_templates_follow_enroll_delete_and_reembedding(store):
    rng = np.random.default_rng(0)
    a, rows_a, _ = store.enroll("a", [new_face(rng), new_face(rng)])
    b, rows_b, _ = store.enroll("b", [new_face(rng)])
    store.enroll("a", [new_face(rng)])  # a third face for a
    assert_consistent(store)
    assert store.templates("v1")[a.id][1] == 3

    assert store.delete_face(rows_a[0].id)
    assert_consistent(store)
    assert store.templates("v1")[a.id][1] == 2

    # a hot swap: every face gets a v2 embedding, templates of v2 appear; then v1 is pruned
    faces = [fid for fid, _ in next(store.faces_missing("v2"))]
    store.add_embeddings("v2", {fid: unit(rng)[0] for fid in faces})
    assert_consistent(store, ("v1", "v2"))
    store.prune_versions({"v2"})
    assert store.templates("v1") == {}
    assert_consistent(store, ("v2",))

    assert store.delete_identity(a.id)
    assert set(store.templates("v2")) == {b.id}
    assert store.delete_face(rows_b[0].id)  # b's last face: the identity and its template go
    assert store.templates("v2") == {}
    with store.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM templates")).scalar() == 0


def test_migration_builds_templates_for_an_existing_gallery(tmp_path):
    """A gallery enrolled before templates existed gets them when it is upgraded."""
    from alembic import command
    from alembic.config import Config

    from app.gallery.store import MIGRATIONS

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    rng = np.random.default_rng(1)
    vecs = unit(rng, 3)
    with engine.begin() as c:
        c.execute(text("INSERT INTO gallery_state (id, generation, rebuild_generation) VALUES (1, 0, 0)"))
        c.execute(text("INSERT INTO identities (id, label, created_at, updated_at) VALUES (1, 'x', '2026-01-01', '2026-01-01')"))
        for fid, v in enumerate(vecs, 1):
            c.execute(text("INSERT INTO faces (id, identity_id, crop_png, crop_size, crop_margin, source_sha256, box, "
                           "landmarks, detection_score, created_at) VALUES (:id, 1, x'00', 8, 0, '0', '[]', '[]', 1, "
                           "'2026-01-01')"), {"id": fid})
            c.execute(text("INSERT INTO embeddings (face_id, model_version, vector, created_at) "
                           "VALUES (:f, 'v1', :v, '2026-01-01')"), {"f": fid, "v": v.astype('<f4').tobytes()})
    migrate(engine)
    got = GalleryStore(engine).templates("v1")
    np.testing.assert_allclose(got[1][0], template_of(vecs), atol=1e-6)
    assert got[1][1] == 3
    engine.dispose()


def test_merge_makes_one_template_of_both_identities(store):
    rng = np.random.default_rng(2)
    a, _, _ = store.enroll("a", [new_face(rng), new_face(rng)])
    b, _, _ = store.enroll("b", [new_face(rng)])
    assert store.merge(a.id, b.id) is not None
    assert set(store.templates("v1")) == {a.id} and store.templates("v1")[a.id][1] == 3
    assert_consistent(store)
