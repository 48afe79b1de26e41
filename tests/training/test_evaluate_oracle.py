"""training/evaluate.py against brute force on tiny inputs (ties included): ROC points, TAR at FAR and its
threshold, the accuracy-maximising threshold, and the 10-fold protocol."""
from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import accuracy, best_threshold, kfold_accuracy, roc, tar_at_far, verification_report


def tiny(seed: int, n: int | None = None):
    """Scores on a coarse grid (so ties happen) with both same and different pairs."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(2, 14))
    scores = np.round(rng.uniform(-1, 1, n), 1)
    issame = rng.random(n) < 0.5
    issame[0], issame[-1] = True, False
    return scores, issame


def rates(scores, issame, t):
    """(FAR, TAR) accepting score >= t, counted pair by pair."""
    fa = sum(1 for s, y in zip(scores, issame) if not y and s >= t)
    ta = sum(1 for s, y in zip(scores, issame) if y and s >= t)
    return fa / sum(1 for y in issame if not y), ta / sum(1 for y in issame if y)


def brute_accuracy(scores, issame, t):
    return sum(1 for s, y in zip(scores, issame) if (s >= t) == y) / len(scores)


SEEDS = range(15)


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_points_equal_counting(seed):
    scores, issame = tiny(seed)
    far, tar, thr = roc(scores, issame)
    assert list(thr) == [np.inf] + sorted(set(scores.tolist()), reverse=True)
    for f, t, th in zip(far, tar, thr):
        assert (f, t) == pytest.approx(rates(scores, issame, th))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_tar_at_far_equals_the_lowest_threshold_within_the_far(seed, target):
    scores, issame = tiny(seed)
    candidates = [np.inf] + sorted(set(scores.tolist()))
    feasible = [t for t in candidates if rates(scores, issame, t)[0] <= target + 1e-12]
    t_star = min(feasible)  # the lowest threshold whose FAR is still within the target: the most TAR
    tar, thr = tar_at_far(scores, issame, target)
    assert thr == t_star
    assert tar == pytest.approx(rates(scores, issame, t_star)[1])
    assert tar == pytest.approx(max(rates(scores, issame, t)[1] for t in feasible))


@pytest.mark.parametrize("seed", SEEDS)
def test_best_threshold_reaches_the_best_accuracy_of_any_threshold(seed):
    scores, issame = tiny(seed)
    u = sorted(set(scores.tolist()))
    every_cut = [u[0] - 1] + [(a + b) / 2 for a, b in zip(u, u[1:])] + [u[-1] + 1]  # one per distinct outcome
    best = max(brute_accuracy(scores, issame, t) for t in every_cut)
    thr, acc = best_threshold(scores, issame)
    assert acc == pytest.approx(best)
    assert accuracy(scores, issame, thr) == pytest.approx(acc) == pytest.approx(brute_accuracy(scores, issame, thr))


@pytest.mark.parametrize("seed", range(10))
def test_kfold_accuracy_equals_the_protocol_by_hand(seed):
    rng = np.random.default_rng(100 + seed)
    n_folds = 3
    scores, issame = tiny(seed, n=24)
    folds = rng.permutation(np.repeat(np.arange(n_folds), 8))
    out = kfold_accuracy(scores, issame, folds)
    expected = []
    for f in range(n_folds):
        train, test = folds != f, folds == f
        thr, train_acc = best_threshold(scores[train], issame[train])
        # the chosen threshold is optimal on the training folds (by brute force) ...
        s, y = scores[train], issame[train]
        u = sorted(set(s.tolist()))
        cuts = [u[0] - 1] + [(a + b) / 2 for a, b in zip(u, u[1:])] + [u[-1] + 1]
        assert brute_accuracy(s, y, thr) == pytest.approx(max(brute_accuracy(s, y, t) for t in cuts))
        # ... and scored on the held-out fold
        expected.append(brute_accuracy(scores[test], issame[test], thr))
    assert out["fold_accuracies"] == [round(a, 4) for a in expected]
    assert out["accuracy_mean"] == pytest.approx(np.mean(expected))
    assert out["accuracy_std"] == pytest.approx(np.std(expected))


def test_perfectly_separated_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.0, -0.2])
    issame = np.array([True, True, True, False, False, False])
    assert tar_at_far(scores, issame, 0.0) == (1.0, 0.7)
    thr, acc = best_threshold(scores, issame)
    assert acc == 1.0 and 0.1 < thr <= 0.7
    report = verification_report(scores, issame)
    assert report["auc"] == pytest.approx(1.0) and report["best_accuracy"] == 1.0
    assert report["tar_at_far_0.001"] == 1.0 and report["threshold_at_far_0.001"] == 0.7


def test_all_scores_tied():
    scores, issame = np.zeros(6), np.array([True, False] * 3)
    far, tar, thr = roc(scores, issame)
    assert list(far) == [0.0, 1.0] and list(tar) == [0.0, 1.0] and list(thr) == [np.inf, 0.0]
    assert tar_at_far(scores, issame, 0.5) == (0.0, np.inf)  # nothing can be accepted below FAR 1
    assert best_threshold(scores, issame)[1] == 0.5


@pytest.mark.parametrize("far", [1e-3, 1e-2, 0.004, 0.05])
def test_calibrate_serves_any_target_far(far):
    """Issue 15's bug: only FAR 1e-3 and 1e-2 had a threshold (any other --target-far raised KeyError after the
    whole training run). The 1:1 threshold at any FAR is the impostor score exceeded by that share of pairs."""
    from training.evaluate import calibrate

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [f"p{i // 3}" for i in range(300)]
    out = calibrate(emb, labels, "synthetic", far)
    same = np.array([[a == b for b in labels] for a in labels])
    iu = np.triu_indices(300, k=1)
    impostors = (emb @ emb.T)[iu][~same[iu]]
    assert abs(np.mean(impostors >= out["cosine"]) - far) <= 0.1 * far + 1e-4


def test_calibration_without_enough_one_image_people_says_why_it_has_no_cohort():
    """A reference set without MIN_COHORT_PEOPLE one-image people gives no cohort (searches then use plain
    scores); the checkpoint's calibration note says so rather than leaving it out silently."""
    from training.evaluate import MIN_COHORT_PEOPLE, calibrate

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [f"p{i // 3}" for i in range(150)] + [f"single{i}" for i in range(150)]  # 150 one-image people
    out = calibrate(emb, labels, "synthetic")
    assert "normalised" not in out
    assert f"150 people with one image, {MIN_COHORT_PEOPLE} needed" in out["calibration"]
