"""The open-set operating point: the threshold in force for a search (or a 1:1 verification), derived from a
checkpoint's impostor tail (the prior) and, where it has one, the gallery's own tail.

An `OperatingPoint` is a value: frozen, with its warnings a tuple; callers that refine one (normalised scores,
a floor, the gallery's self-check) make a new one with `dataclasses.replace`. Its answer shape in the API is
the app's (`app.services.operating_point.operating_point_public`), not this module's.
"""
from __future__ import annotations

from dataclasses import dataclass

from model.calibration.tail import ImpostorTail, per_comparison_rate


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold in force for a search over `n_compared` identities, and where it came from.

    A search's target is `target_fpir`; a 1:1 verification's is `target_far` (its `target_fpir` is None:
    a verification is not an identification)."""
    threshold: float
    target_fpir: float | None
    n_compared: int
    per_comparison_rate: float | None
    source: str                       # "calibrated" | "override" | "request" | "checkpoint"
    prior_threshold: float | None = None
    gallery_threshold: float | None = None
    extrapolated: bool = False
    warnings: tuple[str, ...] = ()
    # Normalised (a `Cohort`): `threshold` applies to score - shift(probe), so each face's cosine threshold is
    # threshold + its own shift, never below `floor` (1:1 verification's cosine threshold: a search is never
    # looser than a verification); `reference_shift` is a typical face's (what `cosine_threshold` reports).
    normalised: bool = False
    reference_shift: float = 0.0
    floor: float = -1.0
    domain_rise: float | None = None  # verification: how much the gallery's domain raised the model's threshold
    # search: plain vs normalised on the gallery's own searches (a `model.gallery_tail.NormalisationChoice`)
    normalisation_check: object | None = None
    target_far: float | None = None   # verification: the false-accept rate the threshold is derived for

    def threshold_for(self, shift: float) -> float:
        """The cosine score a face with this cohort shift needs to match."""
        return max(self.threshold + float(shift), self.floor) if self.normalised else self.threshold

    @property
    def cosine_threshold(self) -> float:
        """The cosine threshold in force (for a normalised operating point: a typical face's)."""
        return self.threshold_for(self.reference_shift)


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
    warnings = [warning] if warning else []
    if not prior.supports(p):
        warnings.append(f"the model's calibration measures impostor rates down to {prior.deepest_p:g}; "
                        f"this gallery needs {p:.2g} (extrapolated)")
    return OperatingPoint(threshold=thr, target_fpir=target_fpir, n_compared=max(int(n_compared), 1),
                          per_comparison_rate=p, source="calibrated", prior_threshold=t_prior,
                          gallery_threshold=t_gal, extrapolated=extrapolated, warnings=tuple(warnings))
