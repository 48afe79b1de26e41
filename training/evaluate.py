"""Verification metrics: ROC, AUC, TAR at FAR, best accuracy, 10-fold accuracy, threshold calibration.

Scores are cosine similarities (higher = more alike); `issame` is a boolean array of the same length.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def roc(scores: np.ndarray, issame: np.ndarray):
    """(far, tar, thresholds) with thresholds descending; a pair is accepted when score >= threshold."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], issame[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(~y)[distinct]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    far = np.r_[0.0, fp / n_neg]
    tar = np.r_[0.0, tp / n_pos]
    thresholds = np.r_[np.inf, s[distinct]]
    return far, tar, thresholds


def auc(far: np.ndarray, tar: np.ndarray) -> float:
    return float(np.trapezoid(tar, far)) if hasattr(np, "trapezoid") else float(np.trapz(tar, far))


def tar_at_far(scores, issame, target_far: float) -> tuple[float, float]:
    """(TAR, threshold) at the largest FAR not above `target_far`."""
    far, tar, thr = roc(scores, issame)
    ok = np.nonzero(far <= target_far)[0]
    i = ok[-1]
    return float(tar[i]), float(thr[i])


def accuracy(scores, issame, threshold: float) -> float:
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(issame, dtype=bool)))


def best_threshold(scores, issame) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; the threshold sits midway between neighbouring scores."""
    s = np.sort(np.unique(np.asarray(scores, dtype=np.float64)))
    candidates = np.r_[s[0] - 1e-6, (s[:-1] + s[1:]) / 2, s[-1] + 1e-6]
    y = np.asarray(issame, dtype=bool)
    sc = np.asarray(scores, dtype=np.float64)
    # vectorised over candidates via sorting: accepted same + rejected different
    order = np.argsort(sc)
    ys = y[order]
    pos_below = np.r_[0, np.cumsum(ys)]            # same pairs with score < candidate (rejected)
    neg_below = np.r_[0, np.cumsum(~ys)]           # different pairs rejected
    idx = np.searchsorted(sc[order], candidates, side="left")
    correct = (y.sum() - pos_below[idx]) + neg_below[idx]
    k = int(np.argmax(correct))
    return float(candidates[k]), float(correct[k] / len(y))


def kfold_accuracy(scores, issame, folds: np.ndarray) -> dict:
    """Threshold chosen on the other folds, accuracy scored on each fold (the LFW protocol)."""
    scores, issame, folds = np.asarray(scores), np.asarray(issame, dtype=bool), np.asarray(folds)
    accs, thresholds = [], []
    for f in np.unique(folds):
        train, test = folds != f, folds == f
        thr, _ = best_threshold(scores[train], issame[train])
        thresholds.append(thr)
        accs.append(accuracy(scores[test], issame[test], thr))
    return {"accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "fold_accuracies": [round(a, 4) for a in accs], "threshold_mean": float(np.mean(thresholds))}


def verification_report(scores, issame) -> dict:
    far, tar, _ = roc(scores, issame)
    thr_best, acc_best = best_threshold(scores, issame)
    out = {"pairs": int(len(scores)), "same_pairs": int(np.sum(issame)), "auc": auc(far, tar),
           "best_accuracy": acc_best, "best_accuracy_threshold": thr_best}
    for target in (1e-3, 1e-2):
        t, th = tar_at_far(scores, issame, target)
        out[f"tar_at_far_{target:g}"] = t
        out[f"threshold_at_far_{target:g}"] = th
    return out


def plot_roc(scores, issame, path, label: str = "model") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar, _ = roc(scores, issame)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.semilogx(np.clip(far, 1e-5, 1), tar, label=label)
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def impostor_calibration(emb: np.ndarray, names: list, fars=(1e-3, 1e-4, 1e-5)) -> dict:
    """Thresholds at low FAR over *all* different-person pairs of the images (millions, not 3,000):
    identification compares a probe with every enrolled person, so it needs a per-comparison FAR far
    below what pairs.txt can measure."""
    labels = np.unique(names, return_inverse=True)[1]
    sims = emb @ emb.T
    iu = np.triu_indices(len(emb), k=1)
    s, diff = sims[iu], labels[iu[0]] != labels[iu[1]]
    imp = np.sort(s[diff])[::-1]
    gen = s[~diff]
    out = {"impostor_pairs": int(len(imp)), "genuine_pairs": int(len(gen))}
    for far in fars:
        thr = float(imp[int(far * len(imp))])
        out[f"all_pairs_threshold_at_far_{far:g}"] = thr
        out[f"all_pairs_tar_at_far_{far:g}"] = float(np.mean(gen > thr))
    return out


def calibrated_threshold(emb: np.ndarray, labels, far: float = 1e-3) -> dict:
    """{"cosine": threshold at `far` over all different-person pairs, "calibration": how} for a checkpoint."""
    cal = impostor_calibration(emb, list(labels), fars=(far,))
    return {"cosine": round(cal[f"all_pairs_threshold_at_far_{far:g}"], 4),
            "calibration": f"all {cal['impostor_pairs']} different-person pairs of {len(emb)} images, FAR {far:g}",
            "tar_at_that_far": round(cal[f"all_pairs_tar_at_far_{far:g}"], 4)}


def impostor_pair_scores(emb: np.ndarray, labels, block: int = 2048) -> np.ndarray:
    """Every different-label pair's cosine score (float32), computed in row blocks to bound memory."""
    from model.calibration.pairs import pair_scores

    return pair_scores(emb, labels, block=block)


def calibrate(emb: np.ndarray, labels, source: str, verify_far: float = 1e-3) -> dict:
    """A checkpoint's `thresholds`: the impostor tail over all different-label pairs of `emb` (what the
    service derives its open-set operating point from) and a fixed 1:1 threshold at `verify_far`."""
    from model.calibration.tail import ImpostorTail

    scores = impostor_pair_scores(emb, labels)
    tail = ImpostorTail.from_scores(scores, source=f"{source}: {len(scores)} different-person pairs of "
                                                   f"{len(emb)} images")
    del scores
    out = {"cosine": round(tail.score_at(verify_far), 4), "impostor_tail": tail.to_dict(),
           "calibration": f"{tail.source}; cosine at FAR {verify_far:g}",
           "supported_down_to": tail.deepest_p}
    normalised, why_not = cohort_calibration(emb, labels, source)
    if normalised is not None:
        out["normalised"] = normalised
    else:  # searches with this checkpoint are decided on plain scores: say so where the calibration is reported
        out["calibration"] += f"; no cohort normalisation: {why_not}"
        log.warning("calibration from %s: no cohort normalisation (%s); searches will use plain scores",
                    source, why_not)
    return out


# Fewer one-image reference people than this: no cohort (searches are decided on plain scores).
MIN_COHORT_PEOPLE = 200
# The normalised tail takes at most this many images of a person (chosen at random, seed 0), so that it weighs
# people rather than photos: LFW's 530 photos of one man otherwise weigh on the pairs as much as 530 people do,
# and the tail then depends on which people are in the reference set. Measured with benchmarks/openset.py:
# uncapped, a search over N identities behaved like 0.31-0.56 N comparisons against the tail of all LFW and
# 0.83-1.26 N against a tail of the other half of LFW's people; capped at 3, 0.69-0.90 N and 0.90-1.37 N.
MAX_IMAGES_PER_PERSON = 3
# A normalised tail that cannot reach this rate (FPIR 0.01 over 100 identities) is not shipped.
MIN_NORMALISED_RATE = 1e-4


def capped_rows(labels, cap: int, seed: int = 0) -> np.ndarray:
    """Rows of at most `cap` images per label (a random choice, `seed`), sorted; None labels are skipped."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            by.setdefault(lab, []).append(i)
    rows = [r for lab in sorted(by) for r in (by[lab] if len(by[lab]) <= cap
                                               else rng.choice(by[lab], cap, replace=False).tolist())]
    return np.array(sorted(rows), dtype=np.int64)


def cohort_calibration(emb: np.ndarray, labels, source: str) -> tuple[dict | None, str | None]:
    """A search normalisation (`model.calibration.cohort.Cohort`) and the tail of normalised impostor scores: the cohort
    is built from one-image reference people (`cohort_people`), the tail from every ordered different-person pair
    of the other images. Returns (it, None), or (None, why) when the reference set has too few one-image people
    or the tail cannot reach MIN_NORMALISED_RATE. Its
    `search_comparisons_factor` is left at the conservative 1.0: only an open-set benchmark measures it."""
    import dataclasses

    from model.calibration.cohort import COHORT_CENTROIDS, COHORT_MIN_MEMBERS, Cohort, cohort_people
    from model.calibration.pairs import normalised_pair_scores
    from model.calibration.tail import ImpostorTail

    labels = [str(x) for x in labels]
    people = cohort_people(labels)
    if len(people) < MIN_COHORT_PEOPLE:
        return None, (f"the reference set has {len(people)} people with one image, {MIN_COHORT_PEOPLE} needed "
                      "(e.g. --reference-dir ../shared/faces/lfw)")
    in_cohort = np.array([lab in people for lab in labels])
    cohort = Cohort.build(np.asarray(emb)[in_cohort], COHORT_CENTROIDS)
    rest = capped_rows([lab if not c else None for lab, c in zip(labels, in_cohort)], MAX_IMAGES_PER_PERSON)
    scores = normalised_pair_scores(np.asarray(emb)[rest], [labels[i] for i in rest], cohort)
    tail = ImpostorTail.from_scores(scores, source=f"{source}: {len(scores)} ordered different-person pairs of "
                                                   f"{len(rest)} images (at most {MAX_IMAGES_PER_PERSON} a person, "
                                                   "cohort people left out), less the probe's cohort shift")
    if not tail.supports(MIN_NORMALISED_RATE):  # too thin to serve: plain scores rather than a refused swap
        return None, (f"the normalised tail ({len(scores)} pairs) does not reach {MIN_NORMALISED_RATE:g}; "
                      "a larger reference set is needed")
    # a typical searched face's shift: over the reference faces, not the cohort's own (they score higher)
    cohort = dataclasses.replace(cohort, reference_shift=float(np.median(cohort.shift(np.asarray(emb)[rest]))),
                                 source=f"{source}: {len(cohort.centroids)} k-means centroids (of {COHORT_CENTROIDS}; "
                                        f"those of fewer than {COHORT_MIN_MEMBERS} people dropped) of {len(people)} "
                                        "one-image people (cohort_people, seed 0)")
    return {"cohort": cohort.to_dict(), "impostor_tail": tail.to_dict(), "search_comparisons_factor": 1.0,
            "supported_down_to": tail.deepest_p}, None
