"""Which normalisation a gallery's searches should use, decided from the gallery's own faces.

A checkpoint's cohort (`model.calibration.cohort.Cohort`) was chosen on its reference set; it does not transfer to every
camera (on a hidden in-the-wild set it was worse than plain cosine). A gallery whose identities have several faces
can measure both rules itself: each face of such an identity searches the gallery with itself left out of its
identity (a mated search), and every face searches the other identities as a stranger would (a non-mated search).
The cohort is kept only where its FNIR, averaged over FPIR 0.01 to 0.1, is lower than plain cosine's on these
searches; a gallery with too few of them keeps the checkpoint's choice.

A gallery of one face per identity has no mated searches. It still has its own impostor pairs, plain and normalised:
where the normalised ones exceed the cohort's calibration far more often than the plain ones exceed the model's
(`cohort_fits`), the cohort does not describe this domain's faces (on grayscale low-resolution crops its tail is off
12x to 34x where the plain tail is off 4x to 14x), and searches use plain scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.calibration.operating_point import GALLERY_MIN_EXCEEDANCES
from model.calibration.pairs import search_score_matrix
from model.calibration.tail import ImpostorTail

# The FPIRs the two rules are compared at (a mean over several: at 0.01 alone a few hundred searches are noise).
SELF_CHECK_FPIRS = (0.01, 0.02, 0.05, 0.1)
# A gallery decides for itself only with at least this many mated and non-mated searches.
SELF_CHECK_MIN_MATED = 100
SELF_CHECK_MIN_NONMATED = 500


@dataclass(frozen=True)
class SelfCheck:
    mated: int
    nonmated: int
    fnir_plain: float | None       # mean FNIR over SELF_CHECK_FPIRS
    fnir_normalised: float | None
    normalise: bool | None         # None: too few searches to decide (the checkpoint's choice stands)
    fpirs: tuple[float, ...] = SELF_CHECK_FPIRS


def leave_one_out(emb: np.ndarray, labels, scoring: str = "template", exclude=()):
    """(own, best_other, mated): per face, its score against its own identity without it (-inf where the
    identity has no other face), its best score against any other identity (not counting the label pairs in
    `exclude`: suspected duplicates), and whether it has a mated search."""
    emb = np.asarray(emb, dtype=np.float32)
    uniq, inv = np.unique(np.asarray(labels), return_inverse=True)
    k = len(uniq)
    scores = search_score_matrix(emb, inv, k, scoring)
    rows = np.arange(len(emb))
    counts = np.bincount(inv, minlength=k)
    mated = counts[inv] >= 2
    if scoring == "template":
        sums = np.zeros((k, emb.shape[1]), np.float64)
        np.add.at(sums, inv, emb)
        rest = sums[inv] - emb                       # each face's identity without it
        norm = np.linalg.norm(rest, axis=1)
        own = np.where(mated, np.einsum("ij,ij->i", emb, rest) / np.maximum(norm, 1e-12), -np.inf)
    else:
        sims = emb @ emb.T
        sims[rows, rows] = -np.inf
        same = inv[:, None] == inv[None, :]
        own = np.where(same, sims, -np.inf).max(axis=1)
    other = scores.copy()
    other[rows, inv] = -np.inf
    col = {u.item() if hasattr(u, "item") else u: i for i, u in enumerate(uniq)}
    for a, b in exclude:
        if a in col and b in col:
            other[inv == col[a], col[b]] = -np.inf
            other[inv == col[b], col[a]] = -np.inf
    best_other = other.max(axis=1) if k > 1 else np.full(len(emb), -np.inf)
    return own.astype(np.float64), best_other.astype(np.float64), mated


def mean_fnir(own: np.ndarray, best_other: np.ndarray, mated: np.ndarray, fpirs=SELF_CHECK_FPIRS) -> float:
    """FNIR of the mated searches (a miss: not ranked first, or below the threshold) at thresholds set on the
    non-mated ones (every face's best other identity) for each FPIR, averaged."""
    non = np.sort(best_other[np.isfinite(best_other)])[::-1]
    hit_rank = own[mated] > best_other[mated]
    out = []
    for f in fpirs:
        j = int(np.floor(f * len(non)))
        thr = np.nextafter(non[j], np.inf) if j < len(non) else non[-1]
        out.append(1.0 - float(np.mean(hit_rank & (own[mated] >= thr))))
    return float(np.mean(out))


def self_check(emb: np.ndarray, labels, shift: np.ndarray, scoring: str = "template", exclude=()) -> SelfCheck:
    """Plain cosine against scores less each face's `shift` (a cohort's), on the gallery's own searches
    (`exclude`: label pairs of suspected duplicates, not strangers to each other)."""
    own, best, mated = leave_one_out(emb, labels, scoring, exclude)
    n_mated, n_non = int(mated.sum()), int(np.isfinite(best).sum())
    if n_mated < SELF_CHECK_MIN_MATED or n_non < SELF_CHECK_MIN_NONMATED:
        return SelfCheck(n_mated, n_non, None, None, None)
    shift = np.asarray(shift, np.float64)
    plain = mean_fnir(own, best, mated)
    normalised = mean_fnir(own - shift, best - shift, mated)
    return SelfCheck(n_mated, n_non, plain, normalised, normalised < plain)


# The cohort is dropped where its normalised tail departs from its calibration this many times more than the plain
# tail departs from the model's (ratios of exceedance rates at the gallery's deepest well-measured level).
COHORT_FIT_FACTOR = 2.0


def misfit(prior: ImpostorTail, gallery: ImpostorTail | None) -> float | None:
    """How many times more often the gallery's pairs exceed the prior's score at the gallery's deepest
    well-measured level (<1: less often); None where the gallery measures no level well."""
    q = gallery.deepest_with(max(GALLERY_MIN_EXCEEDANCES, gallery.min_beyond)) \
        if gallery is not None and gallery.points else None
    if q is None:
        return None
    return q / max(prior.p_at(gallery.score_at(q)), 1e-300)


def cohort_fits(prior: ImpostorTail, prior_normalised: ImpostorTail, gallery: ImpostorTail | None,
                gallery_normalised: ImpostorTail | None) -> tuple[bool | None, float | None, float | None]:
    """(whether the cohort describes this gallery's faces as well as plain scores do, None: cannot tell; the plain
    and normalised misfits)."""
    plain, norm = misfit(prior, gallery), misfit(prior_normalised, gallery_normalised)
    if plain is None or norm is None:
        return None, plain, norm
    return norm <= COHORT_FIT_FACTOR * max(plain, 1.0), plain, norm
