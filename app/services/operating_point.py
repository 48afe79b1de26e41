"""The match decision's operating point: which threshold is in force for a search, and why.

Order of precedence: a request's own `threshold`, then `FACEID_MATCH_THRESHOLD`, then the threshold
derived for `FACEID_TARGET_FPIR` and the number of identities searched from the serving model's impostor
tail (checkpoint calibration), raised to the gallery's own estimate where the gallery's impostor pairs
say the deployment's faces score higher (`model.calibration.operating_point`). A checkpoint without a
tail falls back to its fixed `cosine` threshold, with a warning. Verification (1:1) uses the same tails
at `FACEID_TARGET_FAR`.

Where the checkpoint's calibration carries a cohort (`thresholds["normalised"]`: a `Cohort`, the tail of the
normalised scores and their search_comparisons_factor), searches are decided on normalised scores: a face
matches when its best score reaches the threshold plus its own cohort shift. The gallery's own tail is then
measured on normalised scores too. Request thresholds and FACEID_MATCH_THRESHOLD stay plain cosine thresholds.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace


from model.calibration.cohort import Cohort
from model.calibration.operating_point import OperatingPoint, operating_point
from model.calibration.tail import CalibrationError, ImpostorTail, per_comparison_rate
from model.duplicates import duplicate_threshold
from model.gallery_tail import VERIFY_DOMAIN_MIN_IDENTITIES, VERIFY_MAX_DOMAIN_RISE  # noqa: F401 - re-exported
from model.gallery_tail import NormalisationChoice, measure_gallery, normalisation_choice, verification_point
from model.selfcheck import SelfCheck
from model.weights import measured_fnir

log = logging.getLogger(__name__)

# Faces sampled from the gallery for its own impostor tail (whole identities, up to this many faces): each face
# against every other sampled identity, ~9 M scores for 3,000 faces of 1,000 people, whatever the gallery's size.
GALLERY_SAMPLE_FACES = 3000
# Galleries this small are always recomputed before answering (it takes a few milliseconds), so every replica and
# restart of a small gallery answers with the same operating point. Larger ones are recomputed off the request
# path, in the background, whatever the change (searches meanwhile use the tail from before it); their first
# tail is computed when the version starts serving (`Serving.warm`), not by a request.
SYNC_BELOW_FACES = 500
# The operating points the UI offers by name: the false-positive identification rates users pick from.
PRESETS = {"strict": 0.001, "balanced": 0.01, "loose": 0.05}
# A swap needs calibration that measures the per-comparison rate of at least a gallery this large.
MIN_SUPPORTED_GALLERY = 100


def tail_of(thresholds: dict) -> ImpostorTail | None:
    """The impostor tail a checkpoint's calibration carries (None for checkpoints calibrated the old way)."""
    raw = (thresholds or {}).get("impostor_tail")
    return ImpostorTail.from_dict(raw) if raw is not None else None


@dataclass(frozen=True)
class Normalisation:
    """A checkpoint's search normalisation: the cohort, the tail of normalised impostor scores, its kappa."""
    cohort: Cohort
    tail: ImpostorTail
    kappa: float


def normalisation_of(thresholds: dict, embedding_size: int | None = None) -> Normalisation | None:
    """The cohort normalisation a checkpoint's calibration carries (None: searches use plain scores)."""
    raw = (thresholds or {}).get("normalised")
    if raw is None:
        return None
    try:
        norm = Normalisation(Cohort.from_dict(raw["cohort"]), ImpostorTail.from_dict(raw["impostor_tail"]),
                             float(raw.get("search_comparisons_factor", 1.0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"malformed normalisation: {exc}") from None
    dim = norm.cohort.centroids.shape[1]
    if embedding_size is not None and dim != embedding_size:
        raise CalibrationError(f"malformed normalisation: {dim}-d cohort for {embedding_size}-d embeddings")
    return norm


def calibration_problem(thresholds: dict, target_fpir: float, n_identities: int,
                        embedding_size: int | None = None) -> str | None:
    """Why a checkpoint's calibration cannot serve `target_fpir` on this gallery (None when it can)."""
    try:
        tail = tail_of(thresholds)
        kappa = float(thresholds.get("search_comparisons_factor", 1.0))
        norm = normalisation_of(thresholds, embedding_size)
    except (CalibrationError, TypeError, ValueError) as exc:
        return f"its calibration is malformed: {exc}"
    for name, k in (("search_comparisons_factor", kappa), ("normalised search_comparisons_factor",
                                                           norm.kappa if norm else 1.0)):
        if not 0.05 <= k <= 1.0:
            return f"its {name} {k} is outside [0.05, 1]"
    if tail is None:
        return "it carries no impostor-score tail (calibrate it with python -m training.calibrate)"
    need = per_comparison_rate(target_fpir, max(n_identities, MIN_SUPPORTED_GALLERY))
    for name, t in (("", tail), ("normalised ", norm.tail if norm else None)):
        if t is not None and not t.supports(need):
            return (f"its {name}calibration measures impostor rates only down to {t.deepest_p:g} ({t.n_pairs} "
                    f"pairs); FPIR {target_fpir:g} over {max(n_identities, MIN_SUPPORTED_GALLERY)} identities needs "
                    f"{need:.2g}: calibrate it on more different-person pairs, or set FACEID_MATCH_THRESHOLD")
    return None


@dataclass
class _GalleryTail:
    faces: int
    identities: int
    tail: ImpostorTail | None
    computed_s: float
    normalised: ImpostorTail | None = None   # the same pairs, scores lowered by each face's cohort shift
    duplicates: tuple = ()                   # identity pairs of the sample left out as suspected duplicates
    same_person: float | None = None         # the template score from which a pair is a suspected duplicate
    selfcheck: SelfCheck | None = None       # plain vs cohort-normalised on the gallery's own searches
    domain_rise: float = 0.0                 # of the 1:1 threshold, as the same-person threshold includes it


class OperatingPoints:
    """Thresholds for searches and verifications, with the gallery's own impostor tail cached per model."""

    def __init__(self, target_fpir: float, target_far: float, override: float | None, default: float,
                 gallery_calibration: bool = True, distinct_pairs=None, norms: dict | None = None):
        """`distinct_pairs()`: the identity-id pairs people have said are not the same person (never left out
        of the gallery's tail as duplicates). `norms`: the decoded normalisations of another OperatingPoints to
        share (the model's, the same for every collection)."""
        self.target_fpir, self.target_far = target_fpir, target_far
        self.distinct_pairs = distinct_pairs or (lambda: set())
        self.override, self.default = override, default
        self.gallery_calibration = gallery_calibration
        self._gallery: dict[str, _GalleryTail] = {}
        self._lock = threading.Lock()             # guards _refreshing (held for microseconds)
        self._compute_lock = threading.Lock()     # one tail computation at a time
        self._refreshing: set[str] = set()
        self.norms: dict[str, Normalisation | None] = {} if norms is None else norms  # per version, decoded once

    def normalisation(self, embedder) -> Normalisation | None:
        """The serving model's normalisation, decoded once per version. A malformed one (refused by a swap's
        check, but a model can also be served from start-up or an override) leaves searches on plain scores,
        with a warning in every operating point (`_norm_broken`)."""
        v = embedder.version
        if v not in self.norms:
            try:
                self.norms[v] = normalisation_of(embedder.thresholds,
                                                  getattr(embedder.preprocessing, "embedding_size", None))
            except CalibrationError:
                log.warning("model %s: malformed normalisation; searches use plain scores", v, exc_info=True)
                self.norms[v] = None
        return self.norms[v]

    def _norm_broken(self, embedder) -> bool:
        return self.normalisation(embedder) is None and "normalised" in (embedder.thresholds or {})

    def gallery_tail(self, version: str, index, cohort: Cohort | None = None,
                     normalised: bool = False, prior: ImpostorTail | None = None) -> ImpostorTail | None:
        """The gallery's own tail (`normalised`: of the cohort-normalised scores); see `gallery_tails`."""
        got = self.gallery_tails(version, index, cohort, prior)
        return None if got is None else (got.normalised if normalised else got.tail)

    def gallery_tails(self, version: str, index, cohort: Cohort | None = None,
                      prior: ImpostorTail | None = None) -> _GalleryTail | None:
        """The gallery's impostor tail for `version`, kept current as the gallery changes. In galleries over
        SYNC_BELOW_FACES, changes are picked up in the background while searches use the previous tail (past
        GALLERY_SAMPLE_FACES, changes under 1 % are not recomputed at all: the sample barely moves); a first
        computation (warmed before a version serves) or any change of a small gallery is made before answering."""
        if not self.gallery_calibration:
            return None
        faces, identities = len(index), index.identities
        cached = self._gallery.get(version)
        if cached is not None and cohort is not None and cached.normalised is None and cached.tail is not None:
            cached = None  # computed without the cohort (by another caller): compute both now
        if cached is not None and (cached.faces, cached.identities) == (faces, identities):
            return cached
        if cached is not None and faces > GALLERY_SAMPLE_FACES and abs(faces - cached.faces) < 0.01 * cached.faces:
            return cached
        if cached is not None and faces > SYNC_BELOW_FACES:
            with self._lock:
                start = version not in self._refreshing
                self._refreshing.add(version)
            if start:
                threading.Thread(target=self._refresh, args=(version, index, cohort, prior), daemon=True,
                                 name=f"gallery-tail-{version}").start()
            return cached
        with self._compute_lock:  # one computation at a time; requests that waited reuse its result
            done = self._gallery.get(version)
            if done is not None and (done.faces, done.identities) == (len(index), index.identities) \
                    and (cohort is None or done.normalised is not None or done.tail is None):
                return done
            try:
                return self._compute(version, index, cohort, prior)
            except Exception:  # noqa: BLE001 - a failed estimate must not fail the search: keep what we had
                log.warning("gallery impostor tail for %s not recomputed; keeping the previous one", version,
                            exc_info=True)
                return cached

    def _refresh(self, version: str, index, cohort: Cohort | None, prior: ImpostorTail | None) -> None:
        try:
            with self._compute_lock:
                self._compute(version, index, cohort, prior)
        except Exception:  # noqa: BLE001 - logged; searches keep the previous tail, the next change retries
            log.warning("background refresh of the gallery impostor tail for %s failed", version, exc_info=True)
        finally:
            with self._lock:
                self._refreshing.discard(version)

    def _compute(self, version: str, index, cohort: Cohort | None = None,
                 prior: ImpostorTail | None = None) -> _GalleryTail:
        """`model.gallery_tail.measure_gallery` on a sample of whole identities (at most GALLERY_SAMPLE_FACES)."""
        t0 = time.perf_counter()
        faces, identities = len(index), index.identities
        vectors, labels = index.sample(GALLERY_SAMPLE_FACES)
        shift = cohort.shift(vectors) if cohort is not None and len(vectors) else None
        m = measure_gallery(vectors, labels, index.scoring, prior, identities, self.target_far, shift,
                            self.distinct_pairs())
        self._gallery[version] = done = _GalleryTail(faces, identities, m.tail, time.perf_counter() - t0,
                                                     m.normalised, m.duplicates, m.same_person, m.selfcheck,
                                                     m.domain_rise)
        return done

    def same_person(self, embedder, index) -> float | None:
        """The template score from which two identities of this gallery are suspected to be one person (the
        threshold its tail was cleaned at); None when the serving model has no impostor tail."""
        prior = tail_of(embedder.thresholds)
        if prior is None:
            return None
        norm = self.normalisation(embedder)
        got = self.gallery_tails(embedder.version, index, norm.cohort if norm else None, prior)
        return got.same_person if got is not None else duplicate_threshold(prior, index.identities)

    def held(self) -> set[str]:
        """The model versions whose tails or normalisation this process keeps."""
        return set(self._gallery) | set(self.norms)

    def forget(self, keep: set[str]) -> None:
        """Drop the tails and normalisations of versions not in `keep` (retired by a swap)."""
        for v in list(self._gallery):
            if v not in keep:
                self._gallery.pop(v, None)
        for v in list(self.norms):
            if v not in keep:
                self.norms.pop(v, None)

    def forget_gallery(self) -> None:
        """Drop the cached gallery tails (a pair was said to be two people): the next search recomputes."""
        with self._compute_lock:
            self._gallery.clear()

    def for_search(self, embedder, index, requested: float | None = None,
                   target_fpir: float | None = None) -> OperatingPoint:
        """For a small gallery, FPIR / N can exceed the verification FAR: the search threshold then stays at
        the verification threshold (FPIR below target), so a 3-person door is no looser than a 1:1 check.
        With a cohort (and no fixed threshold) the operating point is on normalised scores. `target_fpir`:
        another target than FACEID_TARGET_FPIR (the presets)."""
        target = self.target_fpir if target_fpir is None else target_fpir
        norm = self.normalisation(embedder)
        tails = self.gallery_tails(embedder.version, index, norm.cohort, tail_of(embedder.thresholds)) \
            if norm is not None and requested is None and self.override is None else None
        check = self._normalisation_check(embedder, norm, tails)
        if norm is None or requested is not None or self.override is not None or (check and not check.cohort):
            op = self._decide(embedder, index, target, index.identities, requested, self.target_far)
            broken = requested is None and self.override is None and self._norm_broken(embedder)
            return replace(op, normalisation_check=check, warnings=op.warnings + (
                ("the serving model's cohort normalisation is malformed: searches use plain scores (see the log)",)
                if broken else ()))
        n = index.identities
        kappa = norm.kappa if n > 1 else 1.0
        gallery = tails.normalised if tails is not None else None
        op = operating_point(norm.tail, target, n, gallery, self.target_far, kappa)
        return replace(op, normalised=True, reference_shift=norm.cohort.reference_shift, normalisation_check=check,
                       floor=self.for_verify(embedder, index).threshold)  # never looser than 1:1 verification

    @staticmethod
    def _normalisation_check(embedder, norm: Normalisation | None,
                             tails: _GalleryTail | None) -> NormalisationChoice | None:
        if norm is None or tails is None:
            return None
        return normalisation_choice(tail_of(embedder.thresholds), norm.tail, tails)

    def for_verify(self, embedder, index, requested: float | None = None) -> OperatingPoint:
        """1:1: the model's tail at FACEID_TARGET_FAR. A gallery of VERIFY_DOMAIN_MIN_IDENTITIES or more may raise
        it for its domain (its own de-duplicated, censored tail; by at most VERIFY_MAX_DOMAIN_RISE), so who else
        is enrolled in a small gallery never changes a verification, and duplicates never do."""
        tail = tail_of(embedder.thresholds)
        if requested is not None or self.override is not None or tail is None:
            return self._decide(embedder, index, self.target_far, 1, requested)
        gallery = None
        if index.identities >= VERIFY_DOMAIN_MIN_IDENTITIES:
            norm = self.normalisation(embedder)
            gallery = self.gallery_tail(embedder.version, index, norm.cohort if norm else None, prior=tail)
        return verification_point(tail, self.target_far, index.identities, gallery)

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
                                  warnings=("the serving model carries no impostor tail: a fixed threshold is in "
                                            "force and its false-positive rate grows with the gallery",))
        kappa = float(embedder.thresholds.get("search_comparisons_factor", 1.0)) if n > 1 else 1.0
        norm = self.normalisation(embedder)
        gallery = self.gallery_tail(embedder.version, index, norm.cohort if norm else None, prior=tail)
        return operating_point(tail, target, n, gallery, max_rate, kappa)

    def report(self, embedder, index) -> dict:
        """For /ready and GET /admin/calibration: both tails, the pairs behind them, the thresholds in force."""
        search = self.for_search(embedder, index)
        tail = tail_of(embedder.thresholds)
        cached = self._gallery.get(embedder.version)
        norm = self.normalisation(embedder)
        return {"target_fpir": self.target_fpir, "target_far": self.target_far,
                "search": operating_point_public(search),
                "verify": operating_point_public(self.for_verify(embedder, index)),
                "model_tail": tail.to_dict() if tail else None,
                "gallery_tail": cached.tail.to_dict() if cached and cached.tail else None,
                "normalisation": None if norm is None else {
                    "cohort": {k: v for k, v in norm.cohort.to_dict().items() if k != "centroids"},
                    "model_tail": norm.tail.to_dict(), "search_comparisons_factor": norm.kappa,
                    "gallery_tail": cached.normalised.to_dict() if cached and cached.normalised else None},
                "gallery_tail_compute_s": round(cached.computed_s, 4) if cached else None,
                "gallery_calibration": self.gallery_calibration,
                "presets": [self._preset(name, fpir, embedder, index) for name, fpir in PRESETS.items()]}

    def _preset(self, name: str, fpir: float, embedder, index) -> dict:
        """A named search operating point, its threshold for this gallery (for a typical face, with a cohort)."""
        op = self.for_search(embedder, index, target_fpir=fpir)
        measured = measured_fnir(embedder.version, fpir)
        return {"name": name, "target_fpir": fpir, "threshold": round(op.cosine_threshold, 4), "source": op.source,
                "measured_fnir": measured[0] if measured else None, "measured_on": measured[1] if measured else None}


def operating_point_public(op: OperatingPoint) -> dict:
    """An operating point as the API answers it (`app.schemas.OperatingPointOut`)."""
    r = (lambda x: None if x is None else round(x, 4))
    return {"threshold": round(op.cosine_threshold, 4), "target_fpir": op.target_fpir,
            "compared_identities": op.n_compared,
            "per_comparison_rate": op.per_comparison_rate, "source": op.source,
            "prior_threshold": r(op.prior_threshold), "gallery_threshold": r(op.gallery_threshold),
            "extrapolated": op.extrapolated, "warnings": list(op.warnings),
            "normalisation": "cohort" if op.normalised else None,
            "normalised_threshold": r(op.threshold) if op.normalised else None,
            "floor": r(op.floor) if op.normalised else None, "domain_rise": r(op.domain_rise),
            "normalisation_check": normalisation_check_public(op.normalisation_check)}


def normalisation_check_public(choice: NormalisationChoice | None) -> dict | None:
    """A gallery's cohort decision as the API answers it (`OperatingPointOut.normalisation_check`)."""
    if choice is None:
        return None
    r3, r4 = (lambda x: None if x is None else round(x, 3)), (lambda x: None if x is None else round(x, 4))
    c = choice.selfcheck
    check = {} if c is None else {
        "mated_searches": c.mated, "nonmated_searches": c.nonmated, "fnir_plain": r4(c.fnir_plain),
        "fnir_normalised": r4(c.fnir_normalised), "fpirs": list(c.fpirs), "decided": c.normalise is not None}
    return {"cohort": choice.cohort, **check, "misfit_plain": r3(choice.misfit_plain),
            "misfit_normalised": r3(choice.misfit_normalised), "cohort_fits": choice.cohort_fits}
