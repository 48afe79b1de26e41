"""The store calls behind the person page and the gallery's search on both databases (migration 0011 on SQLite and
PostgreSQL): substring search (LIKE's wildcards taken literally), the sorts, the cover face and what clears it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from alembic import command
from sqlalchemy import delete, inspect, select, text, update

from app.gallery.models import Face, GalleryState, Identity
from app.gallery.store import GalleryStore, NotFound, make_engine, migrate
from harness import database_url
from tests.app.test_postgres import alembic, new_face, unit
from tests.app.test_routes import make_client


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


def _delete_in_flight(store, face_id: int, then):
    """Run `then()` in a thread while another connection holds what delete_face does before its commit (the
    write lock, the face deleted), until `then` waits on a lock or is done; then commit the delete."""
    t = threading.Thread(target=then)
    with store.engine.connect() as watch, store.engine.connect() as other, other.begin():
        other.execute(update(GalleryState).values(generation=GalleryState.generation + 1))
        other.execute(delete(Face).where(Face.id == face_id))
        t.start()
        while t.is_alive() and not watch.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")):
            watch.rollback()  # a fresh snapshot of the activity view
            time.sleep(0.01)
    t.join()


@pytest.mark.parametrize("gallery_db", ["postgres"], indirect=True)
def test_a_cover_set_while_its_face_is_deleted_does_not_outlive_the_face(store):
    """PostgreSQL reads what was committed when a statement began: a cover set while a delete of that face was in
    flight (the face gone, the cover already read) used to commit, pointing at a face that no longer exists. Every
    store write takes the gallery's write lock first, the cover too, so it waits and then finds no face (SQLite
    has one writer at a time anyway)."""
    vecs = iter(unit(np.random.default_rng(5), 3))
    ident, faces = store.enroll("Ada", [new_face({"m1": next(vecs)}) for _ in range(2)])[:2]
    a_id, f1 = ident.id, faces[0].id
    outcome = []

    def cover():
        try:
            outcome.append(store.set_cover(a_id, f1).cover_face_id)
        except NotFound as exc:
            outcome.append(exc.kind)

    _delete_in_flight(store, f1, cover)
    assert outcome == ["face"]
    assert store.get_identity(a_id).cover_face_id is None


@pytest.mark.parametrize("gallery_db", ["postgres"], indirect=True)
def test_a_rename_with_a_cover_whose_face_goes_meanwhile_changes_nothing(store, tmp_path):
    """PATCH {label, cover_face_id} is one transaction: the cover's face deleted between the check and the write
    used to answer 404 with the rename already committed."""
    vecs = iter(unit(np.random.default_rng(6), 2))
    ident, faces = store.enroll("Ada", [new_face({"m1": next(vecs)}) for _ in range(2)])[:2]
    client, service = make_client(store, tmp_path)
    answers = []
    try:
        _delete_in_flight(store, faces[0].id, lambda: answers.append(client.patch(
            f"/identities/{ident.id}", json={"label": "Ada L", "cover_face_id": faces[0].id})))
    finally:
        service.close()
    assert answers[0].status_code == 404 and answers[0].json()["error"]["code"] == "unknown_face"
    assert store.get_identity(ident.id).label == "Ada"


def test_migration_0011_goes_down_and_up_keeping_every_face(store):
    ident, faces, _ = store.enroll("a", [new_face({"m1": unit(np.random.default_rng(4), 1)[0]})])
    store.set_cover(ident.id, faces[0].id)
    alembic(store.engine, (command.downgrade, "0010"))
    assert "cover_face_id" not in {c["name"] for c in inspect(store.engine).get_columns("identities")}
    assert store.face_count(ident.id) == 1  # dropping the column cascades nowhere
    migrate(store.engine)
    assert store.get_identity(ident.id).cover_face_id is None and store.face_count(ident.id) == 1
