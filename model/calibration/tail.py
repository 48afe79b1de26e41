"""Impostor-score tails: the upper tail of a different-person score distribution, and the FPIR it gives.

A 1:N search compares a stranger's probe with every identity in the gallery, so the false-positive
identification rate (FPIR) at a threshold t is the chance that the best of N impostor scores reaches t:

    FPIR(t, N) = 1 - (1 - p(t)) ** N,  p(t) = P(impostor score >= t)

For a target FPIR the per-comparison rate is p* = 1 - (1 - FPIR) ** (1 / N) (about FPIR / N), and the
threshold is the impostor distribution's upper quantile at p*. `ImpostorTail` keeps that upper tail as
(p, score) points, each with the number of impostor pairs beyond it; a quantile is "supported" when at
least `MIN_EXCEEDANCES` pairs lie beyond it. Below the deepest supported point the tail is extrapolated as
exponential (log p linear in the score), fitted on its last decade, and flagged.

The same representation describes a gallery's own impostor pairs (issue: calibrate in the deployment's
domain); `model.calibration.operating_point` turns a checkpoint's tail (prior) and a gallery's tail into one
operating point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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

