"""The in-memory search follows the gallery's writes without reloading it: after random enrolls, renames,
deletes, moves and merges, its answers equal a brute-force search of what the database holds, and it loaded
the gallery from the database once."""
from __future__ import annotations

import numpy as np
import pytest

from app.gallery.search.memory import MemorySearch
from app.gallery.store import GalleryStore, NewFace, make_engine, migrate
from model.templates import template_of

DIM = 16


@pytest.fixture()
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    migrate(engine)
    yield GalleryStore(engine)
    engine.dispose()


def face(rng) -> NewFace:
    v = rng.standard_normal(DIM).astype(np.float32)
    return NewFace(crop=np.zeros((8, 8, 3), np.uint8), crop_margin=0, source_sha256="0" * 64, box=[0, 0, 8, 8],
                   landmarks=[[0, 0]] * 5, detection_score=0.99, embeddings={"v1": v / np.linalg.norm(v)})


def brute_force(store: GalleryStore, queries: np.ndarray, scoring: str, top_k: int):
    """What the database holds, searched the slow way: per query [(identity id, label, score)], best first."""
    _, fids, iids, labels, mat = store.vectors("v1")
    label_of = dict(zip(iids.tolist(), labels))
    out = []
    for q in queries:
        if scoring == "template":
            scores = {i: float(template_of(mat[iids == i]) @ q) for i in set(iids.tolist())}
        else:
            scores = {i: float((mat[iids == i] @ q).max()) for i in set(iids.tolist())}
        best = sorted(scores, key=lambda i: (-scores[i], i))[:top_k]
        out.append([(i, label_of[i], scores[i]) for i in best])
    return out


def check(search, store, rng, scoring):
    search.sync()
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    want = brute_force(store, queries, scoring, 4)
    got = search.search(queries, 4)
    for g, w in zip(got, want):
        assert [(m.identity_id, m.label) for m in g] == [(i, lab) for i, lab, _ in w]
        assert np.allclose([m.score for m in g], [s for _, _, s in w], atol=2e-3)
    assert search.identities == len(store.templates("v1"))
    assert len(search) == len(store.vectors("v1")[0])


@pytest.mark.parametrize("scoring", ["template", "face"])
def test_writes_are_followed_incrementally(store, scoring):
    rng = np.random.default_rng(7 if scoring == "template" else 8)
    search = MemorySearch(store, scoring).version("v1", DIM)
    people = []
    for p in range(12):
        ident, _, _ = store.enroll(f"p{p}", [face(rng) for _ in range(rng.integers(1, 4))])
        people.append(ident.id)
    check(search, store, rng, scoring)
    for step in range(40):
        live = sorted(store.labels(people))
        op = rng.integers(0, 6)
        if op == 0 or len(live) < 3:
            ident, _, _ = store.enroll(f"new{step}", [face(rng)])
            people.append(ident.id)
        elif op == 1:
            store.rename(int(rng.choice(live)), f"renamed{step}")
        elif op == 2:
            store.delete_identity(int(rng.choice(live)))
        elif op == 3:
            faces = store.get_identity(int(rng.choice(live))).faces
            store.delete_face(faces[int(rng.integers(len(faces)))].id)
        elif op == 4:
            a, b = rng.choice(live, 2, replace=False)
            store.merge(int(a), int(b))
        else:
            faces = store.get_identity(int(rng.choice(live))).faces
            store.move_face(faces[0].id, to_identity_id=int(rng.choice(live)))
        check(search, store, rng, scoring)
    assert search.reloads == 1  # loaded once; every later write was applied to the identities it touched


def test_many_tombstones_are_compacted_with_the_same_answers(store, monkeypatch):
    import app.gallery.search.memory as memory

    monkeypatch.setattr(memory, "COMPACT_MIN_DEAD", 8)
    rng = np.random.default_rng(3)
    search = MemorySearch(store).version("v1", DIM)
    ids = [store.enroll(f"p{p}", [face(rng), face(rng)])[0].id for p in range(40)]
    search.sync()
    compactions, state = 0, search._state
    for i in ids[:30]:  # each rename reloads the identity: its old rows become tombstones
        store.rename(i, f"q{i}")
        check(search, store, rng, "template")
        compactions += search._state is not state
        state = search._state
    st = search._state
    assert compactions >= 2 and st.dead <= max(8, st.n // 4) and st.t_dead <= max(8, st.t_n // 4)
    assert search.reloads == 1


def test_a_process_behind_the_change_log_reloads_everything(store, monkeypatch):
    import app.gallery.store as store_module

    rng = np.random.default_rng(4)
    search = MemorySearch(store).version("v1", DIM)
    a = store.enroll("a", [face(rng)])[0].id
    search.sync()
    monkeypatch.setattr(store_module, "CHANGE_LOG_GENERATIONS", 1)
    store.rename(a, "b")
    store.enroll("c", [face(rng)])
    store.enroll("d", [face(rng)])
    check(search, store, rng, "template")
    assert search.reloads == 2
