"""Suspected duplicates and the robust gallery tail (`model.duplicates`) against brute-force loops on tiny
inputs, and a simulation of what a few duplicate identities do to the gallery's tail with and without them."""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from model.calibration.operating_point import gallery_adjusted
from model.calibration.pairs import search_impostor_scores
from model.calibration.tail import ImpostorTail, per_comparison_rate
from model.duplicates import (
    DUPLICATE_FPIR,
    DUPLICATE_MAX_FAR,
    duplicate_pairs,
    duplicate_threshold,
    pair_key,
    robust_impostor_scores,
)
from model.templates import templates_of


def unit(rng, n, dim=8):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def people(rng, n_people, per_person, dim=8, spread=0.35):
    """Faces of `n_people` people: a random centre each, faces scattered around it."""
    centres = unit(rng, n_people, dim)
    emb, labels = [], []
    for i, c in enumerate(centres):
        f = c + spread * rng.normal(size=(per_person, dim))
        emb.append(f / np.linalg.norm(f, axis=1, keepdims=True))
        labels += [i] * per_person
    return np.concatenate(emb).astype(np.float32), np.array(labels)


def test_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    t = unit(rng, 40)
    want = sorted(((i, j, float(t[i] @ t[j])) for i, j in itertools.combinations(range(40), 2)
                   if t[i] @ t[j] >= 0.6), key=lambda x: -x[2])
    got = duplicate_pairs(t, 0.6, block=7)  # blocks that do not divide the rows
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
    np.testing.assert_allclose([s for *_, s in got], [s for *_, s in want], atol=1e-6)
    assert len(got) > 3


def test_threshold_is_strict_and_tightens_with_the_gallery():
    # scores of random 64-d unit pairs are about N(0, 1/64): drawn directly (38 M normals for 300,000 pairs cost
    # seconds and test the same formula)
    tail = ImpostorTail.from_scores(np.random.default_rng(1).normal(0.0, 0.125, 300_000))
    small, large = duplicate_threshold(tail, 5), duplicate_threshold(tail, 10_000)
    assert small == pytest.approx(tail.score_at(DUPLICATE_MAX_FAR))
    assert large == pytest.approx(tail.score_at(per_comparison_rate(DUPLICATE_FPIR, 9_999)))
    assert large > small


@pytest.mark.parametrize("scoring", ["template", "face"])
def test_robust_scores_match_brute_force(scoring):
    rng = np.random.default_rng(2)
    emb, labels = people(rng, 12, 3, dim=24)
    emb = np.concatenate([emb, emb[labels == 0][:2] + 0.01])  # identity 12: a near copy of identity 0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.r_[labels, [12, 12]]
    same = 0.8
    uniq, templates, inv = templates_of(emb, labels)
    dup = {pair_key(uniq[i], uniq[j]) for i, j, _ in duplicate_pairs(templates, same)}
    assert dup == {(0, 12)}
    want = []
    for f in range(len(emb)):
        for other in uniq:
            if other == labels[f] or pair_key(labels[f], other) in dup:
                continue
            mine = emb[labels == other]
            s = float(emb[f] @ templates[list(uniq).index(other)]) if scoring == "template" else float((mine @ emb[f]).max())
            want.append(min(s, same))
    got, _, found = robust_impostor_scores(emb, labels, scoring, same)
    np.testing.assert_allclose(np.sort(got), np.sort(want), atol=1e-5)
    assert set(found) == dup
    # said to be different people: the pair counts again (censored at the same-person threshold)
    kept, _, found = robust_impostor_scores(emb, labels, scoring, same, distinct={(0, 12)})
    assert found == [] and len(kept) == len(got) + 3 + 2  # identity 0's 3 faces and 12's 2, each against the other
    assert kept.max() <= same


def test_normalised_scores_are_censored_before_the_shift():
    rng = np.random.default_rng(3)
    emb, labels = people(rng, 6, 2, dim=32)
    shift = rng.uniform(0.0, 0.2, len(emb)).astype(np.float32)
    uniq, templates, inv = templates_of(emb, labels)
    others = np.array([emb[f] @ templates[j] for f in range(len(emb)) for j in range(len(uniq)) if j != inv[f]])
    same = float(np.quantile(others, 0.97))  # a few face-identity scores above it
    dup = {(i, j) for i, j, _ in duplicate_pairs(templates, same)}
    want_plain, want_norm = [], []
    for f in range(len(emb)):
        for j in range(len(uniq)):
            if j != inv[f] and pair_key(int(inv[f]), j) not in dup:
                s = min(float(emb[f] @ templates[j]), same)
                want_plain.append(s)
                want_norm.append(s - shift[f])
    plain, normalised, _ = robust_impostor_scores(emb, labels, "template", same, shift=shift)
    np.testing.assert_allclose(plain, want_plain, atol=1e-5)
    np.testing.assert_allclose(normalised, want_norm, atol=1e-5)
    assert (np.asarray(want_plain) == same).any()


@functools.lru_cache(maxsize=None)
def prior_32d() -> ImpostorTail:
    """The model's tail in the simulation below: 400,000 random 32-d unit pairs, drawn once for all its cases."""
    rng = np.random.default_rng(99)
    return ImpostorTail.from_scores(np.sum(unit(rng, 400_000, 32) * unit(rng, 400_000, 32), axis=1))


@pytest.mark.parametrize("n_people, seed", [(6, 4), (8, 6), (60, 4), (100, 4)])
def test_a_few_duplicates_cannot_move_the_robust_tail(n_people, seed):
    """Simulation: people with 3 faces each, then 3 of them enrolled again under other labels with 3 other faces.
    The de-duplicated tail, counted in identity pairs, gives the clean gallery's threshold (within 0.01); tiny
    galleries measure no quantile deep enough to move it at all. Counted as strangers, with every score taken
    as an independent pair (the rule before), the duplicates' pairs raise a small gallery's threshold."""
    rng = np.random.default_rng(seed)
    emb, labels = people(rng, n_people, 6, dim=32, spread=0.12)
    first, again = np.arange(len(emb)) % 6 < 3, np.arange(len(emb)) % 6 >= 3
    clean_e, clean_l = emb[first], labels[first]
    dup_rows = again & (labels < 3)
    dup_e, dup_l = np.concatenate([clean_e, emb[dup_rows]]), np.r_[clean_l, labels[dup_rows] + 1000]
    prior = prior_32d()
    same = duplicate_threshold(prior, n_people + 3)

    def thr(e, lab, robust):
        if not robust:
            return gallery_adjusted(prior, ImpostorTail.from_scores(search_impostor_scores(e, lab)), 1e-3)[0]
        k = len(np.unique(lab))
        tail = ImpostorTail.from_scores(robust_impostor_scores(e, lab, "template", same)[0])
        return gallery_adjusted(prior, tail.with_independent_pairs(k * (k - 1) // 2), 1e-3)[0]

    clean, robust = thr(clean_e, clean_l, True), thr(dup_e, dup_l, True)
    assert set(robust_impostor_scores(dup_e, dup_l, "template", same)[2]) == {(0, 1000), (1, 1001), (2, 1002)}
    if n_people < 10:
        assert clean is None and robust is None
        assert thr(dup_e, dup_l, False) > prior.score_at(1e-3) + 0.05
    else:
        assert abs(robust - clean) < 0.01
