"""The vector index against a brute-force float64 oracle on small random galleries."""
from __future__ import annotations

import numpy as np
import pytest

from app.gallery.search.memory import MemoryVersionSearch


def unit(rng, n, d=512):
    v = rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("n_faces,n_people,top_k", [(50, 50, 5), (300, 7, 5), (300, 3, 5), (1000, 200, 10)])
def test_search_equals_brute_force(n_faces, n_people, top_k):
    """scoring="face": each identity by its best face."""
    rng = np.random.default_rng(n_faces + n_people)
    vecs = unit(rng, n_faces)
    people = rng.integers(1, n_people + 1, n_faces)
    idx = MemoryVersionSearch("v", scoring="face")
    half = n_faces // 2  # two appends, as incremental refreshes do
    for sl in (slice(0, half), slice(half, n_faces)):
        ids = np.arange(n_faces)[sl] + 1
        idx.add(ids, ids, people[sl], [f"p{p}" for p in people[sl]], vecs[sl])
    queries = unit(rng, 4)
    for q, got in zip(queries, idx.search(queries, top_k)):
        scores = vecs.astype(np.float64) @ q
        best = {}
        for j in np.argsort(-scores):
            best.setdefault(int(people[j]), j)
        want = list(best.items())[:top_k]
        assert [m.identity_id for m in got] == [p for p, _ in want]
        assert [m.face_id for m in got] == [int(j) + 1 for _, j in want]
        assert np.allclose([m.score for m in got], [scores[j] for _, j in want], atol=2e-3)
        assert got[0].label == f"p{got[0].identity_id}"
    assert abs(idx.scores_for_identity(queries[0], int(people[0])) -
               max(float(vecs[j] @ queries[0]) for j in np.nonzero(people == people[0])[0])) < 2e-3


@pytest.mark.parametrize("n_faces,n_people,top_k", [(50, 50, 5), (300, 7, 5), (1000, 200, 10)])
def test_template_search_equals_brute_force(n_faces, n_people, top_k):
    """scoring="template" (the default): each identity by its normalised mean face; face_id is its best face."""
    rng = np.random.default_rng(n_faces * n_people)
    vecs = unit(rng, n_faces)
    people = rng.integers(1, n_people + 1, n_faces)
    idx = MemoryVersionSearch("v")
    half = n_faces // 2
    for sl in (slice(0, half), slice(half, n_faces)):
        ids = np.arange(n_faces)[sl] + 1
        idx.add(ids, ids, people[sl], [f"p{p}" for p in people[sl]], vecs[sl])
    assert idx.identities == len(np.unique(people))
    queries = unit(rng, 4)
    templates = {}
    for p in np.unique(people):
        m = vecs[people == p].astype(np.float64).sum(0)
        templates[int(p)] = m / np.linalg.norm(m)
    for q, got in zip(queries, idx.search(queries, top_k)):
        want = sorted(templates, key=lambda p: -(templates[p] @ q))[:top_k]
        assert [m.identity_id for m in got] == want
        assert np.allclose([m.score for m in got], [templates[p] @ q for p in want], atol=1e-5)
        for m in got:
            rows = np.nonzero(people == m.identity_id)[0]
            assert m.face_id == int(rows[np.argmax(vecs[rows] @ q)]) + 1
    p0 = int(people[0])
    assert abs(idx.scores_for_identity(queries[0], p0) - templates[p0] @ queries[0]) < 1e-5
    assert idx.scores_for_identity(queries[0], 10**6) is None


def test_empty_index():
    assert MemoryVersionSearch("v").search(np.zeros((2, 512), np.float32), 5) == [[], []]


@pytest.mark.parametrize("scoring", ["template", "face"])
def test_scores_never_leave_minus_one_to_one(scoring):
    """A probe that is (a rounding away from) an enrolled vector scores at most 1, never 1.0000001."""
    v = unit(np.random.default_rng(5), 3)
    idx = MemoryVersionSearch("v", scoring=scoring)
    idx.add(np.arange(1, 4), np.arange(1, 4), np.array([1, 1, 2]), ["a", "a", "b"], v)
    got = idx.search(np.stack([v[2] * 1.001, -v[2] * 1.001]), 2)
    assert got[0][0].label == "b" and got[0][0].score == 1.0
    assert all(-1.0 <= m.score <= 1.0 for r in got for m in r)
