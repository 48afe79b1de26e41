"""Impostor-score tails and the open-set operating point derived from them.

A 1:N search compares a stranger's probe with every identity in the gallery, so the false-positive
identification rate (FPIR) at a threshold t is the chance that the best of N impostor scores reaches t:

    FPIR(t, N) = 1 - (1 - p(t)) ** N,  p(t) = P(impostor score >= t)

For a target FPIR the per-comparison rate is p* = 1 - (1 - FPIR) ** (1 / N) (about FPIR / N), and the
threshold is the impostor distribution's upper quantile at p*. `ImpostorTail` keeps that upper tail as
(p, score) points, each with the number of impostor pairs beyond it; a quantile is "supported" when at
least `MIN_EXCEEDANCES` pairs lie beyond it. Below the deepest supported point the tail is extrapolated as
exponential (log p linear in the score), fitted on its last decade, and flagged.

The same representation describes a gallery's own impostor pairs (issue: calibrate in the deployment's
domain); `operating_point` turns a checkpoint's tail (prior) and a gallery's tail into one operating point.

Searches are decided on probe-normalised scores where the checkpoint carries a `Cohort`: a probe that
resembles many people (a "hub") scores high against every identity, strangers included, so its best score
says less. The cohort (centroids of a fixed set of reference faces) measures that per probe, and the search
compares `score - shift(probe)` with a threshold taken from the tail of the same normalised scores. The
ranking of identities is unchanged (the shift is the probe's own); only how high the best must score moves.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np

MIN_EXCEEDANCES = 10
# Exceedance levels kept in a tail: three per decade from 0.5 down to 1e-9 (only supported ones are stored).
LEVELS = tuple(sorted({0.5, 0.3, 0.2} | {m * 10.0 ** -e for e in range(1, 10) for m in (1.0, 0.5, 0.2)},
                      reverse=True))


class CalibrationError(ValueError):
    """A tail that cannot be used (empty, malformed, non-finite)."""


@dataclass(frozen=True)
class ImpostorTail:
    """Upper tail of an impostor (different-person) cosine-score distribution.

    `points` are (p, score, pairs_beyond) with p descending and score ascending: a fraction p of the
    `n_pairs` impostor pairs scores at or above `score`.
    """
    n_pairs: int
    points: tuple[tuple[float, float, int], ...]
    source: str = ""
    mean: float = 0.0
    std: float = 0.0
    min_beyond: int = 0   # a gallery's: its quantiles are used only with this many pairs beyond (not stored)

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_scores(cls, scores: np.ndarray, source: str = "", n_pairs: int | None = None,
                    min_exceedances: int = MIN_EXCEEDANCES) -> "ImpostorTail":
        """From impostor scores (or their upper part: then `n_pairs` says how many pairs they came from)."""
        s = np.asarray(scores, dtype=np.float32).ravel()
        n = int(n_pairs if n_pairs is not None else len(s))
        if n == 0 or len(s) == 0:
            raise CalibrationError("no impostor scores")
        # k = pairs strictly above the quantile's position; the score there is the (k+1)-th largest
        ks = sorted({int(math.floor(p * n)) for p in LEVELS} & set(range(min_exceedances, len(s))))
        pos = [len(s) - 1 - k for k in ks]
        part = np.partition(s, pos) if pos else s
        at = {k: float(part[len(s) - 1 - k]) for k in ks}
        pts = [(p, at[int(math.floor(p * n))], int(math.floor(p * n))) for p in LEVELS
               if int(math.floor(p * n)) in at]
        full = n_pairs is None or n_pairs == len(s)
        return cls(n_pairs=n, points=tuple(pts), source=source,
                   mean=float(s.mean(dtype=np.float64)) if full else 0.0,
                   std=float(s.std(dtype=np.float64)) if full else 0.0)

    @classmethod
    def from_dict(cls, d: dict) -> "ImpostorTail":
        try:
            pts = tuple((float(p), float(t), int(k)) for p, t, k in d["points"])
            tail = cls(n_pairs=int(d["n_pairs"]), points=pts, source=str(d.get("source", "")),
                       mean=float(d.get("mean", 0.0)), std=float(d.get("std", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed impostor tail: {exc}") from None
        tail.check()
        return tail

    def with_independent_pairs(self, n_independent: int, min_beyond: int = 0) -> "ImpostorTail":
        """The same tail, each level's count of pairs beyond scaled to `n_independent` independent pairs. A
        gallery's scores are not independent: every face of identity a against identity b shares the pair (a, b),
        and with one face each, score(a, b) is score(b, a). Its quantiles are as well measured as the number of
        *identity pairs* beyond them, which is what `supports` and `deepest_with` must count. `min_beyond`: how
        many such pairs a quantile needs before `gallery_adjusted` uses it."""
        f = min(1.0, max(int(n_independent), 0) / max(self.n_pairs, 1))
        return ImpostorTail(self.n_pairs, tuple((p, t, int(k * f)) for p, t, k in self.points), self.source,
                            self.mean, self.std, int(min_beyond))

    def to_dict(self) -> dict:
        return {"n_pairs": self.n_pairs, "source": self.source, "mean": round(self.mean, 6),
                "std": round(self.std, 6), "points": [[p, round(t, 6), k] for p, t, k in self.points]}

    def check(self) -> None:
        if self.n_pairs <= 0 or not self.points:
            raise CalibrationError("impostor tail has no points")
        ps = [p for p, _, _ in self.points]
        ts = [t for _, t, _ in self.points]
        if not all(math.isfinite(x) for x in ps + ts) or not all(0 < p < 1 for p in ps):
            raise CalibrationError("impostor tail has non-finite values")
        if not all(-1.0 <= t <= 1.0 for t in ts):
            raise CalibrationError("impostor tail scores must lie in [-1, 1]")
        if any(a <= b for a, b in zip(ps, ps[1:])) or any(a > b for a, b in zip(ts, ts[1:])):
            raise CalibrationError("impostor tail must have p descending and scores ascending")

    # --- reading ----------------------------------------------------------------------------------------
    @property
    def deepest_p(self) -> float:
        """The smallest exceedance probability this tail measures (with >= MIN_EXCEEDANCES pairs beyond)."""
        return self.points[-1][0]

    def supports(self, p: float, min_pairs_beyond: int = MIN_EXCEEDANCES) -> bool:
        q = self.deepest_with(min_pairs_beyond)
        return q is not None and p >= q

    def deepest_with(self, min_pairs_beyond: int) -> float | None:
        """The smallest exceedance level with at least `min_pairs_beyond` pairs beyond it."""
        ok = [q for q, _, k in self.points if k >= min_pairs_beyond]
        return min(ok) if ok else None

    def score_at(self, p: float) -> float:
        """The score that a fraction p of impostor pairs reaches (interpolated linearly in log p; exponential
        extrapolation below the deepest point, clamped at the shallowest)."""
        lp = np.log10([q for q, _, _ in self.points])
        ts = np.array([t for _, t, _ in self.points])
        x = math.log10(max(p, 1e-300))
        if len(ts) == 1:
            return float(ts[0])
        if x >= lp[0]:
            return float(ts[0])
        if x >= lp[-1]:
            return float(np.interp(-x, -lp, ts))
        slope = self._tail_slope(lp, ts)
        return float(min(1.0, ts[-1] + slope * (lp[-1] - x)))

    def p_at(self, score: float) -> float:
        """The fraction of impostor pairs scoring at or above `score` (inverse of score_at)."""
        lp = np.log10([q for q, _, _ in self.points])
        ts = np.array([t for _, t, _ in self.points])
        if score <= ts[0]:
            return float(self.points[0][0]) if len(ts) > 1 or score == ts[0] else 1.0
        if score <= ts[-1]:
            return float(10 ** np.interp(score, ts, lp))
        slope = self._tail_slope(lp, ts)
        return float(10 ** (lp[-1] - (score - ts[-1]) / slope)) if slope > 0 else 0.0

    @staticmethod
    def _tail_slope(lp: np.ndarray, ts: np.ndarray) -> float:
        """Score gained per decade of p over the deepest decade (at least a small positive slope)."""
        deep = lp >= lp[-1] - 1.0 - 1e-9
        i = int(np.argmax(deep))
        if i == len(ts) - 1:
            i = max(0, len(ts) - 2)
        decades = lp[i] - lp[-1]
        return max((ts[-1] - ts[i]) / decades, 1e-3) if decades > 0 else 0.02


def per_comparison_rate(target_fpir: float, n_compared: int) -> float:
    """p* such that N independent comparisons give FPIR = target: 1 - (1 - FPIR) ** (1 / N)."""
    n = max(int(n_compared), 1)
    return -math.expm1(math.log1p(-target_fpir) / n)


def fpir_at(tail: ImpostorTail, threshold: float, n_compared: int) -> float:
    p = tail.p_at(threshold)
    return -math.expm1(max(int(n_compared), 1) * math.log1p(-min(p, 1 - 1e-15)))


@dataclass
class OperatingPoint:
    """The threshold in force for a search over `n_compared` identities, and where it came from."""
    threshold: float
    target_fpir: float | None
    n_compared: int
    per_comparison_rate: float | None
    source: str                       # "calibrated" | "override" | "request" | "default"
    prior_threshold: float | None = None
    gallery_threshold: float | None = None
    extrapolated: bool = False
    warnings: list[str] = field(default_factory=list)
    # Normalised (a `Cohort`): `threshold` applies to score - shift(probe), so each face's cosine threshold is
    # threshold + its own shift, never below `floor` (1:1 verification's cosine threshold: a search is never
    # looser than a verification); `reference_shift` is a typical face's (what `cosine_threshold` reports).
    normalised: bool = False
    reference_shift: float = 0.0
    floor: float = -1.0
    domain_rise: float | None = None  # verification: how much the gallery's domain raised the model's threshold
    selfcheck: dict | None = None     # search: plain vs normalised on the gallery's own searches (model.selfcheck)

    def threshold_for(self, shift: float) -> float:
        """The cosine score a face with this cohort shift needs to match."""
        return max(self.threshold + float(shift), self.floor) if self.normalised else self.threshold

    @property
    def cosine_threshold(self) -> float:
        """The cosine threshold in force (for a normalised operating point: a typical face's)."""
        return self.threshold_for(self.reference_shift)

    def public(self) -> dict:
        r = (lambda x: None if x is None else round(x, 4))
        return {"threshold": round(self.cosine_threshold, 4), "target_fpir": self.target_fpir,
                "compared_identities": self.n_compared,
                "per_comparison_rate": self.per_comparison_rate, "source": self.source,
                "prior_threshold": r(self.prior_threshold), "gallery_threshold": r(self.gallery_threshold),
                "extrapolated": self.extrapolated, "warnings": list(self.warnings),
                "normalisation": "cohort" if self.normalised else None,
                "normalised_threshold": r(self.threshold) if self.normalised else None,
                "floor": r(self.floor) if self.normalised else None, "domain_rise": r(self.domain_rise),
                "normalisation_check": self.selfcheck}


# A gallery's quantile is used (directly, or to place the prior's tail) only where this many of its pairs lie
# beyond it (about 18 % relative error on the rate there). Chosen on the degraded-LFW benchmark
# (`benchmarks/openset.py --domain degraded`): the gallery's own quantiles matched the strangers' to 0.004 in
# cosine down to ~15 pairs beyond, while the prior-shaped extrapolation below overshot (100 gave FPIR 0.0025 at
# N = 1,000 for a target of 0.01, 30 gives 0.007; plain LFW does not move).
GALLERY_MIN_EXCEEDANCES = 30
# Prior-vs-gallery disagreement (ratio of exceedance rates at the gallery's deepest supported quantile)
# above which /ready and /admin/calibration warn.
WARN_FACTOR = 2.0


def gallery_adjusted(prior: ImpostorTail, gallery: ImpostorTail | None, p: float) -> tuple[float | None, str | None]:
    """The gallery's own estimate of the score at exceedance p, and a warning if it disagrees with the prior.

    Rule: where the gallery measures p itself (>= GALLERY_MIN_EXCEEDANCES pairs beyond), its own quantile. Where it
    does not, the prior's tail is mapped onto the gallery's scale: an affine map of scores that sends the
    prior's median and its quantile at the gallery's deepest supported level q onto the gallery's, applied
    to the prior's score at p. The tail's shape below q comes from the prior, its location and spread from
    the deployment's own pairs.
    """
    if gallery is None or not gallery.points:
        return None, None
    q = gallery.deepest_with(max(GALLERY_MIN_EXCEEDANCES, gallery.min_beyond))
    if q is None:
        return None, None
    warning = None
    ratio = q / max(prior.p_at(gallery.score_at(q)), 1e-300)
    if ratio > WARN_FACTOR or ratio < 1 / WARN_FACTOR:
        warning = (f"the gallery's impostor pairs exceed the model's calibrated score at p={q:g} "
                   f"{ratio:.1f}x as often as the calibration predicts: this deployment's faces differ from "
                   "the calibration set's; the operating point follows the gallery")
    if p >= q:
        return gallery.score_at(p), warning
    lo = 0.5 if gallery.points[0][0] >= 0.5 else gallery.points[0][0]
    g_lo, g_q = gallery.score_at(lo), gallery.score_at(q)
    p_lo, p_q = prior.score_at(lo), prior.score_at(q)
    scale = (g_q - g_lo) / (p_q - p_lo) if p_q - p_lo > 1e-6 else 1.0
    scale = max(scale, 0.0)
    return float(min(1.0, g_q + scale * (prior.score_at(p) - p_q))), warning


def operating_point(prior: ImpostorTail, target_fpir: float, n_compared: int,
                    gallery: ImpostorTail | None = None, max_rate: float = 1.0,
                    comparisons_factor: float = 1.0) -> OperatingPoint:
    """Threshold for `target_fpir` over `n_compared` identities: the prior's quantile at p*, raised to the
    gallery's own estimate where that is higher (the more conservative of the two). `max_rate` caps p*
    (a search never accepts what 1:1 verification at that false-accept rate would reject).

    `comparisons_factor` (kappa): a probe's scores against the identities of one gallery are not
    independent (a probe that resembles many people scores high against all of them), so the best of N
    behaves like the best of about kappa * N independent comparisons. 1.0 is the independent (conservative)
    bound; a checkpoint's calibration states its measured kappa (`search_comparisons_factor`)."""
    n_eff = max(1, int(round(comparisons_factor * max(int(n_compared), 1))))
    p = min(per_comparison_rate(target_fpir, n_eff), max_rate)
    t_prior = prior.score_at(p)
    t_gal, warning = gallery_adjusted(prior, gallery, p)
    thr = max(t_prior, t_gal) if t_gal is not None else t_prior
    used_gallery = t_gal is not None and t_gal > t_prior
    extrapolated = not (gallery.supports(p, GALLERY_MIN_EXCEEDANCES) if used_gallery else prior.supports(p))
    op = OperatingPoint(threshold=thr, target_fpir=target_fpir, n_compared=max(int(n_compared), 1),
                        per_comparison_rate=p, source="calibrated", prior_threshold=t_prior,
                        gallery_threshold=t_gal, extrapolated=extrapolated)
    if warning:
        op.warnings.append(warning)
    if not prior.supports(p):
        op.warnings.append(f"the model's calibration measures impostor rates down to {prior.deepest_p:g}; "
                           f"this gallery needs {p:.2g} (extrapolated)")
    return op


def pick_identities(labels: np.ndarray, max_faces: int, seed: int = 0) -> np.ndarray:
    """Rows of all the faces of a random subset of identities, at most `max_faces` faces (at least one
    identity): what a gallery's self-calibration samples, so that each sampled identity is whole."""
    labels = np.asarray(labels)
    if len(labels) <= max_faces:
        return np.arange(len(labels))
    uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq)).tolist()
    keep, total = [], 0
    for i in order:  # identities that do not fit are skipped (one huge identity does not starve the sample)
        if total + counts[i] <= max_faces:
            keep.append(i)
            total += int(counts[i])
    return np.flatnonzero(np.isin(inv, keep or order[:1]))


def search_impostor_scores(emb: np.ndarray, labels: np.ndarray, scoring: str = "template",
                           shift: np.ndarray | None = None) -> np.ndarray:
    """A gallery's own impostor scores, as a stranger's search meets them: each face against every *other*
    identity, the identity scored the way the search scores it (`template`: the normalised mean of its
    faces; `face`: its best face). One score per (face, other identity). With one face per identity this is
    every different-identity pair (in both directions); with several, the template scores are what a
    face-to-face tail would underestimate (a mean of k faces scores higher against a stranger than one face).
    `shift` (per face, a `Cohort`'s) is subtracted from each face's scores: the normalised search scores."""
    emb = np.asarray(emb, dtype=np.float32)
    uniq, inv = np.unique(np.asarray(labels), return_inverse=True)
    if len(uniq) < 2:
        return np.zeros(0, np.float32)
    scores = search_score_matrix(emb, inv, len(uniq), scoring)
    if shift is not None:
        scores = scores - np.asarray(shift, dtype=np.float32)[:, None]
    own = np.zeros(scores.shape, bool)
    own[np.arange(len(emb)), inv] = True
    return scores[~own]


def search_score_matrix(emb: np.ndarray, inv: np.ndarray, k: int, scoring: str = "template",
                        templates: np.ndarray | None = None) -> np.ndarray:
    """(faces, identities) scores of each face against each of the `k` identities (`inv`: each face's identity
    row) as a search scores an identity: `template`, the normalised mean of its faces (`templates` when the
    caller has them); `face`, its best face."""
    emb = np.asarray(emb, dtype=np.float32)
    if scoring == "template":
        if templates is None:
            sums = np.zeros((k, emb.shape[1]), np.float64)
            np.add.at(sums, inv, emb)
            templates = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return emb @ templates.T
    if scoring == "face":
        order = np.argsort(inv, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(inv, minlength=k))[:-1]]
        return np.maximum.reduceat(emb @ emb[order].T, starts, axis=1)
    raise ValueError(f"unknown scoring {scoring!r}")


# --- probe normalisation by a fixed cohort --------------------------------------------------------------------
# Chosen on LFW with `benchmarks/openset.py` (cohort people excluded from its searches): 128 k-means centroids of
# 1,500 one-image people, a probe's shift = 0.5 x the mean of its 3 best centroid scores. Over 4 cohort draws the
# largest gallery's FNIR at FPIR 0.01 went 0.419 -> 0.323 (1 photo enrolled) and 0.267 -> 0.180 (3 photos);
# 32 or 64 centroids, the best 1 or 5, weights 0.4-0.7 were each worse on average.
COHORT_PEOPLE = 1500
COHORT_CENTROIDS = 128
COHORT_TOP = 3
COHORT_WEIGHT = 0.5
COHORT_MIN_MEMBERS = 5   # a centroid stands for at least this many people (none describes one person)


@dataclass(frozen=True)
class Cohort:
    """Probe normalisation: `shift(e) = weight * mean of the `top` best scores of e against the centroids`."""
    centroids: np.ndarray            # (k, d) unit rows, float32
    top: int = COHORT_TOP
    weight: float = COHORT_WEIGHT
    reference_shift: float = 0.0     # the median shift over the reference faces (a typical face's)
    source: str = ""

    def shift(self, emb: np.ndarray) -> np.ndarray:
        """(n,) the amount each embedding's scores are lowered by before comparing with the threshold."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"embeddings of shape {emb.shape} for a cohort of {self.centroids.shape[1]}-d centroids")
        if not len(emb):
            return np.zeros(0, np.float32)
        top = min(self.top, len(self.centroids))
        best = -np.partition(-(emb @ self.centroids.T), top - 1, axis=1)[:, :top]
        return (self.weight * best.mean(axis=1)).astype(np.float32)

    @classmethod
    def build(cls, emb: np.ndarray, k: int = COHORT_CENTROIDS, seed: int = 0, source: str = "",
              iterations: int = 50) -> "Cohort":
        """Spherical k-means of one embedding per cohort person; centroids with fewer than COHORT_MIN_MEMBERS
        members are dropped."""
        x = np.asarray(emb, dtype=np.float32)
        k = max(1, min(k, len(x) // (2 * COHORT_MIN_MEMBERS)))  # clusters well above the drop limit
        rng = np.random.default_rng(seed)
        c = x[rng.choice(len(x), k, replace=False)].copy()
        for _ in range(iterations):
            assign = (x @ c.T).argmax(axis=1)
            for j in range(k):
                members = x[assign == j]
                if len(members):
                    v = members.mean(axis=0)
                    c[j] = v / max(float(np.linalg.norm(v)), 1e-12)
        assign = (x @ c.T).argmax(axis=1)
        keep = np.bincount(assign, minlength=k) >= COHORT_MIN_MEMBERS
        cohort = cls(np.ascontiguousarray(c[keep]), source=source)
        return cls(cohort.centroids, reference_shift=float(np.median(cohort.shift(x))), source=source)

    def to_dict(self) -> dict:
        raw = np.ascontiguousarray(self.centroids, dtype="<f2").tobytes()
        return {"centroids": base64.b64encode(raw).decode("ascii"), "shape": list(self.centroids.shape),
                "dtype": "float16", "top": self.top, "weight": self.weight,
                "reference_shift": round(self.reference_shift, 6), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Cohort":
        try:
            k, dim = (int(v) for v in d["shape"])
            c = np.frombuffer(base64.b64decode(d["centroids"]), dtype="<f2").astype(np.float32).reshape(k, dim)
            top, weight, ref = int(d.get("top", COHORT_TOP)), float(d.get("weight", COHORT_WEIGHT)), \
                float(d.get("reference_shift", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"malformed cohort: {exc}") from None
        if k < 1 or top < 1 or not np.isfinite(c).all() or not (math.isfinite(weight) and 0 <= weight <= 1) \
                or not math.isfinite(ref):
            raise CalibrationError("malformed cohort: empty, non-finite or out-of-range values")
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        return cls(c, top=top, weight=weight, reference_shift=ref, source=str(d.get("source", "")))


def cohort_people(labels, n: int = COHORT_PEOPLE, seed: int = 0) -> set[str]:
    """The reference people a cohort is built from: `n` of those with exactly one image (people with several are
    what galleries and mated searches need), chosen by `seed` from the sorted labels; all one-image people when
    there are fewer."""
    labels = [str(x) for x in labels]
    uniq, counts = np.unique(labels, return_counts=True)
    single = sorted(str(u) for u, c in zip(uniq, counts) if c == 1)
    if len(single) <= n:
        return set(single)
    return {str(x) for x in np.random.default_rng(seed).choice(single, n, replace=False)}


def pair_scores(emb: np.ndarray, labels, shift: np.ndarray | None = None, block: int = 2048) -> np.ndarray:
    """Impostor scores (float32) of every different-label pair, computed in row blocks to bound memory: each
    unordered pair once; with `shift` (per row), every ordered pair (i, j) as score(i, j) - shift(i), since
    either face can be the probe."""
    emb = np.asarray(emb, dtype=np.float32)
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    out = []
    for start in range(0, len(emb), block):
        rows = np.arange(start, min(start + block, len(emb)))
        sims = emb[rows] @ emb.T
        keep = lab[None, :] != lab[rows][:, None]
        if shift is None:
            keep &= np.arange(len(emb))[None, :] > rows[:, None]
        else:
            sims -= np.asarray(shift, dtype=np.float32)[rows][:, None]
        out.append(sims[keep])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def normalised_pair_scores(emb: np.ndarray, labels, cohort: Cohort, block: int = 2048) -> np.ndarray:
    """The normalised impostor scores a checkpoint's search tail is measured on (`pair_scores` less each
    probe's cohort shift)."""
    return pair_scores(emb, labels, cohort.shift(np.asarray(emb, dtype=np.float32)), block)
