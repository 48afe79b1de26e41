"""The operating-point derivation against brute-force simulation on synthetic score distributions."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from model.calibration.operating_point import operating_point
from model.calibration.pairs import pick_identities, search_impostor_scores
from model.calibration.tail import CalibrationError, ImpostorTail, fpir_at, per_comparison_rate


def simulated_fpir(rng, draw, threshold: float, n_compared: int, probes: int = 20_000) -> float:
    """Brute force: `probes` strangers, each compared with `n_compared` impostor scores; share whose best clears."""
    hits = 0
    for start in range(0, probes, 2000):
        m = min(2000, probes - start)
        hits += int((draw(rng, (m, n_compared)).max(axis=1) >= threshold).sum())
    return hits / probes


def normal(mu, sigma):
    return lambda rng, shape: rng.normal(mu, sigma, shape).astype(np.float32)


def gumbelish(rng, shape):  # a heavier right tail than the normal
    return (0.05 + 0.06 * rng.gumbel(size=shape)).astype(np.float32)


DRAWS = {"normal": normal(0.1, 0.1), "heavy-tail": gumbelish}


@functools.lru_cache(maxsize=None)  # 5 M draws, the same for every n_compared; an ImpostorTail is frozen
def synthetic_tail(name: str) -> ImpostorTail:
    return ImpostorTail.from_scores(DRAWS[name](np.random.default_rng(0), 5_000_000), source="synthetic")


@pytest.mark.parametrize("name", ["normal", "heavy-tail"])
@pytest.mark.parametrize("n_compared", [1, 10, 100, 1000])
def test_threshold_holds_target_fpir_in_simulation(name, n_compared):
    draw, tail = DRAWS[name], synthetic_tail(name)
    op = operating_point(tail, 0.01, n_compared)
    assert op.source == "calibrated" and not op.extrapolated
    fpir = simulated_fpir(np.random.default_rng(1), draw, op.threshold, n_compared)
    # 20,000 probes at FPIR 0.01: binomial sd 0.0007; interpolation between tail points adds a little
    assert 0.0075 <= fpir <= 0.013, (n_compared, op.threshold, fpir)
    assert math.isclose(fpir_at(tail, op.threshold, n_compared), 0.01, rel_tol=0.05)


def test_threshold_grows_with_the_gallery():
    tail = ImpostorTail.from_scores(np.random.default_rng(0).normal(0, 0.1, 2_000_000))
    thresholds = [operating_point(tail, 0.01, n).threshold for n in (1, 10, 100, 1000, 10_000)]
    assert all(a < b for a, b in zip(thresholds, thresholds[1:])), thresholds


def test_per_comparison_rate_matches_definition():
    for n in (1, 7, 1000, 10**6):
        p = per_comparison_rate(0.01, n)
        assert math.isclose(-math.expm1(n * math.log1p(-p)), 0.01, rel_tol=1e-9)


def test_tail_points_count_the_pairs_beyond_them():
    scores = np.arange(1_000_000, dtype=np.float64) / 1_000_000  # uniform on [0, 1)
    tail = ImpostorTail.from_scores(scores)
    for p, t, k in tail.points:
        assert k == int(p * 1_000_000) and k >= 10
        assert abs((scores >= t).mean() - p) <= 2e-6
    assert tail.deepest_p == pytest.approx(1e-5)  # 10 pairs beyond: the last supported level
    assert tail.supports(1e-5) and not tail.supports(1e-6)


def test_extrapolation_below_the_deepest_point_is_flagged_and_monotone():
    tail = ImpostorTail.from_scores(np.random.default_rng(0).normal(0, 0.1, 100_000))
    shallow = operating_point(tail, 0.01, 10)
    deep = operating_point(tail, 0.01, 100_000)
    assert not shallow.extrapolated and deep.extrapolated and deep.threshold > shallow.threshold
    assert any("extrapolated" in w for w in deep.warnings)
    assert tail.score_at(1e-8) > tail.score_at(1e-7) > tail.score_at(tail.deepest_p)


def test_round_trip_and_malformed_tails_are_refused():
    tail = ImpostorTail.from_scores(np.random.default_rng(0).normal(0, 0.1, 100_000), source="x")
    again = ImpostorTail.from_dict(tail.to_dict())
    assert again.points == tuple((p, round(t, 6), k) for p, t, k in tail.points)
    bad = tail.to_dict()
    bad["points"][2][1] = float("inf")
    with pytest.raises(CalibrationError):
        ImpostorTail.from_dict(bad)
    with pytest.raises(CalibrationError):
        ImpostorTail.from_dict({"n_pairs": 10, "points": []})
    with pytest.raises(CalibrationError):
        ImpostorTail.from_dict({"points": "nope"})


@functools.lru_cache(maxsize=None)
def _prior_at_n01():
    rng = np.random.default_rng(0)
    return ImpostorTail.from_scores(rng.normal(0.1, 0.1, 5_000_000)), rng.bit_generator.state


def prior_at_n01() -> tuple[ImpostorTail, np.random.Generator]:
    """The model's tail from 5 M scores of N(0.1, 0.1) drawn from seed 0, and that generator where the draw left
    it: the same numbers as drawing both in the test, the 5 M drawn once for all tests."""
    prior, state = _prior_at_n01()
    rng = np.random.default_rng(0)
    rng.bit_generator.state = state
    return prior, rng


@pytest.mark.parametrize("n_gallery_pairs", [3_000, 500_000])
def test_a_shifted_gallery_moves_the_operating_point_to_its_own_domain(n_gallery_pairs):
    """The prior says impostors sit at N(0.1, 0.1); the deployment's cameras put them at N(0.25, 0.12).
    With the gallery's own pairs the served FPIR lands near the target; with the prior alone it does not."""
    prior, rng = prior_at_n01()
    domain = normal(0.25, 0.12)
    gallery = ImpostorTail.from_scores(domain(rng, n_gallery_pairs))
    n = 100
    alone = operating_point(prior, 0.01, n)
    both = operating_point(prior, 0.01, n, gallery)
    assert both.threshold > alone.threshold and both.warnings
    fpir_alone = simulated_fpir(np.random.default_rng(2), domain, alone.threshold, n, 5000)
    fpir_both = simulated_fpir(np.random.default_rng(2), domain, both.threshold, n, 20_000)
    assert fpir_alone > 0.5
    assert 0.005 <= fpir_both <= 0.02, (both, fpir_both)


def test_a_gallery_like_the_prior_does_not_move_the_operating_point():
    prior, rng = prior_at_n01()
    gallery = ImpostorTail.from_scores(rng.normal(0.1, 0.1, 200_000))
    alone, both = operating_point(prior, 0.01, 1000), operating_point(prior, 0.01, 1000, gallery)
    assert not both.warnings
    assert fpir_at(prior, both.threshold, 1000) >= 0.5 * 0.01


def test_gallery_search_impostor_scores_brute_force():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.permutation(np.repeat(np.arange(13), [4, 1, 3, 2, 5, 4, 3, 1, 2, 4, 3, 4, 4]))
    people = {lab: emb[labels == lab] for lab in np.unique(labels)}

    def template(v):
        m = v.astype(np.float64).sum(0)
        return m / np.linalg.norm(m)

    for scoring, score in (("template", lambda f, v: float(f @ template(v))), ("face", lambda f, v: float((v @ f).max()))):
        want = sorted(score(emb[i], people[lab]) for i in range(40) for lab in people if lab != labels[i])
        got = search_impostor_scores(emb, labels, scoring)
        assert len(got) == 40 * 12
        np.testing.assert_allclose(np.sort(got), want, atol=1e-5)
    # one face per identity: every different-identity pair, both ways
    single = search_impostor_scores(emb[:6], np.arange(6))
    np.testing.assert_allclose(np.sort(single), sorted(float(emb[i] @ emb[j]) for i in range(6) for j in range(6) if i != j),
                               atol=1e-6)
    assert len(search_impostor_scores(emb[:3], [7, 7, 7])) == 0


def test_pick_identities_keeps_identities_whole():
    labels = np.repeat(np.arange(100), np.arange(100) % 4 + 1)
    rows = pick_identities(labels, 60, seed=3)
    assert 0 < len(rows) <= 60
    picked = set(labels[rows].tolist())
    assert all((labels[rows] == lab).sum() == (labels == lab).sum() for lab in picked)
    assert len(pick_identities(labels, 10_000)) == len(labels)
    assert len(pick_identities(np.array([5, 5, 5, 5]), 2)) == 4  # at least one identity, even if larger
    giant = np.r_[np.zeros(2000, int), np.arange(1, 501)]  # one identity of 2,000 faces, 500 of one face
    for seed in range(5):
        rows = pick_identities(giant, 600, seed)
        assert 500 <= len(rows) <= 600 and len(set(giant[rows].tolist())) >= 500



def _units(rng, n, d=16):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_cohort_shift_is_the_weighted_mean_of_the_best_centroid_scores():
    from model.calibration.cohort import Cohort

    rng = np.random.default_rng(0)
    c, x = _units(rng, 12), _units(rng, 50)
    cohort = Cohort(c, top=3, weight=0.4)
    want = [0.4 * np.mean(sorted((c @ v).tolist(), reverse=True)[:3]) for v in x]
    np.testing.assert_allclose(cohort.shift(x), want, atol=1e-6)
    assert cohort.shift(np.zeros((0, 16), np.float32)).shape == (0,)


def test_cohort_round_trip_and_malformed_cohorts_are_refused():
    from model.calibration.cohort import Cohort

    rng = np.random.default_rng(1)
    cohort = Cohort.build(_units(rng, 400), k=16, source="synthetic")
    back = Cohort.from_dict(cohort.to_dict())
    assert back.centroids.shape == cohort.centroids.shape and back.top == cohort.top
    x = _units(np.random.default_rng(9), 20)
    np.testing.assert_allclose(back.shift(x), cohort.shift(x), atol=2e-3)  # stored as float16
    assert back.reference_shift == pytest.approx(cohort.reference_shift, abs=1e-6)
    for broken in ({}, {**cohort.to_dict(), "shape": [3, 3]}, {**cohort.to_dict(), "weight": float("nan")},
                   {**cohort.to_dict(), "top": 0}):
        with pytest.raises(CalibrationError):
            Cohort.from_dict(broken)


def test_cohort_build_keeps_only_centroids_of_several_people():
    from model.calibration.cohort import COHORT_MIN_MEMBERS, Cohort

    rng = np.random.default_rng(2)
    x = np.concatenate([_units(rng, 300), _units(rng, 1) * np.ones((1, 1), np.float32)])
    cohort = Cohort.build(x, k=40)
    members = np.bincount((x @ cohort.centroids.T).argmax(1), minlength=len(cohort.centroids))
    assert len(cohort.centroids) <= 40 and members.min() >= COHORT_MIN_MEMBERS
    assert np.allclose(np.linalg.norm(cohort.centroids, axis=1), 1, atol=1e-5)
    assert cohort.reference_shift == pytest.approx(float(np.median(cohort.shift(x))))
    with pytest.raises(ValueError):  # embeddings of another size are refused, not reshaped
        cohort.shift(np.ones((3, 32), np.float32))


def test_cohort_people_are_one_image_people_chosen_by_seed():
    from model.calibration.cohort import cohort_people

    labels = [f"m{i // 3}" for i in range(60)] + [f"s{i}" for i in range(40)]
    got = cohort_people(labels, n=10)
    assert len(got) == 10 and all(x.startswith("s") for x in got)
    assert cohort_people(list(reversed(labels)), n=10) == got          # order of the labels does not matter
    assert cohort_people(labels, n=100) == {f"s{i}" for i in range(40)}


def test_normalised_scores_brute_force():
    """The normalised tail's pairs (every ordered different-label pair, less the probe's shift) and a
    gallery's normalised search scores, against loops."""
    from model.calibration.cohort import Cohort
    from model.calibration.pairs import normalised_pair_scores

    rng = np.random.default_rng(3)
    x, labels = _units(rng, 30), np.repeat(np.arange(12), [1, 2, 3, 4, 5, 1, 2, 3, 4, 2, 2, 1])
    cohort = Cohort(_units(rng, 8), top=2, weight=0.5)
    sh = cohort.shift(x)
    want = sorted(float(x[i] @ x[j]) - sh[i] for i in range(30) for j in range(30) if labels[i] != labels[j])
    np.testing.assert_allclose(sorted(normalised_pair_scores(x, labels, cohort, block=7)), want, atol=1e-5)
    np.testing.assert_allclose(sorted(search_impostor_scores(x, labels, "template", sh)),
                               sorted(search_impostor_scores(x, labels, "template")
                                      - np.repeat(sh, len(np.unique(labels)) - 1)), atol=1e-5)
