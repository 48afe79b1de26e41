"""Suspected duplicate identities (`model.duplicates`): listed for merging, warned about at enrollment, and
remembered as "not the same person" when a person says so."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from app.gallery.duplicates import DistinctPairs, ordered
from app.gallery.store import GalleryStore
from app.services.operating_point import OperatingPoints, tail_of
from model.duplicates import duplicate_pairs, duplicate_threshold


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


class Duplicates:
    """Pairs of identities whose templates score as one person, strongest first, cached per model version and
    gallery generation (every template pair is scored: O(identities^2) once per change)."""

    def __init__(self, store: GalleryStore, operating: OperatingPoints, distinct: DistinctPairs,
                 domain_rise=None):
        """`domain_rise(embedder)`: how much the gallery's own domain raises the model's 1:1 threshold (its
        faces score higher against each other than the calibration set's); suggestions need that much more."""
        self.store = store
        self.distinct = distinct
        self.domain_rise = domain_rise or (lambda embedder: 0.0)
        self.operating = operating
        self._cache: dict[str, tuple[tuple, DuplicateList]] = {}
        self._lock = threading.Lock()

    def threshold(self, embedder, n_identities: int) -> float | None:
        tail = tail_of(embedder.thresholds)
        return None if tail is None else duplicate_threshold(tail, n_identities) + self.domain_rise(embedder)

    def list(self, embedder) -> DuplicateList:
        """Every suspected duplicate pair of the gallery, less those said to be different people."""
        distinct = self.distinct.all()
        key = (self.store.generation()[0], frozenset(distinct))
        with self._lock:
            hit = self._cache.get(embedder.version)
            if hit is not None and hit[0] == key:
                return hit[1]
            templates = self.store.templates(embedder.version)
            ids = np.fromiter(templates, np.int64, len(templates))
            thr = self.threshold(embedder, len(ids))
            pairs: tuple[DuplicatePair, ...] = ()
            if thr is not None and len(ids) > 1:
                mat = np.stack([templates[int(i)][0] for i in ids])
                found = ((int(ids[i]), int(ids[j]), s) for i, j, s in duplicate_pairs(mat, thr))
                pairs = tuple(DuplicatePair(*ordered(a, b), score=round(s, 4)) for a, b, s in found
                              if ordered(a, b) not in distinct)
            done = DuplicateList(embedder.version, thr, pairs)
            self._cache = {embedder.version: (key, done)}
            return done

    def of_faces(self, embedder, index, identity_id: int, vectors: np.ndarray) -> list[DuplicatePair]:
        """Other identities that the mean of `vectors` (faces just enrolled as `identity_id`) scores as the
        same person: the enrollment's `possible_duplicate` warnings."""
        thr = self.threshold(embedder, index.identities)
        if thr is None or not len(vectors) or index.identities < 2:
            return []
        mean = np.asarray(vectors, np.float64).mean(axis=0)
        mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        distinct = self.distinct.all()
        return [DuplicatePair(identity_id, m.identity_id, round(m.score, 4)) for m in index.search(mean[None], 4)[0]
                if m.identity_id != identity_id and m.score >= thr
                and ordered(identity_id, m.identity_id) not in distinct]

    def mark_distinct(self, a: int, b: int) -> bool:
        """Remember that `a` and `b` are two people (NotFound if either is missing); the gallery's tail is
        recomputed by this process's next search (other processes: at their next gallery change)."""
        added = self.distinct.add(a, b)
        self.operating.forget_gallery()
        return added

    def unmark_distinct(self, a: int, b: int) -> bool:
        removed = self.distinct.remove(a, b)
        self.operating.forget_gallery()
        return removed
