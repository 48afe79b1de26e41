"""benchmarks/clustering.py's metrics against their definitions on tiny inputs, and its baselines on obvious data."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.clustering import chinese_whispers, noise_alone, scaled, scores


def brute(truth, pred):
    n = len(truth)
    p = [sum(1 for j in range(n) if pred[j] == pred[i] and truth[j] == truth[i]) / sum(1 for j in range(n) if pred[j] == pred[i]) for i in range(n)]
    r = [sum(1 for j in range(n) if pred[j] == pred[i] and truth[j] == truth[i]) / sum(1 for j in range(n) if truth[j] == truth[i]) for i in range(n)]
    pairs = list(itertools.combinations(range(n), 2))
    pred_pairs = [(i, j) for i, j in pairs if pred[i] == pred[j]]
    good = [(i, j) for i, j in pred_pairs if truth[i] == truth[j]]
    return np.mean(p), np.mean(r), len(good) / len(pred_pairs) if pred_pairs else 1.0


@pytest.mark.parametrize("seed", range(20))
def test_scores_match_their_definitions(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, 12)
    pred = rng.integers(0, 5, 12)
    got = scores(truth, pred)
    bp, br, pp = brute(truth, pred)
    assert got["bcubed_precision"] == pytest.approx(bp, abs=1e-4)
    assert got["bcubed_recall"] == pytest.approx(br, abs=1e-4)
    assert got["pairwise_precision"] == pytest.approx(pp, abs=1e-4)
    assert got["unclustered_faces"] == sum(1 for x in pred if list(pred).count(x) == 1)


def test_baselines_on_obvious_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    v = np.repeat(centres, 5, axis=0) + 0.05 * rng.normal(size=(20, 32))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    truth = np.repeat(np.arange(4), 5)
    assert scores(truth, chinese_whispers(v, 0.8))["bcubed_f1"] == 1.0
    assert list(noise_alone(np.array([0, -1, 0, -1]))) == [0, 1, 0, 2]
    big = scaled(v, 50)
    assert big.shape == (50, 32) and np.allclose(big[20:40] @ big[20:40].T, v @ v.T, atol=1e-5)
