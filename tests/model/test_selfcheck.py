"""The gallery's own choice between plain and cohort-normalised scores (`model.selfcheck`) against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from model.calibration.tail import ImpostorTail
from model.selfcheck import SELF_CHECK_MIN_MATED, cohort_fits, leave_one_out, mean_fnir, misfit, self_check
from tests.model.test_duplicates import people


@pytest.mark.parametrize("scoring", ["template", "face"])
def test_leave_one_out_matches_brute_force(scoring):
    rng = np.random.default_rng(0)
    emb, labels = people(rng, 7, 3, dim=16, spread=0.4)
    emb, labels = emb[:-2], labels[:-2]  # the last identity keeps one face: no mated search
    own, best, mated = leave_one_out(emb, labels, scoring, exclude=[(0, 1)])

    def score(f, rows):
        if scoring == "template":
            t = emb[rows].sum(0)
            return float(emb[f] @ t / np.linalg.norm(t))
        return float((emb[rows] @ emb[f]).max())

    for f in range(len(emb)):
        rest = [i for i in range(len(emb)) if labels[i] == labels[f] and i != f]
        assert mated[f] == bool(rest)
        if rest:
            assert own[f] == pytest.approx(score(f, rest), abs=1e-5)
        skip = {0: 1, 1: 0}.get(int(labels[f]))
        others = [score(f, np.flatnonzero(labels == o)) for o in np.unique(labels) if o != labels[f] and o != skip]
        assert best[f] == pytest.approx(max(others), abs=1e-5)


def test_mean_fnir_matches_brute_force():
    rng = np.random.default_rng(1)
    own, best = rng.normal(0.6, 0.1, 400), rng.normal(0.2, 0.1, 400)
    mated = rng.random(400) < 0.5
    fpirs = (0.01, 0.1)
    want = []
    for f in fpirs:
        s = np.sort(best)[::-1]
        thr = np.nextafter(s[int(f * len(s))], np.inf)
        assert np.mean(best >= thr) <= f
        want.append(np.mean([not (o > b and o >= thr) for o, b, m in zip(own, best, mated) if m]))
    assert mean_fnir(own, best, mated, fpirs) == pytest.approx(np.mean(want))


def test_self_check_prefers_what_separates_the_gallerys_own_searches_and_abstains_when_small():
    rng = np.random.default_rng(2)
    emb, labels = people(rng, 300, 2, dim=24, spread=0.3)
    # a shift that tracks each face's best stranger score helps; noise does not
    own, best, mated = leave_one_out(emb, labels)
    helpful = 0.8 * best
    good = self_check(emb, labels, helpful)
    assert good.normalise is True and good.fnir_normalised < good.fnir_plain
    bad = self_check(emb, labels, rng.normal(0, 0.3, len(emb)))
    assert bad.normalise is False
    few = labels < (SELF_CHECK_MIN_MATED // 2 - 1)
    assert self_check(emb[few], labels[few], helpful[few]).normalise is None


def test_cohort_fits_compares_the_two_misfits():
    rng = np.random.default_rng(3)
    prior = ImpostorTail.from_scores(rng.normal(0, 0.1, 200_000))
    same = ImpostorTail.from_scores(rng.normal(0, 0.1, 50_000))
    shifted = ImpostorTail.from_scores(rng.normal(0.1, 0.1, 50_000))  # scores well above the calibration
    assert misfit(prior, same) == pytest.approx(1.0, rel=0.3)
    assert misfit(prior, shifted) > 5
    assert cohort_fits(prior, prior, same, same)[0] is True
    assert cohort_fits(prior, prior, same, shifted)[0] is False   # only the normalised pairs are off
    assert cohort_fits(prior, prior, shifted, shifted)[0] is True  # both off alike: the domain, not the cohort
    assert cohort_fits(prior, prior, None, same)[0] is None
