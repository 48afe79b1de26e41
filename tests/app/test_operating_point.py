"""The service's operating point on a real SQLite gallery (synthetic vectors, no weights): the gallery's
own impostor tail against brute force, and kept current through enroll, delete and a model swap."""
from __future__ import annotations

import functools
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from app.gallery.store import GalleryStore
from app.services.operating_point import OperatingPoints, calibration_problem, operating_point_public, tail_of
from app.gallery.search.memory import MemorySearch
from model.calibration.tail import ImpostorTail
from tests.app.test_templates import new_face, store, unit  # noqa: F401 - `store`: the same SQLite fixture

DIM = 16


@functools.lru_cache(maxsize=None)  # 800,000 draws each; an ImpostorTail is frozen, so tests can share one
def prior(seed=0) -> ImpostorTail:
    """An impostor tail for random 16-d unit vectors (what the synthetic gallery's strangers look like)."""
    rng = np.random.default_rng(seed)
    a, b = unit(rng, 400_000, DIM), unit(rng, 400_000, DIM)
    return ImpostorTail.from_scores(np.sum(a * b, axis=1), source="synthetic")


def embedder(version="v1", tail=None):
    return SimpleNamespace(version=version, thresholds={"cosine": 0.5, **({"impostor_tail": tail.to_dict()} if tail else {})},
                           preprocessing=SimpleNamespace(embedding_size=DIM))


def brute_force_tail(store: GalleryStore, version: str) -> ImpostorTail:
    """Each stored face against the stored template of every other identity (what a stranger's search meets)."""
    _, _, iids, _, mat = store.vectors(version)
    templates = {iid: t for iid, (t, _) in store.templates(version).items()}
    assert set(templates) == set(iids.tolist())
    scores = [float(mat[i] @ t) for i in range(len(mat)) for iid, t in templates.items() if iid != iids[i]]
    return ImpostorTail.from_scores(np.array(scores))


def enroll_people(store, rng, n_people, per_person, prefix="p", versions=("v1",)):
    return [store.enroll(f"{prefix}{i}", [new_face(rng, versions) for _ in range(per_person)])
            for i in range(n_people)]


def assert_tail_equal(got: ImpostorTail, want: ImpostorTail):
    assert got.n_pairs == want.n_pairs
    assert [p for p, _, _ in got.points] == [p for p, _, _ in want.points]
    # the index holds float16 vectors: scores within ~1e-3 of float32
    np.testing.assert_allclose([t for _, t, _ in got.points], [t for _, t, _ in want.points], atol=2e-3)


def test_gallery_tail_matches_brute_force_through_enroll_delete_and_swap(store):
    rng = np.random.default_rng(0)
    ops = OperatingPoints(target_fpir=0.01, target_far=1e-3, override=None, default=0.5)
    live = MemorySearch(store)
    people = enroll_people(store, rng, 30, 3)
    emb = embedder("v1", prior())
    assert_tail_equal(ops.gallery_tail("v1", live.version("v1", DIM)), brute_force_tail(store, "v1"))
    first = ops.for_search(emb, live.version("v1", DIM))
    assert first.n_compared == 30 and first.gallery_threshold is not None

    # enroll: 10 more people; delete: one face and one whole identity
    enroll_people(store, rng, 10, 2, prefix="q")
    store.delete_face(people[0][1][0].id)
    store.delete_identity(people[1][0].id)
    idx = live.version("v1", DIM)
    assert idx.identities == 39
    assert_tail_equal(ops.gallery_tail("v1", idx), brute_force_tail(store, "v1"))
    assert ops.for_search(emb, idx).n_compared == 39

    # a swap: the new model's vectors get their own tail (and the old one's stays cached apart)
    missing = [fid for batch in store.faces_missing("v2") for fid, _ in batch]
    store.add_embeddings("v2", {fid: unit(rng, 1, DIM)[0] for fid in missing})
    idx2 = live.version("v2", DIM)
    assert_tail_equal(ops.gallery_tail("v2", idx2), brute_force_tail(store, "v2"))
    assert ops.for_search(embedder("v2", prior(1)), idx2).n_compared == 39


def test_precedence_request_then_override_then_calibrated(store):
    rng = np.random.default_rng(1)
    enroll_people(store, rng, 5, 1)
    idx = MemorySearch(store).version("v1", DIM)
    emb = embedder("v1", prior())
    ops = OperatingPoints(0.01, 1e-3, override=None, default=0.5)
    assert ops.for_search(emb, idx, 0.7).source == "request"
    assert OperatingPoints(0.01, 1e-3, override=0.66, default=0.5).for_search(emb, idx).threshold == 0.66
    cal = ops.for_search(emb, idx)
    assert cal.source == "calibrated"
    # 5 identities: FPIR 0.01 / 5 is looser than the verification FAR 1e-3, which then holds
    assert cal.per_comparison_rate == pytest.approx(1e-3)
    assert cal.threshold >= ops.for_verify(emb, idx).threshold - 1e-9
    legacy = ops.for_search(embedder("v1"), idx)
    assert legacy.source == "checkpoint" and legacy.threshold == 0.5 and legacy.warnings


def test_swap_calibration_check():
    tail = prior()
    ok = {"impostor_tail": tail.to_dict()}
    assert calibration_problem(ok, 0.01, 10) is None
    assert "no impostor-score tail" in calibration_problem({"cosine": 0.5}, 0.01, 10)
    assert "measures impostor rates only down to" in calibration_problem(ok, 0.01, 10_000_000)
    bad = tail.to_dict()
    bad["points"][0][1] = float("nan")
    assert "malformed" in calibration_problem({"impostor_tail": bad}, 0.01, 10)
    assert tail_of({}) is None


def join_refresh(version: str) -> None:
    """Wait for the background refresh of `version`'s gallery tail, if one runs."""
    for t in threading.enumerate():
        if t.name == f"gallery-tail-{version}":
            t.join(60)


def test_changes_refresh_the_gallery_tail_in_the_background(store, monkeypatch):
    import app.services.operating_point as op

    monkeypatch.setattr(op, "SYNC_BELOW_FACES", 50)  # this 80-face gallery counts as large
    rng = np.random.default_rng(2)
    ops = OperatingPoints(target_fpir=0.01, target_far=1e-3, override=None, default=0.5)
    live = MemorySearch(store)
    enroll_people(store, rng, 40, 2)
    first = ops.gallery_tail("v1", live.version("v1", DIM))
    enroll_people(store, rng, 1, 2, prefix="late")  # 2.5 %: the search does not wait for the new tail
    idx = live.version("v1", DIM)
    assert ops.gallery_tail("v1", idx) is first
    join_refresh("v1")
    assert_tail_equal(ops.gallery_tail("v1", idx), brute_force_tail(store, "v1"))
    before = ops.gallery_tail("v1", idx)
    enroll_people(store, rng, 10, 2, prefix="burst")  # 24 %: off the request path too
    idx = live.version("v1", DIM)
    assert ops.gallery_tail("v1", idx) is before
    join_refresh("v1")
    assert_tail_equal(ops.gallery_tail("v1", idx), brute_force_tail(store, "v1"))


@functools.lru_cache(maxsize=None)  # 9 M normalised pairs; both values are frozen
def cohort_calibration(seed: int):
    """20 synthetic centroids, and the normalised tail measured on random vectors the way training.evaluate
    measures it."""
    from model.calibration.cohort import Cohort
    from model.calibration.pairs import normalised_pair_scores

    rng = np.random.default_rng(seed)
    cohort = Cohort(unit(rng, 20, DIM), top=3, weight=0.5, reference_shift=0.1)
    ref = unit(rng, 3000, DIM)
    return cohort, ImpostorTail.from_scores(normalised_pair_scores(ref, np.arange(len(ref)), cohort))


def normalised_embedder(version="v1", seed=3):
    """A model whose calibration carries a cohort (`cohort_calibration`)."""
    from model.calibration.cohort import Cohort

    cohort, tail = cohort_calibration(seed)
    emb = embedder(version, prior())
    emb.thresholds["normalised"] = {"cohort": cohort.to_dict(), "impostor_tail": tail.to_dict(),
                                    "search_comparisons_factor": 0.8}
    return emb, Cohort.from_dict(cohort.to_dict())


def test_normalised_gallery_tail_matches_brute_force(store):
    """With a cohort, the gallery's tail is also measured on normalised scores: each face's scores against
    the other identities' templates, less that face's own cohort shift."""
    rng = np.random.default_rng(4)
    emb, cohort = normalised_embedder()
    ops = OperatingPoints(target_fpir=0.01, target_far=1e-3, override=None, default=0.5)
    live = MemorySearch(store)
    enroll_people(store, rng, 30, 2)
    idx = live.version("v1", DIM)
    op = ops.for_search(emb, idx)
    assert op.normalised and op.source == "calibrated" and op.gallery_threshold is not None
    _, _, iids, _, mat = store.vectors("v1")
    templates = {iid: t for iid, (t, _) in store.templates("v1").items()}
    shift = cohort.shift(mat)
    want = [float(mat[i] @ t) - shift[i] for i in range(len(mat)) for iid, t in templates.items() if iid != iids[i]]
    assert_tail_equal(ops.gallery_tail("v1", idx, cohort, normalised=True), ImpostorTail.from_scores(np.array(want)))
    # the plain tail (verification) is kept beside it, unchanged
    assert_tail_equal(ops.gallery_tail("v1", idx), brute_force_tail(store, "v1"))
    assert not ops.for_verify(emb, idx).normalised
    # each face's cosine threshold is the normalised one plus its own shift, never below verification's; the
    # reported one a typical face's
    assert op.floor == pytest.approx(ops.for_verify(emb, idx).threshold)
    for shift in (-0.5, 0.0, 0.1, 0.25, 0.6):
        assert op.threshold_for(shift) == pytest.approx(max(op.threshold + shift, op.floor))
    assert op.threshold_for(0.6) > op.floor and op.threshold_for(-0.5) == op.floor
    assert operating_point_public(op)["threshold"] == pytest.approx(max(op.threshold + 0.1, op.floor), abs=1e-4)
    assert operating_point_public(op)["normalisation"] == "cohort"


def test_fixed_thresholds_stay_plain_cosine_with_a_cohort(store):
    rng = np.random.default_rng(5)
    enroll_people(store, rng, 5, 1)
    idx = MemorySearch(store).version("v1", DIM)
    emb, _ = normalised_embedder()
    req = OperatingPoints(0.01, 1e-3, override=None, default=0.5).for_search(emb, idx, 0.7)
    over = OperatingPoints(0.01, 1e-3, override=0.66, default=0.5).for_search(emb, idx)
    assert (req.threshold, req.normalised, req.threshold_for(0.3)) == (0.7, False, 0.7)
    assert (over.threshold, over.normalised, over.threshold_for(0.3)) == (0.66, False, 0.66)


def test_swap_check_reads_the_normalised_calibration():
    emb, _ = normalised_embedder()
    assert calibration_problem(emb.thresholds, 0.01, 10) is None
    bad = {**emb.thresholds, "normalised": {**emb.thresholds["normalised"], "search_comparisons_factor": 3}}
    assert "normalised search_comparisons_factor" in calibration_problem(bad, 0.01, 10)
    broken = {**emb.thresholds, "normalised": {**emb.thresholds["normalised"], "cohort": {"shape": [2]}}}
    assert "malformed" in calibration_problem(broken, 0.01, 10)
    thin = {**emb.thresholds, "normalised": {**emb.thresholds["normalised"],
                                             "impostor_tail": ImpostorTail.from_scores(np.arange(500) / 500).to_dict()}}
    assert "normalised calibration measures" in calibration_problem(thin, 0.01, 50)


def test_verification_does_not_move_with_who_else_is_enrolled(store):
    """Below VERIFY_DOMAIN_MIN_IDENTITIES the 1:1 threshold is the model's, exactly; above, a domain whose faces
    score high against each other raises it, by at most VERIFY_MAX_DOMAIN_RISE, and says so."""
    from app.services.operating_point import VERIFY_DOMAIN_MIN_IDENTITIES, VERIFY_MAX_DOMAIN_RISE

    rng = np.random.default_rng(5)
    tail = prior()
    emb = embedder("v1", tail)
    ops = OperatingPoints(0.01, 1e-3, override=None, default=0.5)
    live = MemorySearch(store)
    # a crowded domain: every face close to one direction (strangers score high against each other)
    centre = unit(rng, 1, DIM)[0]

    def crowded(n):
        v = centre + 0.35 * rng.normal(size=(n, DIM))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    seen = set()
    for i in range(VERIFY_DOMAIN_MIN_IDENTITIES - 1):
        f = new_face(rng)
        f.embeddings["v1"] = crowded(1)[0]
        store.enroll(f"c{i}", [f])
        op = ops.for_verify(emb, live.version("v1", DIM))
        seen.add(op.threshold)
        assert op.domain_rise == 0.0
    assert len(seen) == 1 and seen.pop() == pytest.approx(tail.score_at(1e-3), abs=1e-6)
    f = new_face(rng)
    f.embeddings["v1"] = crowded(1)[0]
    store.enroll("last", [f])
    op = ops.for_verify(emb, live.version("v1", DIM))
    assert 0 < op.domain_rise <= VERIFY_MAX_DOMAIN_RISE
    assert op.threshold == pytest.approx(tail.score_at(1e-3) + op.domain_rise)
    assert operating_point_public(op)["domain_rise"] == round(op.domain_rise, 4)


def test_duplicate_identities_and_distinct_marks_in_the_gallery_tail(store):
    """Through the real store and index: a second label for the same faces is left out of the tail, unless the
    pair is marked as two people."""
    from app.gallery.duplicates import DistinctPairs
    from model.duplicates import duplicate_threshold

    rng = np.random.default_rng(6)
    tail = prior()
    distinct = DistinctPairs(store)
    ops = OperatingPoints(0.01, 1e-3, override=None, default=0.5, distinct_pairs=distinct.all)
    people = enroll_people(store, rng, 20, 2)
    twin = [new_face(rng) for _ in range(2)]
    for f, src in zip(twin, people[0][1]):
        f.embeddings["v1"] = store.templates("v1")[people[0][0].id][0] + 0.01 * rng.normal(size=DIM)
        f.embeddings["v1"] /= np.linalg.norm(f.embeddings["v1"])
    again = store.enroll("p0 again", twin)[0]
    live = MemorySearch(store)
    got = ops.gallery_tails("v1", live.version("v1", DIM), prior=tail)
    pair = tuple(sorted((people[0][0].id, again.id)))
    assert got.duplicates == (pair,) and got.same_person == pytest.approx(duplicate_threshold(tail, 21))
    assert got.tail.n_pairs == 42 * 20 - 4  # each face against the 20 other identities, less the twins' 4
    distinct.add(*pair)
    ops.forget_gallery()
    marked = ops.gallery_tails("v1", live.version("v1", DIM), prior=tail)
    assert marked.duplicates == () and marked.tail.n_pairs == 42 * 20
