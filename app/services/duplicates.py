"""Suspected duplicate identities (`model.duplicates`): listed for merging, warned about at enrollment, and
remembered as "not the same person" when a person says so."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

import numpy as np

from app.gallery.duplicates import DistinctPairs
from app.gallery.store import GalleryStore
from app.services.operating_point import OperatingPoints
from model.duplicates import duplicate_pairs, pair_key

log = logging.getLogger(__name__)

# Galleries with more identities get their duplicate list recomputed in the background after a change.
SYNC_IDENTITIES = 5000


@dataclass(frozen=True)
class DuplicatePair:
    a: int
    b: int
    score: float


@dataclass(frozen=True)
class DuplicateList:
    version: str
    threshold: float | None       # None: the serving model carries no impostor tail to set it from
    pairs: tuple[DuplicatePair, ...]
    stale: bool = False           # a newer list is being computed in the background


class Duplicates:
    """Pairs of identities whose templates score as one person, strongest first, cached per model version and
    gallery generation (every template pair is scored: O(identities^2) once per change)."""

    def __init__(self, store: GalleryStore, operating: OperatingPoints, distinct: DistinctPairs, search_of):
        """`search_of(embedder)`: a model version's search (the gallery's size and its tail)."""
        self.store = store
        self.distinct = distinct
        self.search_of = search_of
        self.operating = operating
        self._cache: dict[str, tuple[tuple, DuplicateList]] = {}
        self._lock = threading.Lock()           # guards _running (held for microseconds)
        self._compute_lock = threading.Lock()   # one list computed at a time
        self._running: set[str] = set()

    def forget(self, keep: set[str]) -> None:
        """Drop the lists of model versions not in `keep` (retired by a swap)."""
        for v in [v for v in self._cache if v not in keep]:
            self._cache.pop(v, None)

    def threshold(self, embedder) -> float | None:
        """The same-person threshold the gallery's tail was cleaned at (`OperatingPoints.same_person`: the
        model's 1:1 tail, the gallery's size and its domain rise), so the list is what the tail leaves out."""
        return self.operating.same_person(embedder, self.search_of(embedder))

    def list(self, embedder) -> DuplicateList:
        """Every suspected duplicate pair of the gallery, less those said to be different people. Every template
        pair is scored (O(identities^2): about 7 s at 10,000 identities on 2 cores): once per gallery change, in the
        background past SYNC_IDENTITIES identities (the previous list is answered meanwhile, `stale`)."""
        key = (self.store.generation()[0], frozenset(self.distinct.all()), self.threshold(embedder))
        hit = self._cache.get(embedder.version)
        if hit is not None and hit[0] == key:
            return hit[1]
        if hit is not None and self.search_of(embedder).identities > SYNC_IDENTITIES:
            with self._lock:
                start = embedder.version not in self._running
                self._running.add(embedder.version)
            if start:
                threading.Thread(target=self._refresh, args=(embedder, key), daemon=True,
                                 name=f"duplicates-{embedder.version}").start()
            return replace(hit[1], stale=True)
        with self._compute_lock:
            hit = self._cache.get(embedder.version)
            return hit[1] if hit is not None and hit[0] == key else self._compute(embedder, key)

    def _refresh(self, embedder, key) -> None:
        try:
            with self._compute_lock:
                self._compute(embedder, key)
        except Exception:  # noqa: BLE001 - logged; the previous list is answered, the next change retries
            log.warning("background duplicate list for %s failed", embedder.version, exc_info=True)
        finally:
            with self._lock:
                self._running.discard(embedder.version)

    def _compute(self, embedder, key) -> DuplicateList:
        _, distinct, thr = key
        templates = self.store.templates(embedder.version)
        ids = np.fromiter(templates, np.int64, len(templates))
        pairs: tuple[DuplicatePair, ...] = ()
        if thr is not None and len(ids) > 1:
            mat = np.stack([templates[int(i)][0] for i in ids])
            found = ((int(ids[i]), int(ids[j]), s) for i, j, s in duplicate_pairs(mat, thr))
            pairs = tuple(DuplicatePair(*pair_key(a, b), score=round(s, 4)) for a, b, s in found
                          if pair_key(a, b) not in distinct)
        done = DuplicateList(embedder.version, thr, pairs)
        self._cache = {embedder.version: (key, done)}
        return done

    def of_faces(self, embedder, index, identity_id: int, vectors: np.ndarray) -> list[DuplicatePair]:
        """Other identities that the mean of `vectors` (faces just enrolled as `identity_id`) scores as the
        same person: the enrollment's `possible_duplicate` warnings."""
        thr = self.threshold(embedder)
        if thr is None or not len(vectors) or index.identities < 2:
            return []
        mean = np.asarray(vectors, np.float64).mean(axis=0)
        mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        distinct = self.distinct.all()
        return [DuplicatePair(identity_id, m.identity_id, round(m.score, 4)) for m in index.search(mean[None], 4)[0]
                if m.identity_id != identity_id and m.score >= thr
                and pair_key(identity_id, m.identity_id) not in distinct]

    def mark_distinct(self, a: int, b: int) -> bool:
        """Remember that `a` and `b` are two people (NotFound if either is missing); the gallery's tail is
        recomputed by this process's next search (other processes: at their next gallery change)."""
        if a == b:
            raise ValueError("an identity is always the same person as itself")
        added = self.distinct.add(a, b)
        self.operating.forget_gallery()
        return added

    def unmark_distinct(self, a: int, b: int) -> bool:
        removed = self.distinct.remove(a, b)
        self.operating.forget_gallery()
        return removed
