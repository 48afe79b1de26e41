"""Average linkage on unit vectors (model/clustering.py) against SciPy's average linkage on tiny inputs, and the
online step against its definition."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from model.clustering import OnlineClusters, average_linkage


def people(rng, n_people, per, dim=16, spread=0.35):
    centres = rng.normal(size=(n_people, dim))
    v = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(n_people * per, dim)) * np.sqrt(dim) / 4
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(n_people), per)


def same_partition(a, b) -> bool:
    pairs = {(x, y) for x, y in zip(a, b)}
    return len(pairs) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_average_linkage_matches_scipy(seed, threshold):
    rng = np.random.default_rng(seed)
    v, _ = people(rng, 5, int(rng.integers(1, 6)), spread=float(rng.uniform(0.2, 1.0)))
    ours = average_linkage(v, threshold)
    z = linkage(v.astype(np.float64), method="average", metric="cosine")
    theirs = fcluster(z, t=1 - threshold, criterion="distance")  # merges at distance <= 1 - threshold
    assert same_partition(ours, theirs), (ours, theirs)


def test_starting_groups_stay_together_and_nothing_reaches_across_a_low_threshold():
    rng = np.random.default_rng(0)
    v, truth = people(rng, 4, 5, spread=0.2)
    assert same_partition(average_linkage(v, 0.5), truth)
    groups = np.full(len(v), -1)
    groups[[0, 5]] = 7  # a person said these two belong together (faces of two different people)
    got = average_linkage(v, 0.999, groups)
    assert got[0] == got[5] and len(set(got)) == len(v) - 1
    assert len(set(average_linkage(v, 1.01))) == len(v)  # unreachable threshold: every face alone


def test_online_joins_the_best_cluster_at_the_threshold_only():
    rng = np.random.default_rng(1)
    v, truth = people(rng, 3, 6, spread=0.2)
    oc = OnlineClusters(0.5, dim=v.shape[1])
    got = []
    for x in v:
        key = oc.assign(x)
        if key is None:
            key = f"c{len(oc)}"
        oc.add(key, x)
        got.append(key)
    assert same_partition(got, truth)
    members = [i for i, k in enumerate(got) if k == got[0]]
    key, sim = oc.best(v[0])
    assert key == got[0] and sim == pytest.approx(float(np.mean(v[members] @ v[0])), abs=1e-5)
    oc.remove(got[0])
    assert got[0] not in oc.keys and oc.best(v[0])[1] < 0.5
    for i in range(200):  # past the initial capacity
        oc.add(("new", i), v[i % len(v)])
    assert len(oc) == 2 + 200


def test_threshold_for_asks_more_of_the_merges_it_names():
    rng = np.random.default_rng(3)
    v, truth = people(rng, 3, 6, spread=0.2)
    plain = average_linkage(v, 0.5)
    assert same_partition(plain, truth)
    same = average_linkage(v, 0.5, threshold_for=lambda a, b: np.full(len(a), 0.5))
    assert same_partition(same, plain)
    # only two single faces may merge: every cluster has at most 2 faces
    pairs_only = average_linkage(v, 0.5, threshold_for=lambda a, b: np.where(np.maximum(a, b) >= 2, 1.01, 0.5))
    assert np.bincount(pairs_only).max() == 2 and len(set(pairs_only)) < len(v)
