"""Clustering unit face embeddings into people: average linkage with a same-person threshold, in batch and online.

For unit vectors the mean cosine similarity between the members of two clusters is the dot product of their mean
vectors (sum_a . sum_b / (n_a n_b)), so average linkage needs only each cluster's sum and size. Two clusters merge
when their mean pairwise similarity reaches `threshold`; a cluster whose members score below it on average with
every other cluster stays apart. Average linkage is reducible, so merging every pair of mutual nearest clusters
in rounds gives the sequential algorithm's result; and two clusters can only ever merge when some pair of their
faces reaches the threshold (the maximum is at least the mean), so the work splits into the connected components
of the graph of face pairs at or above it.

`OnlineClusters` is the one-face-at-a-time step: a new face joins the cluster whose members it scores highest
with on average, when that mean reaches the threshold (the same criterion as a merge with a one-face cluster),
else it starts its own.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def pairs_at_least(vectors: np.ndarray, threshold: float, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of rows whose dot product is at least `threshold` (blocked, exact; a block of scores
    holds at most 2**25 of them)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    block = block or max(16, 2**25 // max(len(v), 1))
    rows, cols = [], []
    for start in range(0, len(v), block):
        sims = v[start:start + block] @ v[start:].T
        i, j = np.nonzero(sims >= threshold)
        j = j + start
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(cols)


def _average_linkage_component(sums: np.ndarray, counts: np.ndarray, threshold: float,
                               threshold_for=None) -> np.ndarray:
    """Merge groups (their vector sums and sizes) by average linkage down to `threshold` (or, for two clusters of
    sizes a and b, `threshold_for(a, b)`); each group's final cluster number (0..k-1)."""
    m = len(sums)
    owner = np.arange(m)          # group -> current cluster (a cluster keeps the index of one of its groups)
    alive = np.arange(m)          # indices of the clusters still standing
    s, c = sums.astype(np.float64).copy(), counts.astype(np.float64).copy()
    while len(alive) > 1:
        means = s[alive] / c[alive, None]
        sims = means @ means.T
        np.fill_diagonal(sims, -np.inf)
        best = np.argmax(sims, axis=1)
        val = sims[np.arange(len(alive)), best]
        need = threshold if threshold_for is None else threshold_for(c[alive], c[alive][best])
        mutual = (best[best] == np.arange(len(alive))) & (val >= need) & (np.arange(len(alive)) < best)
        if not mutual.any():
            break
        a, b = alive[np.nonzero(mutual)[0]], alive[best[mutual]]
        s[a] += s[b]
        c[a] += c[b]
        for x, y in zip(a, b):
            owner[owner == y] = x
        alive = np.setdiff1d(alive, b, assume_unique=True)
    _, labels = np.unique(owner, return_inverse=True)
    return labels


def average_linkage(vectors: np.ndarray, threshold: float, groups: np.ndarray | None = None,
                    threshold_for=None) -> np.ndarray:
    """Cluster unit `vectors` by average linkage, stopping where the best mean pairwise similarity between
    clusters falls below `threshold`. `groups` (one integer per row, -1: none) are clusters to start from, kept
    together (e.g. clusters a person dismissed). `threshold_for(sizes_a, sizes_b)` (arrays), at least `threshold`
    everywhere, asks more of some merges (the clusters then merge in the mutual-nearest rounds as long as their mean
    reaches it). Returns a cluster number per row, 0..k-1."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, np.int64)
    v = np.asarray(vectors, dtype=np.float32)
    start = np.arange(n) if groups is None else _initial(np.asarray(groups))
    n_start = int(start.max()) + 1
    sums = np.zeros((n_start, v.shape[1]), np.float64)
    np.add.at(sums, start, v)
    counts = np.bincount(start, minlength=n_start).astype(np.float64)
    # components of the graph of face pairs >= threshold, plus the starting groups' own links
    i, j = pairs_at_least(v, threshold)
    graph = coo_matrix((np.ones(len(i)), (start[i], start[j])), shape=(n_start, n_start))
    _, comp = connected_components(graph, directed=False)
    out = np.empty(n_start, np.int64)
    next_label = 0
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    for members in np.split(order, bounds):
        if len(members) == 1:
            out[members] = next_label
            next_label += 1
            continue
        local = _average_linkage_component(sums[members], counts[members], threshold, threshold_for)
        out[members] = local + next_label
        next_label += int(local.max()) + 1
    return out[start]


def _initial(groups: np.ndarray) -> np.ndarray:
    """Starting cluster per row: rows sharing a non-negative group together, every other row alone."""
    out = np.empty(len(groups), np.int64)
    grouped = groups >= 0
    _, inv = np.unique(groups[grouped], return_inverse=True)
    out[grouped] = inv
    k = int(inv.max()) + 1 if len(inv) else 0
    out[~grouped] = np.arange(k, k + int((~grouped).sum()))
    return out


class OnlineClusters:
    """Clusters as sums and sizes, one face at a time: `assign(vector)` returns the cluster it joins (its mean
    similarity to that cluster's members is the highest and at least the threshold) or None (it starts its own:
    `add(key, vector)`)."""

    def __init__(self, threshold: float, dim: int = 512):
        self.threshold = float(threshold)
        self.keys: list = []
        self._sums = np.zeros((64, dim), np.float32)   # rows past len(keys) are spare capacity
        self._counts = np.zeros(64, np.float32)
        self._row: dict = {}

    def __len__(self) -> int:
        return len(self.keys)

    def best(self, vector: np.ndarray) -> tuple[object | None, float]:
        """(cluster key, mean similarity) of the cluster `vector` scores highest with; (None, -inf) when none."""
        n = len(self.keys)
        if not n:
            return None, float("-inf")
        sims = (self._sums[:n] @ np.asarray(vector, np.float32)) / np.maximum(self._counts[:n], 1.0)
        i = int(np.argmax(sims))
        return self.keys[i], float(sims[i])

    def assign(self, vector: np.ndarray):
        key, sim = self.best(vector)
        return key if key is not None and sim >= self.threshold else None

    def add(self, key, vector: np.ndarray, count: float = 1.0) -> None:
        """Add `vector` (one face, or the sum of `count` faces) to cluster `key` (created when new)."""
        v = np.asarray(vector, np.float32)
        i = self._row.get(key)
        if i is None:
            i = self._row[key] = len(self.keys)
            self.keys.append(key)
            if i == len(self._counts):
                self._sums = np.vstack([self._sums, np.zeros_like(self._sums)])
                self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
            self._sums[i], self._counts[i] = 0.0, 0.0
        self._sums[i] += v
        self._counts[i] += count

    def remove(self, key) -> None:
        i = self._row.pop(key, None)
        if i is None:
            return
        last = len(self.keys) - 1
        if i != last:  # the last cluster takes the removed one's row
            self._sums[i], self._counts[i] = self._sums[last], self._counts[last]
            self.keys[i] = self.keys[last]
            self._row[self.keys[i]] = i
        self.keys.pop()
