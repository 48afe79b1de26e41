"""The store calls behind the person page and the gallery's search on both databases (migration 0011 on SQLite and
PostgreSQL): substring search (LIKE's wildcards taken literally), the sorts, the cover face and what clears it."""
from __future__ import annotations

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect

from app.gallery.store import GalleryStore, NotFound, make_engine, migrate
from harness import database_url
from tests.app.test_postgres import alembic, new_face, unit


@pytest.fixture
def store(gallery_db):
    engine = make_engine(database_url(gallery_db))
    migrate(engine)
    yield GalleryStore(engine)
    engine.dispose()


def test_search_sort_and_cover_on_both_databases(store):
    vecs = iter(unit(np.random.default_rng(3), 7))
    ada = store.enroll("Ada Lovelace", [new_face({"m1": next(vecs)}) for _ in range(2)])
    store.enroll("grace hopper", [new_face({"m1": next(vecs)})])
    alan = store.enroll("Alan 100%_Turing", [new_face({"m1": next(vecs)}) for _ in range(3)])

    def labels(**kw):
        return [i.label for i, _ in store.list_identities(0, 10, **kw)[0]]

    assert labels(contains="LOVE") == ["Ada Lovelace"]
    assert labels(contains="%_") == ["Alan 100%_Turing"] and labels(contains="_") == ["Alan 100%_Turing"]
    assert store.list_identities(0, 1, contains="a")[1] == 3
    assert labels(sort="label") == ["Ada Lovelace", "Alan 100%_Turing", "grace hopper"]
    assert labels(sort="faces") == ["Alan 100%_Turing", "Ada Lovelace", "grace hopper"]
    assert labels(sort="newest") == ["Alan 100%_Turing", "grace hopper", "Ada Lovelace"]

    a_id, (f1, f2), alan_face = ada[0].id, [f.id for f in ada[1]], alan[1][0].id
    assert store.set_cover(a_id, f2).cover_face_id == f2
    with pytest.raises(NotFound) as exc:
        store.set_cover(a_id, alan_face)
    assert exc.value.kind == "face"
    with pytest.raises(NotFound) as exc:
        store.set_cover(10**6, f1)
    assert exc.value.kind == "identity"
    assert store.get_identity(a_id).cover_face_id == f2
    store.move_face(f2, to_identity_id=alan[0].id)
    assert store.get_identity(a_id).cover_face_id is None
    store.set_cover(a_id, f1)
    store.enroll(None, [new_face({"m1": next(vecs)})], identity_id=a_id)
    store.delete_face(f1)
    assert store.get_identity(a_id).cover_face_id is None


def test_migration_0011_goes_down_and_up_keeping_every_face(store):
    ident, faces, _ = store.enroll("a", [new_face({"m1": unit(np.random.default_rng(4), 1)[0]})])
    store.set_cover(ident.id, faces[0].id)
    alembic(store.engine, (command.downgrade, "0010"))
    assert "cover_face_id" not in {c["name"] for c in inspect(store.engine).get_columns("identities")}
    assert store.face_count(ident.id) == 1  # dropping the column cascades nowhere
    migrate(store.engine)
    assert store.get_identity(ident.id).cover_face_id is None and store.face_count(ident.id) == 1
