"""`python -m benchmarks.openset --duplicates 0.05`: the shipped operating point on a gallery with duplicates.

A share of the enrolled people (those with at least 4 photos and enough left to search with) is enrolled a second
time under another label with other photos: some of their mated search photos become the second label's faces,
at least one stays a search. A mated search is right when it names either of the person's labels. Each gallery
(N identities before the duplicates, 1 or 3 photos each) is run clean and duplicated in the same run, decided as
the service decides (`app.services.operating_point`): the gallery's tail less suspected duplicates and censored at
the same-person threshold, the normalisation picked by the gallery's own self-check, 1:1 verification's floor.
`naive` is the rule before this change (every pair of the gallery counted as strangers, verification moved by the
gallery) for contrast.

Also the normalisation table: FNIR at FPIR 0.01 (threshold set on the non-mated searches) for plain cosine, the
checkpoint's LFW cohort, a cohort drawn from the gallery itself (the identities other than the candidate, as in
adaptive score normalisation: shift = 0.5 x the mean of ranks 2-4), and what the service ships (the self-check's
choice), on identity-disjoint LFW (the half of the people the tails were not measured on), degraded LFW and the
duplicated galleries.

    python -m benchmarks.openset_duplicates [--out benchmarks/results/lfw_duplicates.json]

lists the suspected duplicates of all of LFW (every identity's template, every image): its own known errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from app.services.operating_point import GALLERY_SAMPLE_FACES, normalisation_check_public
from model.calibration.cohort import COHORT_WEIGHT, Cohort
from model.calibration.operating_point import operating_point
from model.calibration.pairs import pick_identities, search_impostor_scores
from model.calibration.tail import ImpostorTail
from model.duplicates import duplicate_pairs, duplicate_threshold
from model.templates import templates_of
from model.gallery_tail import measure_gallery, normalisation_choice, verification_point

TARGET_FAR = 1e-3


def inject(p, names: list[str], share: float, k_enroll: int, seed: int = 0):
    """A copy of protocol `p` where `share` of its identities get a second label (appended to the gallery) whose
    faces are some of the person's mated search photos. Returns (protocol, truth sets, injected pairs)."""
    from benchmarks.openset import Protocol

    rng = np.random.default_rng(seed + 7)
    n = len(p.gallery_rows)
    mated_of = {gi: np.flatnonzero(p.mated_truth == gi) for gi in range(n)}
    eligible = [gi for gi in range(n) if len(p.gallery_rows[gi]) + len(mated_of[gi]) >= 4 and len(mated_of[gi]) >= 2]
    chosen = sorted(rng.choice(eligible, min(len(eligible), int(round(share * n))), replace=False).tolist())
    gallery = list(p.gallery_rows)
    drop: set[int] = set()
    pairs = []
    for gi in chosen:
        idx = mated_of[gi]
        take = idx[: min(k_enroll, len(idx) - 1)]
        gallery.append(p.mated_rows[take])
        drop |= set(take.tolist())
        pairs.append((gi, len(gallery) - 1))
    keep = np.array([i for i in range(len(p.mated_rows)) if i not in drop], dtype=np.int64)
    truth = p.mated_truth[keep]
    allowed = {a: {a, b} for a, b in pairs}
    return Protocol(gallery, p.mated_rows[keep], truth, p.nonmated_rows), allowed, pairs


def scores(probes: np.ndarray, g_emb: list[np.ndarray]) -> np.ndarray:
    from benchmarks.openset import identity_scores

    return identity_scores(probes, g_emb, "template")


def correct(s_mated: np.ndarray, truth: np.ndarray, allowed: dict) -> np.ndarray:
    top = s_mated.argmax(1)
    return np.array([t == g or t in allowed.get(int(g), ()) for t, g in zip(top, truth)])


def fnir_at(stat_mated, ok, stat_non, fpir=0.01) -> float:
    s = np.sort(stat_non)[::-1]
    j = int(np.floor(fpir * len(s)))
    thr = np.nextafter(s[j], np.inf) if j < len(s) else s[-1]
    return round(float(1 - np.mean(ok & (stat_mated >= thr))), 4)


def gallery_cohort_shift(s: np.ndarray, top: int = 3) -> np.ndarray:
    """Adaptive (gallery) cohort: 0.5 x the mean of each search's scores at ranks 2..top+1 (the candidate out)."""
    if s.shape[1] < 2:
        return np.zeros(len(s))
    part = -np.sort(-s, axis=1)[:, 1: top + 1]
    return COHORT_WEIGHT * part.mean(axis=1)


def shipped(g_emb: list[np.ndarray], plain: ImpostorTail, norm, kappa_plain: float, fpir: float, robust: bool = True):
    """The service's decision for this gallery (`model.gallery_tail`, as `OperatingPoints` calls it):
    (op, uses_cohort, the normalisation check, suspected pairs, the same-person threshold). `robust=False`: the rule
    before (every pair counted as strangers and as independent, verification moved by the gallery)."""
    flat = np.concatenate(g_emb)
    labels = np.repeat(np.arange(len(g_emb)), [len(g) for g in g_emb])
    rows = pick_identities(labels, GALLERY_SAMPLE_FACES)
    v, lab = flat[rows], labels[rows]
    n = len(g_emb)
    cohort: Cohort | None = norm.cohort if norm is not None else None
    shift = cohort.shift(v) if cohort is not None else None
    if robust:
        m = measure_gallery(v, lab, "template", plain, n, TARGET_FAR, shift)
        g_plain, g_norm, dups, same = m.tail, m.normalised, m.duplicates, m.same_person
        floor = verification_point(plain, TARGET_FAR, n, g_plain).threshold
        check = normalisation_choice(plain, norm.tail, m) if norm is not None else None
    else:
        g_plain = ImpostorTail.from_scores(search_impostor_scores(v, lab, "template"))
        g_norm = ImpostorTail.from_scores(search_impostor_scores(v, lab, "template", shift)) if shift is not None \
            else None
        dups, same, check = (), None, None
        floor = operating_point(plain, TARGET_FAR, 1, g_plain).threshold
    use_cohort = norm is not None and (check is None or check.cohort)
    if use_cohort:
        op = operating_point(norm.tail, fpir, n, g_norm, TARGET_FAR, norm.kappa if n > 1 else 1.0)
        op = dataclasses.replace(op, normalised=True, reference_shift=cohort.reference_shift, floor=floor)
    else:
        op = operating_point(plain, fpir, n, g_plain, TARGET_FAR, kappa_plain if n > 1 else 1.0)
    return op, use_cohort, check, dups, same


def best_recall(scores: np.ndarray, truth: set, n_identities: int) -> float:
    """The largest share of `truth` pairs any threshold on the pair `scores` finds with at most
    max(1, n_identities // 1000) other pairs above it."""
    iu = np.triu_indices(len(scores), 1)
    s = scores[iu]
    t = np.array([(int(i), int(j)) in truth for i, j in zip(*iu)])
    t = t[np.argsort(-s, kind="stable")]
    cut = int(np.searchsorted(np.cumsum(~t), max(1, n_identities // 1000) + 1))
    return round(float(t[:cut].sum() / len(truth)), 4)


def decide(op, use_cohort: bool, cohort, s: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """Whether each search's best score clears its threshold."""
    best = s.max(1)
    if use_cohort:
        return best >= np.maximum(op.threshold + cohort.shift(probes), op.floor)
    return best >= op.threshold


def run_gallery(emb, names, plain, norm, kappa_plain, n_gallery, k, fpir, share, only=None, exclude=frozenset(),
                mated_per_person: int = 5, max_nonmated=None) -> dict:
    from benchmarks.openset import protocol

    base = protocol(names, n_gallery, k, only=only, mated_per_person=mated_per_person, max_nonmated=max_nonmated)
    if exclude:
        base.nonmated_rows = np.array([r for r in base.nonmated_rows if names[r] not in exclude], dtype=np.int64)
    out = {"identities": len(base.gallery_rows), "enrolled_per_person": k}
    dup_p, allowed, injected = inject(base, names, share, k)
    wanted = int(round(share * len(base.gallery_rows)))
    if len(injected) < wanted:  # too few people with enough photos (e.g. --mated-per-person 2 and 1 photo)
        out["warning"] = f"{len(injected)} of {wanted} duplicates injected: too few people with enough photos"
        print(f"openset_duplicates: {out['warning']} ({len(base.gallery_rows)} identities, {k} photos)",
              file=sys.stderr)
    cohort = norm.cohort if norm is not None else None
    for name, p, ok_map in (("clean", base, {}), ("duplicated", dup_p, allowed)):
        g_emb = [emb[r] for r in p.gallery_rows]
        mated, non = emb[p.mated_rows], emb[p.nonmated_rows]
        s_m, s_n = scores(mated, g_emb), scores(non, g_emb)
        ok = correct(s_m, p.mated_truth, ok_map)
        row = {"gallery_identities": len(g_emb), "mated_searches": len(mated), "nonmated_searches": len(non)}
        for rule, robust in (("shipped", True), ("naive", False)):
            op, use_cohort, check, dups, same = shipped(g_emb, plain, norm, kappa_plain, fpir, robust)
            if robust:
                same_person = same
            hit_m, hit_n = decide(op, use_cohort, cohort, s_m, mated), decide(op, use_cohort, cohort, s_n, non)
            row[rule] = {"fpir": round(float(hit_n.mean()), 4), "fnir": round(float(1 - np.mean(ok & hit_m)), 4),
                         "normalisation": "cohort" if use_cohort else "plain",
                         "typical_threshold": round(op.cosine_threshold, 4),
                         "verification_floor": round(op.floor, 4) if use_cohort else None}
            if check is not None:
                row[rule]["selfcheck"] = normalisation_check_public(check)
        # the normalisation table (oracle threshold at FPIR 0.01 on these searches)
        sh_m, sh_n = (cohort.shift(mated), cohort.shift(non)) if cohort is not None else (0, 0)
        row["fnir_at_fpir_0.01"] = {
            "plain": fnir_at(s_m.max(1), ok, s_n.max(1)),
            "lfw_cohort": fnir_at(s_m.max(1) - sh_m, ok, s_n.max(1) - sh_n) if cohort is not None else None,
            "gallery_cohort": fnir_at(s_m.max(1) - gallery_cohort_shift(s_m), ok,
                                      s_n.max(1) - gallery_cohort_shift(s_n)),
        }
        row["fnir_at_fpir_0.01"]["shipped"] = row["fnir_at_fpir_0.01"][
            "lfw_cohort" if row["shipped"]["normalisation"] == "cohort" else "plain"]
        # suspected duplicates over every template pair of the gallery
        _, templates, _ = templates_of(np.concatenate(g_emb), np.repeat(np.arange(len(g_emb)), [len(g) for g in g_emb]))
        thr = same_person  # what the service lists: the threshold its tail was cleaned at
        found = duplicate_pairs(templates, thr)
        truth_pairs = {tuple(sorted(x)) for x in injected} if name == "duplicated" else set()
        hits = [f for f in found if (f[0], f[1]) in truth_pairs]
        oracle = {}
        if truth_pairs:  # the best any threshold on these scores can do, at most N/1000 (>= 1) false suggestions
            tsh = cohort.shift(templates) if cohort is not None else None
            oracle = {"plain": best_recall(templates @ templates.T, truth_pairs, len(g_emb))}
            if tsh is not None:
                oracle["lfw_cohort"] = best_recall(templates @ templates.T - (tsh[:, None] + tsh[None, :]) / 2,
                                                   truth_pairs, len(g_emb))
        row["suspected_duplicates"] = {
            "threshold": round(thr, 4), "suggested": len(found),
            "true": len(hits), "injected": len(truth_pairs),
            "precision": round(len(hits) / len(found), 4) if found else None,
            "recall": round(len(hits) / len(truth_pairs), 4) if truth_pairs else None,
            "false_per_1000_identities": round(1000 * (len(found) - len(hits)) / len(g_emb), 3),
            "best_recall_any_threshold": oracle,
            "false_pairs": [[names[p.gallery_rows[i][0]], names[p.gallery_rows[j][0]], round(s, 4)]
                            for i, j, s in found if (i, j) not in truth_pairs][:20]}
        out[name] = row
    return out


def main(argv=None) -> int:
    """Every suspected duplicate pair among all of LFW's identities (templates of all their images)."""
    from benchmarks.lfw_all import lfw_embeddings
    from benchmarks.report import emit
    from app.services.operating_point import tail_of
    from model.pipeline import load_checkpoint

    ap = argparse.ArgumentParser(description="suspected duplicate identities of all of LFW")
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    plain = tail_of(load_checkpoint(args.weights).thresholds)
    d = lfw_embeddings(args.weights)
    uniq, templates, inv = templates_of(d["emb"], np.array(d["names"]))
    images = np.bincount(inv)
    thr = duplicate_threshold(plain, len(uniq))
    pairs = [{"a": str(uniq[i]), "a_images": int(images[i]), "b": str(uniq[j]), "b_images": int(images[j]),
              "score": round(s, 4)} for i, j, s in duplicate_pairs(templates, thr)]
    return emit({"benchmark": "lfw_duplicates", "model_version": d["version"], "identities": len(uniq),
                 "threshold": round(thr, 4), "pairs": pairs}, args.out)


if __name__ == "__main__":
    sys.exit(main())
