"""The match decision's operating point: which threshold is in force for a search, and why.

Order of precedence: a request's own `threshold`, then `FACEID_MATCH_THRESHOLD`, then the threshold
derived for `FACEID_TARGET_FPIR` and the number of identities searched from the serving model's impostor
tail (checkpoint calibration), raised to the gallery's own estimate where the gallery's impostor pairs
say the deployment's faces score higher (`model.calibration.operating_point`). A checkpoint without a
tail falls back to its fixed `cosine` threshold, with a warning. Verification (1:1) uses the same tails
at `FACEID_TARGET_FAR`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from model.calibration import CalibrationError, ImpostorTail, OperatingPoint, operating_point, per_comparison_rate
from model.calibration import search_impostor_scores

log = logging.getLogger(__name__)

# Faces sampled from the gallery for its own impostor tail (whole identities, up to this many faces): each face
# against every other sampled identity, ~9 M scores for 3,000 faces of 1,000 people, whatever the gallery's size.
GALLERY_SAMPLE_FACES = 3000
# A change of at most this share of the gallery's faces and identities is picked up in the background (searches
# meanwhile use the tail from before it); a larger one is recomputed before the search is answered.
SYNC_CHANGE = 0.1
# Galleries this small are always recomputed before answering (it takes a few milliseconds), so every replica and
# restart of a small gallery answers with the same operating point.
SYNC_BELOW_FACES = 500
# A swap needs calibration that measures the per-comparison rate of at least a gallery this large.
MIN_SUPPORTED_GALLERY = 100


def tail_of(thresholds: dict) -> ImpostorTail | None:
    """The impostor tail a checkpoint's calibration carries (None for checkpoints calibrated the old way)."""
    raw = (thresholds or {}).get("impostor_tail")
    return ImpostorTail.from_dict(raw) if raw is not None else None


def calibration_problem(thresholds: dict, target_fpir: float, n_identities: int) -> str | None:
    """Why a checkpoint's calibration cannot serve `target_fpir` on this gallery (None when it can)."""
    try:
        tail = tail_of(thresholds)
        kappa = float(thresholds.get("search_comparisons_factor", 1.0))
    except (CalibrationError, TypeError, ValueError) as exc:
        return f"its calibration is malformed: {exc}"
    if not 0.05 <= kappa <= 1.0:
        return f"its search_comparisons_factor {kappa} is outside [0.05, 1]"
    if tail is None:
        return "it carries no impostor-score tail (calibrate it with python -m training.calibrate)"
    need = per_comparison_rate(target_fpir, max(n_identities, MIN_SUPPORTED_GALLERY))
    if not tail.supports(need):
        return (f"its calibration measures impostor rates only down to {tail.deepest_p:g} ({tail.n_pairs} pairs); "
                f"FPIR {target_fpir:g} over {max(n_identities, MIN_SUPPORTED_GALLERY)} identities needs {need:.2g}: "
                "calibrate it on more different-person pairs, or set FACEID_MATCH_THRESHOLD")
    return None


@dataclass
class _GalleryTail:
    faces: int
    identities: int
    tail: ImpostorTail | None
    computed_s: float


class OperatingPoints:
    """Thresholds for searches and verifications, with the gallery's own impostor tail cached per model."""

    def __init__(self, target_fpir: float, target_far: float, override: float | None, default: float,
                 gallery_calibration: bool = True):
        self.target_fpir, self.target_far = target_fpir, target_far
        self.override, self.default = override, default
        self.gallery_calibration = gallery_calibration
        self._gallery: dict[str, _GalleryTail] = {}
        self._lock = threading.Lock()             # guards _refreshing (held for microseconds)
        self._compute_lock = threading.Lock()     # one tail computation at a time
        self._refreshing: set[str] = set()

    def gallery_tail(self, version: str, index) -> ImpostorTail | None:
        """The gallery's impostor tail for `version`, kept current as the gallery changes. In galleries over
        SYNC_BELOW_FACES, small changes (under SYNC_CHANGE of the faces, and past GALLERY_SAMPLE_FACES under 1 %:
        the sample barely moves) are picked up in the background while searches use the previous tail; a first
        computation, a larger change or any change of a small gallery is made before answering."""
        if not self.gallery_calibration:
            return None
        faces, identities = len(index), index.identities
        cached = self._gallery.get(version)
        if cached is not None and (cached.faces, cached.identities) == (faces, identities):
            return cached.tail
        if cached is not None and faces > GALLERY_SAMPLE_FACES and abs(faces - cached.faces) < 0.01 * cached.faces:
            return cached.tail
        if cached is not None and faces > SYNC_BELOW_FACES \
                and abs(faces - cached.faces) <= SYNC_CHANGE * max(cached.faces, 1) \
                and abs(identities - cached.identities) <= SYNC_CHANGE * max(cached.identities, 1):
            with self._lock:
                start = version not in self._refreshing
                self._refreshing.add(version)
            if start:
                threading.Thread(target=self._refresh, args=(version, index), daemon=True,
                                 name=f"gallery-tail-{version}").start()
            return cached.tail
        with self._compute_lock:  # one computation at a time; requests that waited reuse its result
            done = self._gallery.get(version)
            if done is not None and (done.faces, done.identities) == (len(index), index.identities):
                return done.tail
            try:
                return self._compute(version, index).tail
            except Exception:  # noqa: BLE001 - a failed estimate must not fail the search: keep what we had
                log.warning("gallery impostor tail for %s not recomputed; keeping the previous one", version,
                            exc_info=True)
                return cached.tail if cached is not None else None

    def _refresh(self, version: str, index) -> None:
        try:
            with self._compute_lock:
                self._compute(version, index)
        except Exception:  # noqa: BLE001 - logged; searches keep the previous tail, the next change retries
            log.warning("background refresh of the gallery impostor tail for %s failed", version, exc_info=True)
        finally:
            with self._lock:
                self._refreshing.discard(version)

    def _compute(self, version: str, index) -> _GalleryTail:
        t0 = time.perf_counter()
        faces, identities = len(index), index.identities
        vectors, labels = index.sample(GALLERY_SAMPLE_FACES)
        scores = search_impostor_scores(vectors, labels, getattr(index, "scoring", "template"))
        source = (f"gallery: {len(vectors)} of {faces} faces ({len(np.unique(labels))} identities), each "
                  "against the other identities as a search scores them")
        tail = ImpostorTail.from_scores(scores, source=source) if len(scores) else None
        self._gallery[version] = done = _GalleryTail(faces, identities, tail, time.perf_counter() - t0)
        return done

    def forget(self, keep: set[str]) -> None:
        for v in list(self._gallery):
            if v not in keep:
                self._gallery.pop(v, None)

    def for_search(self, embedder, index, requested: float | None = None) -> OperatingPoint:
        """For a small gallery, FPIR / N can exceed the verification FAR: the search threshold then stays at
        the verification threshold (FPIR below target), so a 3-person door is no looser than a 1:1 check."""
        return self._decide(embedder, index, self.target_fpir, index.identities, requested, self.target_far)

    def for_verify(self, embedder, index, requested: float | None = None) -> OperatingPoint:
        return self._decide(embedder, index, self.target_far, 1, requested)

    def _decide(self, embedder, index, target: float, n: int, requested: float | None,
                max_rate: float = 1.0) -> OperatingPoint:
        if requested is not None:
            return OperatingPoint(float(requested), None, max(n, 1), None, "request")
        if self.override is not None:
            return OperatingPoint(float(self.override), None, max(n, 1), None, "override")
        tail = tail_of(embedder.thresholds)
        if tail is None:
            thr = float(embedder.thresholds.get("cosine", self.default))
            return OperatingPoint(thr, None, max(n, 1), None, "checkpoint",
                                  warnings=["the serving model carries no impostor tail: a fixed threshold is in "
                                            "force and its false-positive rate grows with the gallery"])
        kappa = float(embedder.thresholds.get("search_comparisons_factor", 1.0)) if n > 1 else 1.0
        return operating_point(tail, target, n, self.gallery_tail(embedder.version, index), max_rate, kappa)

    def report(self, embedder, index) -> dict:
        """For /ready and GET /admin/calibration: both tails, the pairs behind them, the thresholds in force."""
        search = self.for_search(embedder, index)
        tail = tail_of(embedder.thresholds)
        cached = self._gallery.get(embedder.version)
        return {"target_fpir": self.target_fpir, "target_far": self.target_far,
                "search": search.public(), "verify": self.for_verify(embedder, index).public(),
                "model_tail": tail.to_dict() if tail else None,
                "gallery_tail": cached.tail.to_dict() if cached and cached.tail else None,
                "gallery_tail_compute_s": round(cached.computed_s, 4) if cached else None,
                "gallery_calibration": self.gallery_calibration}
