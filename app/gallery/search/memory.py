"""In-memory exact search (the SQLite default): each process holds a cache of the gallery's vectors.

`MemorySearch.version(v, dim)` gives that model version's `MemoryVersionSearch`: every face's vector (float16:
half the memory, and brute-force search is memory-bound; candidates are re-scored in float32) and every
identity's stored template (`model.templates.template_of`, computed by the store). Identities are scored by
their template or, with `scoring="face"`, by their best face.

Keeping the cache current never rebuilds it on the request path: `sync()` (one cheap query of the gallery's
generation) appends new embeddings, and for writes that are not appends (rename, delete, move, merge) reloads
only the identities the store's change log names. Rows are never moved while searches read them: a reloaded
identity's old rows are tombstoned (identity id -1) after its new rows are appended, and the arrays are
compacted into new ones (published by one reference assignment) once a quarter of them are dead. Searches
read one `_State` reference and never take a lock.
"""
from __future__ import annotations

import logging
import threading
import warnings

import numpy as np
import torch

from app.gallery.search.base import Match, cosine
from app.gallery.store import GalleryStore, IndexRows
from model.calibration.pairs import pick_identities
from model.templates import template_of

log = logging.getLogger(__name__)

DEAD = -1  # identity id of a tombstoned row
COMPACT_MIN_DEAD = 1024  # compact once this many rows (and a quarter of them) are dead
HEADROOM = 64  # rows kept free past a load or a growth (and an eighth, or half, more): a 20-face collection holds
# 0.2 MB, not the 3.2 MB that 1,024 rows of face and template vectors take (benchmarks/collections.py)


class _State:
    """The arrays a search reads. Rows below `n` (`t_n`) never move; appends write past them and then publish
    the new count; growth and compaction build a new _State."""

    def __init__(self, dim: int, cap: int = 0, t_cap: int = 0):
        self.dim = dim
        self.mat = torch.zeros((cap, dim), dtype=torch.float16)
        self.emb_ids = np.zeros(cap, np.int64)
        self.face_ids = np.zeros(cap, np.int64)
        self.ident_ids = np.zeros(cap, np.int64)
        self.n = 0
        self.dead = 0
        self.t_mat = torch.zeros((t_cap, dim), dtype=torch.float32)
        self.t_ids = np.zeros(t_cap, np.int64)
        self.t_n = 0
        self.t_dead = 0
        self.rows_of: dict[int, np.ndarray] = {}   # identity -> its live face rows
        self.t_row: dict[int, int] = {}            # identity -> its live template row
        self.labels: dict[int, str] = {}


class MemoryVersionSearch:
    """Exact cosine search over one model version's unit vectors. Reads are lock-free; writers serialise."""

    def __init__(self, version: str, dim: int = 512, scoring: str = "template", store: GalleryStore | None = None):
        if scoring not in ("template", "face"):
            raise ValueError(f"unknown scoring {scoring!r}")
        self.version, self.dim, self.scoring, self.store = version, dim, scoring, store
        self._state = _State(dim)
        self._write = threading.Lock()
        self.last_embedding_id = 0
        self.generation = -1          # gallery generation this cache reflects
        self.rebuild_generation = -1  # the store's "reload everything" counter (prune of versions)
        self.reloads = 0              # full loads from the store (tests and /metrics watch it)
        self._sums: dict[int, np.ndarray] = {}  # `add` without a store: each identity's running float64 sum

    # --- size ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        st = self._state
        return st.n - st.dead

    @property
    def identities(self) -> int:
        """How many identities a search compares against (what the operating point depends on)."""
        st = self._state
        return st.t_n - st.t_dead

    # --- keeping current ----------------------------------------------------------------------------
    def sync(self) -> None:
        """Catch up with the gallery: new embeddings appended, identities touched by other writes reloaded.
        A full load only the first time (or when this process fell behind the change log)."""
        if self.store is None:
            return
        gen, rebuild_gen = self.store.generation()
        if gen == self.generation:
            return
        with self._write:
            if gen == self.generation:
                return
            changed = None if rebuild_gen != self.rebuild_generation or self.generation < 0 \
                else self.store.changed_identities(self.generation)
            if changed is None:
                self._reload_all()
            else:
                reloaded = set()
                if changed:
                    rows = self.store.index_rows(self.version, identity_ids=changed)
                    self._reload(changed, rows)
                    reloaded = set(rows.emb_ids.tolist())
                # rows the reload already holds are skipped by id: a face enrolled to a reloaded identity after
                # its reload was read is appended here, not lost
                self._append(self.store.index_rows(self.version, after_id=self.last_embedding_id), skip=reloaded)
            self.generation, self.rebuild_generation = gen, rebuild_gen

    def add(self, emb_ids, face_ids, ident_ids, labels, mat: np.ndarray) -> None:
        """Append rows without a store (benchmarks, tests): the templates of the identities they touch are made
        by the one rule (`template_of`: the normalised float64 sum) from every row added for them."""
        ident_ids = np.asarray(ident_ids, np.int64)
        mat = np.asarray(mat, np.float32)
        with self._write:
            templates = {}
            for iid in np.unique(ident_ids).tolist():
                acc = self._sums.get(iid, 0.0) + np.asarray(mat[ident_ids == iid], np.float64).sum(axis=0)
                self._sums[iid] = acc
                templates[iid] = template_of(acc[None, :])
            lab = dict(zip(ident_ids.tolist(), labels))
            self._append(IndexRows(np.asarray(emb_ids, np.int64), np.asarray(face_ids, np.int64), ident_ids, mat,
                                   lab, templates))

    def reload(self) -> None:
        """Load the whole version from the store again (searches use the old arrays meanwhile)."""
        with self._write:
            self._reload_all()

    def _reload_all(self) -> None:
        self._load_all(self.store.index_rows(self.version))
        self.reloads += 1

    def _load_all(self, rows: IndexRows) -> None:
        n, t = len(rows.emb_ids), len(set(rows.ident_ids.tolist()))  # room to grow: the next writes append in place
        st = _State(self.dim, n + n // 8 + HEADROOM, t + t // 8 + HEADROOM)
        self._fill(st, rows)
        self._state = st  # searches switch to the new arrays in one assignment
        self.last_embedding_id = int(rows.emb_ids.max()) if len(rows.emb_ids) else 0

    def _append(self, rows: IndexRows, skip: set[int] = frozenset()) -> None:
        """New rows (less the embedding ids in `skip`, which `_reload` loaded) and their identities' templates."""
        keep = ~np.isin(rows.emb_ids, list(skip)) if skip else np.ones(len(rows.emb_ids), bool)
        if len(rows.emb_ids):
            self.last_embedding_id = max(self.last_embedding_id, int(rows.emb_ids.max()))
        if not keep.any():
            return
        sub = IndexRows(rows.emb_ids[keep], rows.face_ids[keep], rows.ident_ids[keep], rows.mat[keep],
                        rows.labels, rows.templates)
        touched = set(np.unique(sub.ident_ids).tolist())
        old_t = {i: self._state.t_row[i] for i in touched if i in self._state.t_row}
        st = self._reserve(len(sub.emb_ids), len(touched))
        self._fill(st, sub, extend_rows=True)
        for i, row in old_t.items():  # the new templates are live: retire the previous ones
            st.t_ids[row] = DEAD
            st.t_mat[row] = 0
            st.t_dead += 1
        self._maybe_compact()

    def _reload(self, identity_ids: set[int], rows: IndexRows) -> None:
        """Replace everything held of `identity_ids` by `rows` (their current state; deleted ones have none).
        `last_embedding_id` is not moved: newer rows of other identities are still to be appended."""
        st = self._reserve(len(rows.emb_ids), len(identity_ids))
        old_rows = {i: st.rows_of.get(i) for i in identity_ids}
        old_t = {i: st.t_row.get(i) for i in identity_ids}
        self._fill(st, rows)  # the new state first: a search sees the old rows, both, or the new (never none)
        present = set(rows.ident_ids.tolist())
        for i in identity_ids:
            if i not in present:  # deleted, or left without faces of this version
                st.rows_of.pop(i, None)
                st.t_row.pop(i, None)
            if old_rows[i] is not None and len(old_rows[i]):
                st.ident_ids[old_rows[i]] = DEAD
                st.mat[torch.from_numpy(old_rows[i])] = 0
                st.dead += len(old_rows[i])
            if old_t[i] is not None:
                st.t_ids[old_t[i]] = DEAD
                st.t_mat[old_t[i]] = 0
                st.t_dead += 1
            if i not in rows.labels:
                st.labels.pop(i, None)
        self._maybe_compact()

    def _reserve(self, n_rows: int, n_templates: int) -> _State:
        """The current state, or a grown copy (published) when the new rows would not fit."""
        st = self._state
        if st.n + n_rows <= len(st.emb_ids) and st.t_n + n_templates <= len(st.t_ids):
            return st
        return self._copy(st, max(st.n + n_rows, int(len(st.emb_ids) * 1.5) + HEADROOM),
                          max(st.t_n + n_templates, int(len(st.t_ids) * 1.5) + HEADROOM), compact=False)

    def _maybe_compact(self) -> None:
        st = self._state
        if st.dead > max(COMPACT_MIN_DEAD, st.n // 4) or st.t_dead > max(COMPACT_MIN_DEAD, st.t_n // 4):
            self._copy(st, max(st.n - st.dead, 1) + HEADROOM, max(st.t_n - st.t_dead, 1) + HEADROOM, compact=True)

    def _copy(self, st: _State, cap: int, t_cap: int, compact: bool) -> _State:
        new = _State(self.dim, cap, t_cap)
        live = np.flatnonzero(st.ident_ids[: st.n] != DEAD) if compact else np.arange(st.n)
        m = len(live)
        new.mat[:m] = st.mat[torch.from_numpy(live)]
        new.emb_ids[:m], new.face_ids[:m], new.ident_ids[:m] = (st.emb_ids[live], st.face_ids[live],
                                                                 st.ident_ids[live])
        new.n, new.dead = m, (0 if compact else st.dead)
        t_live = np.flatnonzero(st.t_ids[: st.t_n] != DEAD) if compact else np.arange(st.t_n)
        new.t_mat[: len(t_live)] = st.t_mat[torch.from_numpy(t_live)]
        new.t_ids[: len(t_live)] = st.t_ids[t_live]
        new.t_n, new.t_dead = len(t_live), (0 if compact else st.t_dead)
        if compact:
            where = {int(r): j for j, r in enumerate(live.tolist())}
            new.rows_of = {i: np.asarray([where[int(r)] for r in rows], np.int64) for i, rows in st.rows_of.items()}
            new.t_row = {int(new.t_ids[j]): j for j in range(new.t_n)}
        else:
            new.rows_of, new.t_row = dict(st.rows_of), dict(st.t_row)
        new.labels = dict(st.labels)
        self._state = new
        return new

    @staticmethod
    def _fill(st: _State, rows: IndexRows, extend_rows: bool = False) -> None:
        """Write `rows` past st.n and their templates past st.t_n, then publish (counts last)."""
        k = len(rows.emb_ids)
        sl = slice(st.n, st.n + k)
        if k:
            with warnings.catch_warnings():  # read-only buffers from the database: only read (copied to float16)
                warnings.simplefilter("ignore", UserWarning)
                st.mat[sl] = torch.from_numpy(np.ascontiguousarray(rows.mat, dtype=np.float32)).half()
            st.emb_ids[sl], st.face_ids[sl], st.ident_ids[sl] = rows.emb_ids, rows.face_ids, rows.ident_ids
        st.labels.update(rows.labels)
        per: dict[int, list[int]] = {}
        for j, iid in enumerate(rows.ident_ids.tolist()):
            per.setdefault(iid, []).append(st.n + j)
        t_new = {}
        for iid in per:
            vec = rows.templates.get(iid)
            if vec is None:  # no stored template (a row written without one): the rule, on what we have
                vec = template_of(rows.mat[rows.ident_ids == iid])
            row = st.t_n + len(t_new)
            st.t_mat[row] = torch.from_numpy(np.asarray(vec, np.float32))
            st.t_ids[row] = iid
            t_new[iid] = row
        st.n += k
        st.t_n += len(t_new)
        for iid, new_rows in per.items():
            old = st.rows_of.get(iid) if extend_rows else None
            st.rows_of[iid] = np.asarray(new_rows if old is None else list(old) + new_rows, np.int64)
            st.t_row[iid] = t_new[iid]

    # --- reads --------------------------------------------------------------------------------------
    def sample(self, max_faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, identity ids) of all the faces of a random subset of identities, at most `max_faces`
        faces (all of them when there are no more)."""
        st = self._state
        live = np.flatnonzero(st.ident_ids[: st.n] != DEAD)
        rows = live[pick_identities(st.ident_ids[live], max_faces, seed)]
        return st.mat[torch.from_numpy(rows)].float().numpy(), st.ident_ids[rows].copy()

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """Top-k identities per query, best first (scored by template, or by best face)."""
        st = self._state
        if self.scoring == "template":
            return self._search_templates(st, queries, top_k)
        return self._search_faces(st, queries, top_k)

    def _search_templates(self, st: _State, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        t_n = st.t_n
        if t_n - st.t_dead <= 0:
            return [[] for _ in range(len(queries))]
        q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        with torch.inference_mode():
            scores = (st.t_mat[:t_n] @ q32.T).T  # (q, template rows)
            best = torch.topk(scores, min(top_k + st.t_dead, t_n), dim=1)
        out = []
        for qi in range(len(queries)):
            matches, seen = [], set()
            for score, row in zip(best.values[qi].tolist(), best.indices[qi].tolist()):
                iid = int(st.t_ids[row])
                label = st.labels.get(iid)
                if iid == DEAD or iid in seen or label is None:  # retired row, or an identity's older row
                    continue
                seen.add(iid)
                face = self._best_face(st, iid, q32[qi])
                if face is None:
                    continue
                matches.append(Match(iid, label, face, cosine(score)))
                if len(matches) == top_k:
                    break
            out.append(matches)
        return out

    @staticmethod
    def _best_face(st: _State, identity_id: int, q: torch.Tensor) -> int | None:
        rows = st.rows_of.get(identity_id)
        if rows is None or not len(rows):
            return None
        if len(rows) == 1:
            return int(st.face_ids[rows[0]])
        exact = (st.mat[torch.from_numpy(rows)].float() @ q).numpy()
        return int(st.face_ids[rows[int(np.argmax(exact))]])

    def _search_faces(self, st: _State, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        n = st.n
        if n - st.dead <= 0:
            return [[] for _ in range(len(queries))]
        mat = st.mat[:n]
        q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        with torch.inference_mode():
            coarse = (mat @ q32.half().T).T.float()  # (q, n): one pass over every vector
        out = []
        for qi, row in enumerate(coarse):
            k = min(n, max(top_k * 4, 32) + st.dead)
            matches = self._best_per_identity(st, mat, q32[qi], torch.topk(row, k).indices.numpy(), top_k)
            if len(matches) < top_k and k < n:  # many faces of few identities: walk further down
                matches = self._best_per_identity(st, mat, q32[qi], self._first_rows_of_identities(st, row, top_k),
                                                  top_k)
            out.append(matches)
        return out

    @staticmethod
    def _first_rows_of_identities(st: _State, row: torch.Tensor, top_k: int) -> np.ndarray:
        rows, seen = [], set()
        for j in torch.argsort(row, descending=True).numpy():
            iid = int(st.ident_ids[j])
            if iid != DEAD and iid not in seen:
                seen.add(iid)
                rows.append(j)
                if len(rows) == top_k:
                    break
        return np.asarray(rows, np.int64)

    @staticmethod
    def _best_per_identity(st: _State, mat: torch.Tensor, q: torch.Tensor, rows: np.ndarray,
                           top_k: int) -> list[Match]:
        """Candidate rows re-scored in float32; the best face of each identity, best first."""
        if not len(rows):
            return []
        exact = (mat[torch.from_numpy(rows)].float() @ q).numpy()
        order = np.argsort(-exact, kind="stable")
        seen, matches = set(), []
        for j, score in zip(rows[order], exact[order]):
            iid = int(st.ident_ids[j])
            label = st.labels.get(iid)
            if iid != DEAD and iid not in seen and label is not None:
                seen.add(iid)
                matches.append(Match(iid, label, int(st.face_ids[j]), cosine(score)))
                if len(matches) == top_k:
                    break
        return matches

    def scores_for_identity(self, query: np.ndarray, identity_id: int) -> float | None:
        """The identity's score for `query` under this search's scoring, None if it is not here."""
        st = self._state
        q = torch.from_numpy(np.asarray(query, np.float32))
        if self.scoring == "template":
            row = st.t_row.get(identity_id)
            return None if row is None else float(st.t_mat[row] @ q)
        rows = st.rows_of.get(identity_id)
        if rows is None or not len(rows):
            return None
        return float((st.mat[torch.from_numpy(rows)].float() @ q).max())


class MemorySearch:
    """The in-memory backend: one `MemoryVersionSearch` per model version, loaded from the store once and then
    kept current by `sync()`."""

    def __init__(self, store: GalleryStore, scoring: str = "template"):
        self.store, self.scoring = store, scoring
        self._versions: dict[str, MemoryVersionSearch] = {}
        self._lock = threading.Lock()

    def version(self, version: str, dim: int = 512) -> MemoryVersionSearch:
        """The version's search, loaded (first use) and synced."""
        with self._lock:
            search = self._versions.get(version)
            if search is None:
                search = self._versions[version] = MemoryVersionSearch(version, dim, self.scoring, self.store)
        search.sync()
        return search

    def held(self) -> set[str]:
        return set(self._versions)

    def prepare_switch(self, version: str, dim: int):
        return None  # nothing to commit with a switch: every process loads the version from the store

    def retire(self, keep: set[str]) -> None:
        """Forget the versions not in `keep` (their memory goes with them)."""
        with self._lock:
            for v in [v for v in self._versions if v not in keep]:
                del self._versions[v]

    def drop_indexes(self, keep: set[str]) -> None:
        """Nothing is stored beside the vectors in memory: `retire` frees everything."""
        self.retire(keep)

    def reindex(self, version: str, dim: int = 512) -> None:
        """Reload the version from the store (off the request path: searches use the old arrays meanwhile)."""
        self.version(version, dim).reload()

    def close(self) -> None:
        self.retire(set())
