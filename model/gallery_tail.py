"""A gallery's own impostor tails, as the service measures them, and the decisions they feed (pure functions:
the service's `OperatingPoints` and the benchmarks call the same code).

`measure_gallery`: each sampled face against the other identities as a search scores them, less the pairs of
suspected duplicate identities, censored at the same-person threshold (`model.duplicates`), counted in identity
pairs with N/4 of them needed beyond a used quantile. The same-person threshold includes the domain rise of 1:1
verification (a domain whose faces score high against each other needs more to call two identities one person),
so what is left out of the tail is exactly what `GET /identities/duplicates` lists.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.calibration.operating_point import OperatingPoint, gallery_adjusted
from model.calibration.tail import ImpostorTail
from model.duplicates import duplicate_threshold, gallery_min_beyond, robust_impostor_scores
from model.selfcheck import SelfCheck, cohort_fits, self_check

# Verification (1:1) decides on the model's tail at FACEID_TARGET_FAR. A gallery of at least this many identities
# may raise it for its own domain (its faces score higher against each other than the calibration set's), by at
# most VERIFY_MAX_DOMAIN_RISE: below it, who else is enrolled never changes a 1:1 answer.
VERIFY_DOMAIN_MIN_IDENTITIES = 50
VERIFY_MAX_DOMAIN_RISE = 0.15


def verification_point(prior: ImpostorTail, target_far: float, n_identities: int,
                       gallery: ImpostorTail | None) -> OperatingPoint:
    """1:1 verification's operating point: the model's tail at `target_far`, raised by the gallery's own
    (de-duplicated, censored) tail where the gallery has VERIFY_DOMAIN_MIN_IDENTITIES identities or more, by at
    most VERIFY_MAX_DOMAIN_RISE."""
    p = target_far
    t_prior = prior.score_at(p)
    t_gal, warning, rise = None, None, 0.0
    if n_identities >= VERIFY_DOMAIN_MIN_IDENTITIES:
        t_gal, warning = gallery_adjusted(prior, gallery, p)
        rise = min(max((t_prior if t_gal is None else t_gal) - t_prior, 0.0), VERIFY_MAX_DOMAIN_RISE)
    warnings = [warning] if warning else []
    if t_gal is not None and t_gal - t_prior > VERIFY_MAX_DOMAIN_RISE:
        warnings.append(f"the gallery's own pairs would raise the 1:1 threshold by {t_gal - t_prior:.3f}; "
                        f"it is raised by at most {VERIFY_MAX_DOMAIN_RISE}")
    return OperatingPoint(threshold=t_prior + rise, target_fpir=None, n_compared=1, per_comparison_rate=p,
                          source="calibrated", prior_threshold=t_prior, gallery_threshold=t_gal,
                          extrapolated=not prior.supports(p), warnings=tuple(warnings), domain_rise=rise,
                          target_far=target_far)


@dataclass(frozen=True)
class GalleryTails:
    tail: ImpostorTail | None                # plain scores
    normalised: ImpostorTail | None          # the same pairs, each lowered by its face's cohort shift
    duplicates: tuple                        # identity pairs of the sample left out as suspected duplicates
    same_person: float                       # the template score from which two identities are one person
    domain_rise: float                       # of the 1:1 threshold (0 below VERIFY_DOMAIN_MIN_IDENTITIES)
    selfcheck: SelfCheck | None              # plain vs normalised on the gallery's own searches
    source: str = ""


def measure_gallery(vectors: np.ndarray, labels: np.ndarray, scoring: str, prior: ImpostorTail | None,
                    n_identities: int, target_far: float, shift: np.ndarray | None = None,
                    distinct: set | None = None) -> GalleryTails:
    """The tails of a gallery sample (`vectors`, their identity `labels`) of a gallery of `n_identities`.
    `prior`: the model's plain 1:1 tail (None: no duplicate is recognised, nothing is censored); `shift`: each
    face's cohort shift (for the normalised tail and the self-check); `distinct`: label pairs said to be two
    people."""
    k = len(np.unique(labels))
    pairs, beyond = k * (k - 1) // 2, gallery_min_beyond(k)

    def tails(same: float):
        scores, shifted, dups = robust_impostor_scores(vectors, labels, scoring, same, distinct, shift)
        src = (f"gallery: {len(vectors)} faces ({k} identities), each against the other identities as a search "
               f"scores them, less {len(dups)} suspected duplicate pairs, censored at {same:.3f}")
        plain = ImpostorTail.from_scores(scores, source=src).with_independent_pairs(pairs, beyond) \
            if len(scores) else None
        norm = ImpostorTail.from_scores(shifted, source=src + ", less each face's cohort shift") \
            .with_independent_pairs(pairs, beyond) if shifted is not None and len(shifted) else None
        return plain, norm, dups, src

    same, rise = (duplicate_threshold(prior, n_identities), 0.0) if prior is not None else (1.0, 0.0)
    plain, norm, dups, src = tails(same)
    if prior is not None:  # a domain that raises 1:1 verification raises the same-person threshold with it
        rise = verification_point(prior, target_far, n_identities, plain).domain_rise or 0.0
        if rise > 0:
            same += rise
            plain, norm, dups, src = tails(same)
    check = self_check(vectors, labels, shift, scoring, dups) if shift is not None and len(vectors) else None
    return GalleryTails(plain, norm, tuple(dups), same, rise, check, src)


@dataclass(frozen=True)
class NormalisationChoice:
    """Whether a gallery's searches keep the cohort, and what that was decided on."""
    cohort: bool
    selfcheck: SelfCheck | None              # its own leave-one-out searches (None: not measured)
    misfit_plain: float | None               # how far its plain pairs depart from the model's tail
    misfit_normalised: float | None          # ... and its normalised pairs from the cohort's
    cohort_fits: bool | None                 # None: nothing to compare


def normalisation_choice(prior: ImpostorTail | None, prior_normalised: ImpostorTail,
                         tails: GalleryTails | None) -> NormalisationChoice | None:
    """Whether this gallery's searches keep the cohort (`model.selfcheck`): not where its own leave-one-out
    searches find plain scores as good, nor where its normalised pairs depart from the cohort's calibration more
    than COHORT_FIT_FACTOR times as much as its plain pairs depart from the model's. None: nothing measured."""
    if tails is None:
        return None
    fits, plain, normalised = cohort_fits(prior, prior_normalised, tails.tail, tails.normalised) \
        if prior is not None else (None, None, None)
    check = tails.selfcheck
    cohort = not (check is not None and check.normalise is False) and fits is not False
    return NormalisationChoice(cohort, check, plain, normalised, fits)
