"""In-memory exact vector index (a cache of the database), behind one small interface.

`VectorIndex.search` returns, per query, the best-scoring faces grouped by identity. A larger engine
(FAISS, pgvector...) can replace it by implementing the same methods.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Match:
    identity_id: int
    label: str
    face_id: int
    score: float


class VectorIndex:
    """Exact cosine search over unit vectors of one model version. Appends are cheap; reads are lock-free."""

    def __init__(self, version: str, dim: int = 512):
        self.version = version
        self.dim = dim
        self._lock = threading.Lock()
        self._cap = 0
        self._n = 0
        self._mat = np.zeros((0, dim), np.float32)
        self._emb_ids = np.zeros(0, np.int64)
        self._face_ids = np.zeros(0, np.int64)
        self._ident_ids = np.zeros(0, np.int64)
        self._labels: dict[int, str] = {}
        self.last_embedding_id = 0
        self.generation = -1

    def __len__(self) -> int:
        return self._n

    def add(self, emb_ids, face_ids, ident_ids, labels, mat: np.ndarray) -> None:
        if len(emb_ids) == 0:
            return
        with self._lock:
            n_new = self._n + len(emb_ids)
            if n_new > self._cap:  # grow geometrically; searches keep reading the old arrays meanwhile
                cap = max(n_new, int(self._cap * 1.5) + 1024)
                grow = lambda a, shape, dt: np.concatenate([a[:self._n], np.zeros(shape, dt)])  # noqa: E731
                self._mat = grow(self._mat, (cap - self._n, self.dim), np.float32)
                self._emb_ids = grow(self._emb_ids, cap - self._n, np.int64)
                self._face_ids = grow(self._face_ids, cap - self._n, np.int64)
                self._ident_ids = grow(self._ident_ids, cap - self._n, np.int64)
                self._cap = cap
            sl = slice(self._n, n_new)
            self._mat[sl] = mat
            self._emb_ids[sl], self._face_ids[sl], self._ident_ids[sl] = emb_ids, face_ids, ident_ids
            for i, lab in zip(np.asarray(ident_ids).tolist(), labels):
                self._labels[i] = lab
            self._n = n_new
            self.last_embedding_id = max(self.last_embedding_id, int(np.max(emb_ids)))

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """Top-k identities per query (each identity scored by its best face)."""
        n = self._n
        mat, ident_ids, face_ids, labels = self._mat[:n], self._ident_ids[:n], self._face_ids[:n], self._labels
        if n == 0:
            return [[] for _ in range(len(queries))]
        scores = np.asarray(queries, np.float32) @ mat.T  # (q, n)
        out = []
        for row in scores:
            k = min(n, max(top_k * 4, 32))
            cand = np.argpartition(-row, k - 1)[:k] if k < n else np.arange(n)
            cand = cand[np.argsort(-row[cand], kind="stable")]
            seen, matches = set(), []
            for j in cand:
                iid = int(ident_ids[j])
                if iid in seen:
                    continue
                seen.add(iid)
                matches.append(Match(iid, labels[iid], int(face_ids[j]), float(row[j])))
                if len(matches) == top_k:
                    break
            if len(matches) < top_k and k < n:  # rare: many faces of few identities; fall back to all
                best = {}
                for j in np.argsort(-row, kind="stable"):
                    best.setdefault(int(ident_ids[j]), j)
                    if len(best) == top_k:
                        break
                matches = [Match(i, labels[i], int(face_ids[j]), float(row[j])) for i, j in best.items()]
            out.append(matches)
        return out

    def identity_ids(self) -> set[int]:
        return set(self._ident_ids[: self._n].tolist())

    def face_ids(self) -> np.ndarray:
        return self._face_ids[: self._n].copy()

    def scores_for_identity(self, query: np.ndarray, identity_id: int) -> float | None:
        n = self._n
        sel = self._ident_ids[:n] == identity_id
        if not sel.any():
            return None
        return float(np.max(self._mat[:n][sel] @ np.asarray(query, np.float32)))
