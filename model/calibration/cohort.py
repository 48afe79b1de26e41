"""Probe normalisation by a fixed cohort.

Searches are decided on probe-normalised scores where the checkpoint carries a `Cohort`: a probe that
resembles many people (a "hub") scores high against every identity, strangers included, so its best score
says less. The cohort (centroids of a fixed set of reference faces) measures that per probe, and the search
compares `score - shift(probe)` with a threshold taken from the tail of the same normalised scores. The
ranking of identities is unchanged (the shift is the probe's own); only how high the best must score moves.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np

from model.calibration.tail import CalibrationError

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

