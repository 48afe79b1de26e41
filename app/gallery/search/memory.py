"""In-memory exact vector index (a cache of the database), behind one small interface.

`VectorIndex.search` returns, per query, the top identities: each scored by its template (the normalised
mean of its faces' embeddings, `app.gallery.store.template_of`) or, with `scoring="face"`, by its best
face. A larger engine (pgvector...) can replace it by implementing the same methods.

Vectors are held in float16 (half the memory, and brute-force search is memory-bound): every vector is
scored, candidates are then re-scored in float32 from the stored values (scores within ~1e-3 of float32).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from model.calibration import pick_identities


@dataclass(frozen=True)
class Match:
    identity_id: int
    label: str
    face_id: int
    score: float


def cosine(score: float) -> float:
    """A similarity as answers report it: float rounding (float16 storage, sums of unit vectors) can put a
    cosine a hair outside [-1, 1]; answers never do."""
    return min(1.0, max(-1.0, float(score)))


class VectorIndex:
    """Exact cosine search over unit vectors of one model version. Appends are cheap; reads are lock-free."""

    def __init__(self, version: str, dim: int = 512, scoring: str = "template"):
        if scoring not in ("template", "face"):
            raise ValueError(f"unknown scoring {scoring!r}")
        self.version = version
        self.dim = dim
        self.scoring = scoring
        self._lock = threading.Lock()
        self._cap = 0
        self._n = 0
        self._mat = torch.zeros((0, dim), dtype=torch.float16)
        self._emb_ids = np.zeros(0, np.int64)
        self._face_ids = np.zeros(0, np.int64)
        self._ident_ids = np.zeros(0, np.int64)
        self._labels: dict[int, str] = {}
        # templates: one row per identity, kept from the running sum of its face vectors
        self._rows_of: dict[int, list[int]] = {}
        self._sum_of: dict[int, np.ndarray] = {}
        self._t_row: dict[int, int] = {}
        self._t_n = 0
        self._t_mat = torch.zeros((0, dim), dtype=torch.float32)
        self._t_ids = np.zeros(0, np.int64)
        self.last_embedding_id = 0
        self.generation = -1          # gallery generation this index reflects
        self.rebuild_generation = -1  # non-append writes seen; a change means rebuild

    def __len__(self) -> int:
        return self._n

    @property
    def identities(self) -> int:
        """How many identities a search compares against (what the operating point depends on)."""
        return self._t_n

    def add(self, emb_ids, face_ids, ident_ids, labels, mat: np.ndarray) -> None:
        if len(emb_ids) == 0:
            return
        with self._lock:
            n_new = self._n + len(emb_ids)
            if n_new > self._cap:  # grow geometrically; searches keep reading the old arrays meanwhile
                cap = max(n_new, int(self._cap * 1.5) + 1024)
                grow = lambda a, shape, dt: np.concatenate([a[:self._n], np.zeros(shape, dt)])  # noqa: E731
                grown = torch.zeros((cap, self.dim), dtype=torch.float16)
                grown[: self._n] = self._mat[: self._n]
                self._mat = grown
                self._emb_ids = grow(self._emb_ids, cap - self._n, np.int64)
                self._face_ids = grow(self._face_ids, cap - self._n, np.int64)
                self._ident_ids = grow(self._ident_ids, cap - self._n, np.int64)
                self._cap = cap
            sl = slice(self._n, n_new)
            self._mat[sl] = torch.from_numpy(np.ascontiguousarray(mat, dtype=np.float32)).half()
            self._emb_ids[sl], self._face_ids[sl], self._ident_ids[sl] = emb_ids, face_ids, ident_ids
            for i, lab in zip(np.asarray(ident_ids).tolist(), labels):
                self._labels[i] = lab
            self._add_to_templates(np.asarray(ident_ids), np.asarray(mat, dtype=np.float64), self._n)
            self._n = n_new
            self.last_embedding_id = max(self.last_embedding_id, int(np.max(emb_ids)))

    def _add_to_templates(self, ident_ids: np.ndarray, mat: np.ndarray, first_row: int) -> None:
        touched = []
        for j, iid in enumerate(ident_ids.tolist()):
            self._rows_of.setdefault(iid, []).append(first_row + j)
            acc = self._sum_of.get(iid)
            self._sum_of[iid] = mat[j].copy() if acc is None else acc + mat[j]
            touched.append(iid)
        new = [i for i in dict.fromkeys(touched) if i not in self._t_row]
        need = self._t_n + len(new)
        if need > len(self._t_mat):  # grow geometrically; readers keep the old tensor meanwhile
            cap = max(need, int(len(self._t_mat) * 1.5) + 1024)
            grown = torch.zeros((cap, self.dim), dtype=torch.float32)
            grown[: self._t_n] = self._t_mat[: self._t_n]
            ids = np.zeros(cap, np.int64)
            ids[: self._t_n] = self._t_ids[: self._t_n]
            self._t_mat, self._t_ids = grown, ids
        for iid in new:
            self._t_row[iid] = self._t_n
            self._t_ids[self._t_n] = iid
            self._t_n += 1
        for iid in dict.fromkeys(touched):
            acc = self._sum_of[iid]
            self._t_mat[self._t_row[iid]] = torch.from_numpy((acc / max(np.linalg.norm(acc), 1e-12)).astype(np.float32))

    def sample(self, max_faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, identity ids) of all the faces of a random subset of identities, at most `max_faces`
        faces (all of them when there are no more)."""
        rows = pick_identities(self._ident_ids[: self._n], max_faces, seed)
        return self._mat[torch.from_numpy(rows)].float().numpy(), self._ident_ids[rows].copy()

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """Top-k identities per query, best first (scored by template, or by best face)."""
        if self.scoring == "template":
            return self._search_templates(queries, top_k)
        return self._search_faces(queries, top_k)

    def _search_templates(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        t_n = self._t_n
        if t_n == 0:
            return [[] for _ in range(len(queries))]
        q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        with torch.inference_mode():
            scores = (self._t_mat[:t_n] @ q32.T).T  # (q, identities)
            best = torch.topk(scores, min(top_k, t_n), dim=1)
        out = []
        for qi in range(len(queries)):
            matches = []
            for score, row in zip(best.values[qi].tolist(), best.indices[qi].tolist()):
                iid = int(self._t_ids[row])
                matches.append(Match(iid, self._labels[iid], self._best_face(iid, q32[qi]), cosine(score)))
            out.append(matches)
        return out

    def _best_face(self, identity_id: int, q: torch.Tensor) -> int:
        rows = self._rows_of[identity_id]
        if len(rows) == 1:
            return int(self._face_ids[rows[0]])
        exact = (self._mat[torch.tensor(rows)].float() @ q).numpy()
        return int(self._face_ids[rows[int(np.argmax(exact))]])

    def _search_faces(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        n = self._n
        mat = self._mat[:n]
        if n == 0:
            return [[] for _ in range(len(queries))]
        q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        with torch.inference_mode():
            coarse = (mat @ q32.half().T).T.float()  # (q, n): one pass over every vector
        out = []
        for qi, row in enumerate(coarse):
            k = min(n, max(top_k * 4, 32))
            matches = self._best_per_identity(mat, q32[qi], torch.topk(row, k).indices.numpy(), top_k)
            if len(matches) < top_k and k < n:  # many faces of few identities: walk further down
                matches = self._best_per_identity(mat, q32[qi], self._first_rows_of_identities(row, top_k), top_k)
            out.append(matches)
        return out

    def _first_rows_of_identities(self, row: torch.Tensor, top_k: int) -> np.ndarray:
        rows, seen = [], set()
        for j in torch.argsort(row, descending=True).numpy():
            iid = int(self._ident_ids[j])
            if iid not in seen:
                seen.add(iid)
                rows.append(j)
                if len(rows) == top_k:
                    break
        return np.asarray(rows)

    def _best_per_identity(self, mat: torch.Tensor, q: torch.Tensor, rows: np.ndarray, top_k: int) -> list[Match]:
        """Candidate rows re-scored in float32; the best face of each identity, best first."""
        exact = (mat[torch.from_numpy(rows)].float() @ q).numpy()
        order = np.argsort(-exact, kind="stable")
        seen, matches = set(), []
        for j, score in zip(rows[order], exact[order]):
            iid = int(self._ident_ids[j])
            if iid not in seen:
                seen.add(iid)
                matches.append(Match(iid, self._labels[iid], int(self._face_ids[j]), cosine(score)))
                if len(matches) == top_k:
                    break
        return matches

    def scores_for_identity(self, query: np.ndarray, identity_id: int) -> float | None:
        """The identity's score for `query` under this index's scoring, None if it is not here."""
        if self.scoring == "template":
            row = self._t_row.get(identity_id)
            if row is None or row >= self._t_n:
                return None
            return float(self._t_mat[row] @ torch.from_numpy(np.asarray(query, np.float32)))
        n = self._n
        sel = self._ident_ids[:n] == identity_id
        if not sel.any():
            return None
        rows = self._mat[:n][torch.from_numpy(sel)].float()
        return float((rows @ torch.from_numpy(np.asarray(query, np.float32))).max())
