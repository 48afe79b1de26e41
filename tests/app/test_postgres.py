"""PostgreSQL + pgvector beside SQLite, without the model: migrations on both, pgvector search against the
in-memory index (itself checked against brute force in test_index.py), and the LISTEN/NOTIFY change feed."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from app.gallery.search.memory import MemoryVersionSearch
from app.gallery.notify import NotifyChanges
from app.gallery.search.pgvector import PgVectorSearch, index_name
from app.gallery.store import MIGRATIONS, GalleryStore, NewFace, make_engine, migrate
from harness import database_url


def unit(rng, n, d=512):
    v = rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def new_face(vectors: dict) -> NewFace:
    return NewFace(crop=np.zeros((8, 8, 3), np.uint8), crop_margin=32, source_sha256="0" * 64, box=[0, 0, 8, 8],
                   landmarks=[[0, 0]] * 5, detection_score=0.99, embeddings=vectors)


def alembic(engine, *steps):
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        for fn, rev in steps:
            fn(cfg, rev)


def test_migrations_reach_head_on_both_databases_and_are_idempotent(gallery_db):
    engine = make_engine(database_url(gallery_db))
    migrate(engine)
    migrate(engine)  # a second replica starting
    with engine.connect() as conn:
        heads = conn.scalars(text("select version_num from alembic_version")).all()
        cols = {c["name"]: c["type"] for c in inspect(conn).get_columns("embeddings")}
    assert len(heads) == 1
    assert type(cols["vector"]).__name__ == ("VECTOR" if engine.dialect.name == "postgresql" else "BLOB")
    store = GalleryStore(engine)
    v = unit(np.random.default_rng(0), 1)[0]
    store.enroll("a", [new_face({"m1": v})])
    assert np.array_equal(store.vectors("m1")[4][0], v)  # float32 exactly, on both
    engine.dispose()


def test_postgres_migration_converts_stored_vectors_both_ways(postgres):
    engine = make_engine(postgres.create_database())
    alembic(engine, (command.upgrade, "0002"))
    v = unit(np.random.default_rng(1), 1)[0]
    with engine.begin() as conn:
        conn.execute(text("insert into gallery_state (id, generation, rebuild_generation) values (1, 0, 0)"))
        conn.execute(text("insert into identities (id, label, created_at, updated_at) values (1, 'a', now(), now())"))
        conn.execute(text("insert into faces (id, identity_id, crop_png, crop_size, crop_margin, source_sha256, box, "
                          "landmarks, detection_score, created_at) values (1, 1, '', 8, 0, '', '[]', '[]', 1, now())"))
        conn.execute(text("insert into embeddings (face_id, model_version, vector, created_at) "
                          "values (1, 'm1', :v, now())"), {"v": v.astype("<f4").tobytes()})
    migrate(engine)
    assert np.array_equal(GalleryStore(engine).vectors("m1")[4][0], v)
    alembic(engine, (command.downgrade, "0002"))
    with engine.connect() as conn:
        assert conn.scalar(text("select vector from embeddings")) == v.astype("<f4").tobytes()
    engine.dispose()


@pytest.fixture(scope="module")
def pg_gallery(postgres):
    """300 faces of 40 people (random unit vectors) under model version m1, enrolled through the store."""
    rng = np.random.default_rng(7)
    vecs, people = unit(rng, 300), rng.integers(1, 41, 300)
    engine = make_engine(postgres.create_database())
    migrate(engine)
    store = GalleryStore(engine)
    for v, p in zip(vecs, people):
        store.enroll(f"p{p}", [new_face({"m1": v})])
    memory = MemoryVersionSearch("m1", scoring="face")
    memory.add(*store.vectors("m1"))
    changes = NotifyChanges(engine)
    yield store, memory, changes
    changes.close()
    engine.dispose()


@pytest.mark.parametrize("exact_below", [10_000, 0], ids=["exact", "hnsw"])
def test_pgvector_face_scoring_equals_the_in_memory_index(pg_gallery, exact_below):
    store, memory, changes = pg_gallery
    pgi = PgVectorSearch(store, changes, scoring="face", ef_search=1000, exact_below=exact_below).version("m1", 512)
    queries = unit(np.random.default_rng(3), 6)
    for top_k in (1, 5, 40):
        got, want = pgi.search(queries, top_k), memory.search(queries, top_k)
        assert [[(m.identity_id, m.face_id, m.label) for m in r] for r in got] == \
               [[(m.identity_id, m.face_id, m.label) for m in r] for r in want]
        assert np.allclose([m.score for r in got for m in r], [m.score for r in want for m in r], atol=2e-3)
    assert len(pgi) == len(memory) == 300
    assert pgi.identities == memory.identities
    iid = got[0][0].identity_id
    assert abs(pgi.scores_for_identity(queries[0], iid) - memory.scores_for_identity(queries[0], iid)) < 2e-3
    assert pgi.scores_for_identity(queries[0], 10**6) is None
    vectors, ids = pgi.sample(50, seed=1)  # whole identities, at most 50 faces (the gallery's self-calibration)
    assert 0 < len(vectors) <= 50 and vectors.shape[1] == 512 and len(set(ids.tolist())) > 1
    all_ids = memory._state.ident_ids[:300]
    assert all((ids == i).sum() == (all_ids == i).sum() for i in set(ids.tolist()))


@pytest.mark.parametrize("exact_below", [10_000, 0], ids=["exact", "hnsw"])
def test_pgvector_template_scoring_equals_brute_force(pg_gallery, exact_below):
    """Identities scored by their template (normalised mean of their faces), each with its best face."""
    store, _, changes = pg_gallery
    pgi = PgVectorSearch(store, changes, scoring="template", ef_search=1000, exact_below=exact_below).version("m1", 512)
    templates = store.templates("m1")
    ids = np.array(sorted(templates))
    mat = np.stack([templates[i][0] for i in ids]).astype(np.float64)
    _, fids, iids, _, faces = store.vectors("m1")
    queries = unit(np.random.default_rng(4), 6)
    for q, got in zip(queries, pgi.search(queries, 5)):
        scores = mat @ q
        want = ids[np.argsort(-scores)[:5]]
        assert [m.identity_id for m in got] == want.tolist()
        assert np.allclose([m.score for m in got], np.sort(scores)[::-1][:5], atol=1e-5)
        for m in got:  # the face shown is the identity's best face
            mine = iids == m.identity_id
            assert m.face_id == int(fids[mine][np.argmax(faces[mine] @ q)])
    assert pgi.identities == len(ids)
    assert abs(pgi.scores_for_identity(queries[0], int(ids[0])) - float(mat[0] @ queries[0])) < 1e-5
    assert PgVectorSearch(store, changes, scoring="template").version("other", 512).search(queries[:1], 5) == [[]]


def test_hnsw_index_is_per_version_and_used_by_the_planner(pg_gallery):
    store, _, changes = pg_gallery
    pgi = PgVectorSearch(store, changes)
    pgi.version("m1", 512)
    pgi.version("m2", 512)
    q = str(unit(np.random.default_rng(0), 1)[0].tolist())
    with store.engine.connect() as conn:
        names = set(conn.scalars(text("select indexname from pg_indexes where tablename = 'embeddings'")))
        assert {index_name("m1"), index_name("m2")} <= names
        conn.execute(text("set enable_sort = off"))  # 300 rows: make the planner show the ordered index scan
        plan = "\n".join(conn.scalars(text(
            "explain select face_id from embeddings where model_version = :v "
            "order by vector::halfvec(512) <=> cast(:q as halfvec(512)) limit 10"), {"v": "m1", "q": q}))
    assert index_name("m1") in plan
    pgi.drop_indexes({"m1"})
    with store.engine.connect() as conn:
        names = set(conn.scalars(text("select indexname from pg_indexes where tablename = 'embeddings'")))
    assert index_name("m1") in names and index_name("m2") not in names


def test_reindex_rebuilds_the_serving_versions_index_and_leaves_the_others(pg_gallery):
    """POST /admin/reindex: the serving version's HNSW index is rebuilt concurrently (it stays usable meanwhile:
    REINDEX CONCURRENTLY, never a drop), and another version's index (a swap candidate's) is left alone. Its
    searches answer the same before and after."""
    store, _, changes = pg_gallery
    pgi = PgVectorSearch(store, changes, exact_below=0, ef_search=1000)
    pgi.version("m1", 512)
    pgi.version("cand", 512)  # a swap candidate's index (no rows: still an index)

    def files():
        with store.engine.connect() as conn:
            return dict(conn.execute(text("select c.relname, c.relfilenode from pg_class c join pg_index i on i.indexrelid = "
                                          "c.oid where i.indisvalid and c.relname like 'ix_embeddings_hnsw_%'")).all())

    queries = unit(np.random.default_rng(9), 3)
    before, answers = files(), pgi.version("m1", 512).search(queries, 5)
    pgi.reindex("m1", 512)
    after = files()
    assert set(after) == set(before) == {index_name("m1"), index_name("cand")}
    assert after[index_name("m1")] != before[index_name("m1")]  # rebuilt: new files
    assert after[index_name("cand")] == before[index_name("cand")]  # untouched
    assert pgi.version("m1", 512).search(queries, 5) == answers


@pytest.mark.parametrize("scoring", ["face", "template"])
def test_the_search_statement_itself_uses_the_hnsw_index(pg_gallery, scoring):
    """The statement a search sends (query cast server-side to the index's halfvec expression), not a
    hand-written copy of it, is planned as an ordered scan of the version's HNSW index."""
    store, _, changes = pg_gallery
    pgi = PgVectorSearch(store, changes, scoring=scoring, exact_below=0)
    pgi.version("m1", 512)
    compiled = pgi.statement("m1", 512, scoring, exact=False).compile(dialect=store.engine.dialect)
    params = {**compiled.params, "q": str(unit(np.random.default_rng(0), 1)[0].tolist()), "limit": 10}
    with store.engine.connect() as conn:
        conn.execute(text("set enable_sort = off"))  # 300 rows: make the planner show the ordered index scan
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("explain " + str(compiled), params))
    assert index_name("m1", "templates" if scoring == "template" else "embeddings") in plan


def test_hnsw_settings_are_sent_once_per_connection_and_follow_the_configured_ef(pg_gallery):
    store, _, changes = pg_gallery
    pgi = PgVectorSearch(store, changes, ef_search=123)
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        pgi.configure(conn, 40)
        assert conn.scalar(text("show hnsw.ef_search")) == "123"
        assert conn.scalar(text("show hnsw.iterative_scan")) == "relaxed_order"
        conn.execute(text("set hnsw.ef_search = 7"))  # not through configure: the record says 123 still
        pgi.configure(conn, 40)
        assert conn.scalar(text("show hnsw.ef_search")) == "7"  # nothing sent when unchanged
        pgi.configure(conn, 500)  # a walk further down than ef_search widens the list for that query
        assert conn.scalar(text("show hnsw.ef_search")) == "500"
        pgi.ef_search = 200
        pgi.configure(conn, 40)
        assert conn.scalar(text("show hnsw.ef_search")) == "200"
        conn.invalidate()  # a new server session (as after an outage) has no settings and no record
        conn.rollback()
        conn.execution_options(isolation_level="AUTOCOMMIT")
        assert conn.scalar(text("select current_setting('hnsw.ef_search', true)")) is None  # not loaded yet
        pgi.configure(conn, 40)
        assert conn.scalar(text("show hnsw.ef_search")) == "200"


def test_change_feed_announces_commits_and_catches_up_after_a_lost_connection(postgres):
    engine = make_engine(postgres.create_database())
    migrate(engine)
    store = GalleryStore(engine)
    changes = NotifyChanges(engine)
    v = unit(np.random.default_rng(2), 3)

    async def until(condition, what: str):
        async def loop():
            token = changes.token()
            while not condition():
                token = await changes.wait(token)
        try:
            await asyncio.wait_for(loop(), 30)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def scenario():
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 1)
        await until(lambda: changes.generation == 0 and changes.connects == 1, "the listener")
        await asyncio.to_thread(store.enroll, "a", [new_face({"m1": v[0]})])
        await until(lambda: changes.generation == 1, "the enrollment's notification")
        # cut the listener's connection, as a network failure or a database restart would
        with engine.begin() as conn:
            killed = conn.scalar(text("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                      "where application_name like 'faceid-listen-%' and datname = current_database()"))
        assert killed == 1
        await asyncio.to_thread(store.enroll, "b", [new_face({"m1": v[1]})])
        await until(lambda: changes.connects == 2 and changes.generation == 2, "reconnection and catch-up")
        await asyncio.to_thread(store.rename, 1, "c")
        await until(lambda: changes.generation == 3, "the rename's notification")

    try:
        asyncio.run(scenario())
    finally:
        changes.close()
        engine.dispose()


def test_a_change_announced_between_two_waits_is_not_lost(postgres):
    """The follower takes a token, reads the gallery, then waits: a NOTIFY that arrives while it reads (nobody
    waiting at that moment) must still end the wait."""
    engine = make_engine(postgres.create_database())
    migrate(engine)
    store = GalleryStore(engine)
    changes = NotifyChanges(engine)
    try:
        deadline = time.monotonic() + 30
        while changes.connects < 1 and time.monotonic() < deadline:  # the listener is up
            time.sleep(0.05)
        token = changes.token()
        store.enroll("a", [new_face({"m1": unit(np.random.default_rng(3), 1)[0]})])
        while changes.generation != 1 and time.monotonic() < deadline:  # delivered, while nobody waits
            time.sleep(0.05)
        assert changes.generation == 1
        asyncio.run(asyncio.wait_for(changes.wait(token), 2))  # returns at once: the change came after the token
    finally:
        changes.close()
        engine.dispose()


def test_copy_tool_sqlite_to_postgres_and_back_verifies_bit_for_bit(tmp_path, postgres, capsys):
    from app.gallery import copy

    rng = np.random.default_rng(5)
    src = f"sqlite:///{tmp_path / 'src.db'}"
    engine = make_engine(src)
    migrate(engine)
    store = GalleryStore(engine)
    vecs = unit(rng, 30)
    for i, v in enumerate(vecs):
        store.enroll(f"p{i % 7}", [new_face({"m1": v, "m2": vecs[::-1][i]})])
    store.delete_face(3)  # ids with a gap
    store.set_serving("casia-webface", "m1")
    engine.dispose()
    pg = postgres.create_database()
    assert copy.main([src, pg]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["copied"]["faces"] == 29 and report["copied"]["embeddings"] == 58
    assert report["vectors_compared"]["embeddings"] == 58
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert copy.main([pg, back]) == 0
    capsys.readouterr()
    a, b, p = (GalleryStore(make_engine(u)) for u in (src, back, pg))
    for store in (b, p):
        assert store.serving() == ("casia-webface", "m1") and store.counts() == a.counts()
        for got, want in zip(store.vectors("m2"), a.vectors("m2")):
            assert np.array_equal(np.asarray(got), np.asarray(want))
    ident, faces, _ = p.enroll("new", [new_face({"m1": vecs[0]})])  # sequences moved past the copied ids
    assert faces[0].id == 31 and ident.label == "new"


def test_copy_tool_refuses_a_non_empty_destination(tmp_path):
    from app.gallery import copy

    url = f"sqlite:///{tmp_path / 'g.db'}"
    engine = make_engine(url)
    migrate(engine)
    GalleryStore(engine).enroll("a", [new_face({"m1": unit(np.random.default_rng(0), 1)[0]})])
    engine.dispose()
    with pytest.raises(SystemExit, match="not empty"):
        copy.main([url, url])
