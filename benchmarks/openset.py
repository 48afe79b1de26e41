"""1:N open-set identification on LFW in the style of NIST FRVT 1:N. Prints JSON.

People with >= 2 images are shuffled (seed); 200 of them are held out and never enrolled. Galleries of
N = 100, 1,000 and all remaining people enrol 1 or 3 images each (always leaving one to search with);
mated searches are up to 5 other images of enrolled people, non-mated searches one image of each of the
~4,000 single-image people and up to 3 of each held-out person. Every image goes through the service's
pipeline (MTCNN, crop, embedding at the service's precision; `benchmarks.lfw_all` caches it), and the
decision through the service's own rules (`app.services.operating_point`): identity templates or best
face, flip test-time augmentation, the impostor-tail operating point with or without the gallery's own pairs,
and (`+cohort`) the checkpoint's cohort normalisation: the decision on score - shift(probe), its threshold
from the normalised tail. The cohort's people (`model.calibration.cohort.cohort_people`: 1,500 one-image people) are
left out of every variant's searches, so all variants are compared on the same searches.

Reported per gallery: closed-set rank-1; FNIR at FPIR 0.001, 0.01, 0.05, 0.1 (thresholds set on the non-mated
searches); and FPIR/FNIR at the operating point the service ships, beside main's fixed 0.51 on best faces.
`--domain degraded` runs the same on grayscale 24-px crops (as `benchmarks.domain_adapt` degrades them).

    python -m benchmarks.openset [--sizes 100,1000,all] [--domain lfw|degraded] [--out benchmarks/results/openset.json]
    python -m benchmarks.openset --collections 10 [--targets 0.001,...,0.1]   # per-collection operating points
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.lfw_all import lfw_embeddings
from benchmarks.report import emit
from model.calibration.cohort import Cohort, cohort_people
from model.calibration.operating_point import operating_point
from model.calibration.pairs import pick_identities
from model.calibration.tail import ImpostorTail

HELD_OUT_PEOPLE = 200
TARGET_FAR = 1e-3  # the service's FACEID_TARGET_FAR: a search is never looser than 1:1 verification
FIXED_THRESHOLD_OF_MAIN = 0.51


@dataclass
class Protocol:
    gallery_rows: list[np.ndarray]   # per enrolled identity: its enrolled image rows
    mated_rows: np.ndarray           # probe image rows of enrolled people
    mated_truth: np.ndarray          # index of the probe's identity in gallery_rows
    nonmated_rows: np.ndarray


def people(names: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        out.setdefault(n, []).append(i)
    return {n: np.array(r) for n, r in sorted(out.items())}


def split_identities(names: list[str], seed: int = 1) -> tuple[set[str], set[str]]:
    """Two identity-disjoint halves of LFW: one to calibrate on, one to evaluate on."""
    all_people = sorted(set(names))
    order = np.random.default_rng(seed).permutation(len(all_people))
    half = set(all_people[i] for i in order[: len(all_people) // 2])
    return half, set(all_people) - half


def protocol(names: list[str], n_gallery: int | None, k_enroll: int, seed: int = 0,
             mated_per_person: int = 5, nonmated_per_held_out: int = 3, only: set[str] | None = None,
             max_nonmated: int | None = None) -> Protocol:
    rng = np.random.default_rng(seed)
    by = people(names)
    if only is not None:
        by = {n: r for n, r in by.items() if n in only}
    multi = [n for n, r in by.items() if len(r) >= 2]
    single = [n for n, r in by.items() if len(r) == 1]
    order = rng.permutation(len(multi))
    held_out = [multi[i] for i in order[:HELD_OUT_PEOPLE]]
    candidates = [multi[i] for i in order[HELD_OUT_PEOPLE:]]
    enrolled = candidates if n_gallery is None else candidates[:n_gallery]
    gallery_rows, mated, truth = [], [], []
    for gi, name in enumerate(enrolled):
        rows = rng.permutation(by[name])
        k = min(k_enroll, len(rows) - 1)
        gallery_rows.append(rows[:k])
        probes = rows[k:k + mated_per_person]
        mated.extend(probes)
        truth.extend([gi] * len(probes))
    nonmated = [by[n][0] for n in single] + [r for n in held_out
                                             for r in rng.permutation(by[n])[:nonmated_per_held_out]]
    if max_nonmated is not None and len(nonmated) > max_nonmated:
        nonmated = list(rng.choice(nonmated, max_nonmated, replace=False))
    return Protocol(gallery_rows, np.array(mated), np.array(truth), np.array(nonmated))


def identity_scores(probes: np.ndarray, gallery: list[np.ndarray], mode: str) -> np.ndarray:
    """(probes, identities) scores: each identity by its template (normalised mean) or by its best face."""
    if mode == "template":
        from model.templates import template_of

        return probes @ np.stack([template_of(g) for g in gallery]).T
    flat = np.concatenate(gallery)
    owner = np.repeat(np.arange(len(gallery)), [len(g) for g in gallery])
    starts = np.r_[0, np.cumsum([len(g) for g in gallery])[:-1]]
    return np.maximum.reduceat(probes @ flat.T, starts, axis=1) if len(owner) else np.zeros((len(probes), 0))


def fnir_at_fpir(mated_top: np.ndarray, mated_ok: np.ndarray, nonmated_top: np.ndarray, fpir: float) -> dict:
    """Threshold set on the non-mated searches so that at most `fpir` of them clear it; FNIR there."""
    s = np.sort(nonmated_top)[::-1]
    k = int(np.floor(fpir * len(s)))
    thr = float(np.nextafter(s[k], np.inf)) if k < len(s) else float(s[-1])
    return {"threshold": round(thr, 4), "fpir": round(float(np.mean(nonmated_top >= thr)), 5),
            "fnir": round(float(1 - np.mean(mated_ok & (mated_top >= thr))), 4)}


def evaluate(scores_mated: np.ndarray, truth: np.ndarray, scores_non: np.ndarray, thresholds: dict) -> dict:
    top = scores_mated.argmax(1)
    mated_top = scores_mated.max(1)
    ok = top == truth
    non_top = scores_non.max(1)
    out = {"rank1": round(float(ok.mean()), 4),
           **{f"fnir_at_fpir_{f:g}": fnir_at_fpir(mated_top, ok, non_top, f) for f in (0.001, 0.01, 0.05, 0.1)}}
    for name, thr in thresholds.items():
        out[name] = {"threshold": round(float(thr), 4), "fpir": round(float(np.mean(non_top >= thr)), 4),
                     "fnir": round(float(1 - np.mean(ok & (mated_top >= thr))), 4)}
    return out


def gallery_tail(gallery_emb: list[np.ndarray], mode: str, cohort: Cohort | None = None,
                 plain: ImpostorTail | None = None) -> ImpostorTail | None:
    """The gallery's own impostor tail as the service computes it (`OperatingPoints._compute`): suspected
    duplicates left out, scores censored at the same-person threshold of `plain` (the model's 1:1 tail), counted
    in identity pairs."""
    from app.services.operating_point import GALLERY_SAMPLE_FACES
    from model.duplicates import duplicate_threshold, gallery_min_beyond, robust_impostor_scores

    flat = np.concatenate(gallery_emb)
    labels = np.repeat(np.arange(len(gallery_emb)), [len(g) for g in gallery_emb])
    rows = pick_identities(labels, GALLERY_SAMPLE_FACES)
    same = duplicate_threshold(plain, len(gallery_emb)) if plain is not None else 1.0
    shift = None if cohort is None else cohort.shift(flat[rows])
    scores, shifted, _ = robust_impostor_scores(flat[rows], labels[rows], mode, same, None, shift)
    scores = scores if shifted is None else shifted
    k = len(np.unique(labels[rows]))
    return ImpostorTail.from_scores(scores, source=f"gallery, {len(rows)} faces").with_independent_pairs(
        k * (k - 1) // 2, gallery_min_beyond(k)) if len(scores) else None


def verification_threshold(plain: ImpostorTail, gallery_emb: list[np.ndarray], mode: str) -> float:
    """1:1 verification's threshold for this gallery (`app.services.operating_point.verification_point`): the
    floor of each face's threshold where searches are normalised, as in the service."""
    from app.services.operating_point import verification_point

    return verification_point(plain, TARGET_FAR, len(gallery_emb), gallery_tail(gallery_emb, mode, None, plain)).threshold


def measured_kappa(prior: ImpostorTail, non_top: np.ndarray, n: int, fpir: float = 0.01) -> float:
    """The search_comparisons_factor these searches show: the threshold that gives `fpir` on them, read as
    kappa * n independent comparisons against the prior tail."""
    s = np.sort(non_top)[::-1]
    thr = s[int(np.floor(fpir * len(s)))]
    p = min(max(prior.p_at(float(thr)), 1e-15), 1 - 1e-12)
    return round(math.log1p(-fpir) / math.log1p(-p) / max(n, 1), 3)


def run_one(emb: np.ndarray, names: list[str], prior: ImpostorTail, n_gallery: int | None, k_enroll: int,
            mode: str, target_fpir: float, seed: int = 0, only: set[str] | None = None, kappa: float = 1.0,
            cohort: Cohort | None = None, exclude: set[str] = frozenset(), plain: ImpostorTail | None = None,
            **limits) -> dict:
    """One gallery; with `cohort`, the decision is on probe-normalised scores and `prior` is their tail, and
    `plain` the plain tail that gives 1:1 verification's threshold (each face's floor, as in the service).
    `exclude`: people whose non-mated searches are dropped (the cohort's: one-image people, never enrolled)."""
    from app.services.operating_point import operating_point_public

    p = protocol(names, n_gallery, k_enroll, seed, only=only, **limits)
    if exclude:
        p.nonmated_rows = np.array([r for r in p.nonmated_rows if names[r] not in exclude], dtype=np.int64)
    g_emb = [emb[r] for r in p.gallery_rows]
    gt = gallery_tail(g_emb, mode, cohort, plain if cohort is not None else prior)
    op_prior = operating_point(prior, target_fpir, len(g_emb), max_rate=TARGET_FAR, comparisons_factor=kappa)
    op_both = operating_point(prior, target_fpir, len(g_emb), gt, max_rate=TARGET_FAR, comparisons_factor=kappa)
    mated, non = emb[p.mated_rows], emb[p.nonmated_rows]
    s_mated, s_non = identity_scores(mated, g_emb, mode), identity_scores(non, g_emb, mode)
    fixed = {} if cohort is not None else {"at_fixed_0.51": FIXED_THRESHOLD_OF_MAIN}
    at_ops = {"at_operating_point": op_both.threshold, "at_operating_point_prior_only": op_prior.threshold}
    if cohort is not None:  # as the service decides: the face's own shift, floored at verification's threshold
        floor = verification_threshold(plain, g_emb, mode)
        sh_m, sh_n = cohort.shift(mated), cohort.shift(non)
        ok = s_mated.argmax(1) == p.mated_truth
        op_prior, op_both = (replace(op, normalised=True, reference_shift=cohort.reference_shift, floor=floor)
                             for op in (op_prior, op_both))
        at_ops = {name: {"threshold": round(op.threshold, 4), "cosine_threshold": round(op.cosine_threshold, 4),
                         "fpir": round(float(np.mean(s_non.max(1) >= np.maximum(op.threshold + sh_n, floor))), 4),
                         "fnir": round(float(1 - np.mean(ok & (s_mated.max(1) >= np.maximum(op.threshold + sh_m,
                                                                                            floor)))), 4)}
                  for name, op in (("at_operating_point", op_both), ("at_operating_point_prior_only", op_prior))}
        # the probe's own shift: same ranking, the FNIR-at-FPIR columns on the normalised statistic
        s_mated, s_non = s_mated - sh_m[:, None], s_non - sh_n[:, None]
    res = evaluate(s_mated, p.mated_truth, s_non,
                   {**({} if cohort is not None else at_ops), **fixed})
    if cohort is not None:
        res.update(at_ops)
    res.update({"identities": len(g_emb), "enrolled_faces": int(sum(len(g) for g in g_emb)),
                "mated_searches": int(len(p.mated_rows)), "nonmated_searches": int(len(p.nonmated_rows)),
                "measured_comparisons_factor": measured_kappa(prior, s_non.max(1), len(g_emb), target_fpir),
                "operating_point": operating_point_public(op_both)})
    return res


def degrade_and_embed(rows: np.ndarray, weights: str, precision: str) -> np.ndarray:
    """Embeddings of the degraded (grayscale, 24 px) crops of LFW images `rows`."""
    from benchmarks.domain_adapt import degrade
    from benchmarks.lfw_all import lfw_paths
    from benchmarks.lfw_embed import crops_cached, embed_all
    from model.pipeline import FacePipeline

    from pathlib import Path

    pipeline = FacePipeline.load(weights=weights, device="auto", precision=precision)
    cache = Path(".cache/benchmarks") / f"lfw-degraded-{pipeline.embedder.version}-{len(rows)}-{hash(tuple(rows.tolist())) & 0xffffffff:x}.npy"
    if cache.is_file():
        return np.load(cache)
    crops, _ = crops_cached(pipeline, lfw_paths(), Path(".cache/benchmarks"))
    emb, _ = embed_all(pipeline.embedder, degrade(crops[rows]))
    np.save(cache, emb)
    return emb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--sizes", default="100,1000,all")
    ap.add_argument("--enroll", default="1,3", help="images enrolled per person")
    ap.add_argument("--target-fpir", type=float, default=0.01)
    ap.add_argument("--domain", default="lfw", choices=["lfw", "degraded"])
    ap.add_argument("--mated-per-person", type=int, default=5)
    ap.add_argument("--max-nonmated", type=int, default=None, help="a random subset of the non-mated searches")
    ap.add_argument("--duplicates", type=float, default=0.0,
                    help="share of the gallery enrolled twice under another label (benchmarks.openset_duplicates): "
                    "clean vs duplicated galleries, suspected-duplicate precision/recall, the normalisation table")
    ap.add_argument("--out", default=None)
    ap.add_argument("--measured", default=None, help="also write the miss rates the web UI's presets show (FNIR at "
                    "each FPIR, 1,000 people enrolled with 3 photos, the shipped scoring) to this file, e.g. "
                    "model/measured/casia-webface.json (what model.weights.measured_fnir reads)")
    ap.add_argument("--collections", type=int, default=0, help="instead: this many disjoint collections of one real "
                    "server, each with its own target FPIR (--targets), searched separately "
                    "(benchmarks.collections_openset; --enroll is then one number, default 3)")
    from benchmarks import collections_openset

    collections_openset.parser(ap)
    args = ap.parse_args(argv)
    if args.collections:
        args.enroll = 3 if args.enroll == "1,3" else int(args.enroll)
        return emit(collections_openset.run(args), args.out)
    t0 = time.perf_counter()
    from model.pipeline import load_checkpoint
    from app.services.operating_point import tail_of

    from app.services.operating_point import normalisation_of

    thresholds = load_checkpoint(args.weights).thresholds
    prior = tail_of(thresholds)
    kappa = float(thresholds.get("search_comparisons_factor", 1.0))
    norm = normalisation_of(thresholds)
    d = lfw_embeddings(args.weights, args.precision)
    names = d["names"]
    # the cohort's people (one image each: never enrolled) never search, in any variant (the same searches for all)
    exclude = cohort_people(names) if norm is not None else set()
    limits = {"mated_per_person": args.mated_per_person, "max_nonmated": args.max_nonmated}
    variants = {"face": d["emb"], "template": d["emb"]}
    flip = d["emb"] + d["emb_flip"]
    variants["template+flip"] = flip / np.linalg.norm(flip, axis=1, keepdims=True)
    if norm is not None:
        variants["template+cohort"] = d["emb"]
        variants["template+flip+cohort"] = variants["template+flip"]
    if args.domain == "degraded":
        need = set()
        for size in args.sizes.split(","):
            for k in map(int, args.enroll.split(",")):
                p = protocol(names, None if size == "all" else int(size), k, **limits)
                need |= set(np.concatenate(p.gallery_rows).tolist()) | set(p.mated_rows.tolist()) | set(
                    p.nonmated_rows.tolist())
        rows = np.array(sorted(need))
        emb = np.zeros_like(d["emb"])
        emb[rows] = degrade_and_embed(rows, args.weights, args.precision)
        variants = {"face": emb, "template": emb, **({"template+cohort": emb} if norm is not None else {})}

    if args.duplicates > 0:
        from benchmarks.openset_duplicates import run_gallery

        emb = variants["template"]
        runs = []
        for size in args.sizes.split(","):
            for k in map(int, args.enroll.split(",")):
                runs.append({"gallery": size, **run_gallery(emb, names, prior, norm, kappa,
                                                             None if size == "all" else int(size), k,
                                                             args.target_fpir, args.duplicates, exclude=exclude,
                                                             **limits)})
        disjoint = []
        if args.domain == "lfw":  # the normalisation table on the half of LFW's people split_identities holds out
            eval_people = split_identities(names)[1] - exclude
            for size in ("100", "all"):
                for k in map(int, args.enroll.split(",")):
                    disjoint.append({"gallery": size, **run_gallery(
                        emb, names, prior, norm, kappa, None if size == "all" else int(size), k, args.target_fpir,
                        args.duplicates, only=eval_people, **limits)})
        return emit({"benchmark": "openset_duplicates", "domain": args.domain, "duplicates": args.duplicates,
                     "model_version": d["version"], "target_fpir": args.target_fpir, "results": runs,
                     "identity_disjoint": disjoint, "wall_s": round(time.perf_counter() - t0, 1)}, args.out)

    def decision(mode: str) -> dict:  # the prior tail, kappa and cohort a variant is decided with
        if mode.endswith("+cohort"):
            return {"prior": norm.tail, "kappa": norm.kappa, "cohort": norm.cohort, "plain": prior}
        return {"prior": prior, "kappa": kappa, "cohort": None, "plain": None}

    results = []
    for size in args.sizes.split(","):
        for k in map(int, args.enroll.split(",")):
            for mode, emb in variants.items():
                dec = decision(mode)
                r = run_one(emb, names, dec["prior"], None if size == "all" else int(size), k,
                            "face" if mode == "face" else "template", args.target_fpir, kappa=dec["kappa"],
                            cohort=dec["cohort"], exclude=exclude, plain=dec["plain"], **limits)
                results.append({"gallery": size, "enrolled_per_person": k, "scoring": mode, **r})
    # The shipped tail was measured on all of LFW, these searches included. Identity-disjoint check: a tail
    # from one half of the people, searches among the other half only (galleries of 100 and all of that half).
    heldout = []
    if args.domain == "lfw":
        from training.evaluate import impostor_pair_scores

        from model.calibration.pairs import normalised_pair_scores
        from training.evaluate import MAX_IMAGES_PER_PERSON, capped_rows

        cal_people, eval_people = split_identities(names)
        cal_people, eval_people = cal_people - exclude, eval_people - exclude
        half_plain: dict[int, ImpostorTail] = {}  # per embedding variant (by identity of its array)
        for mode, emb in variants.items():
            dec = decision(mode)
            rows = np.array([i for i, n in enumerate(names) if n in cal_people])
            if id(emb) not in half_plain:
                half_plain[id(emb)] = ImpostorTail.from_scores(
                    impostor_pair_scores(emb[rows], [names[i] for i in rows]), source="half of LFW's people")
            tail = half_plain[id(emb)]
            if dec["cohort"] is not None:  # as the shipped normalised tail is built (training.evaluate)
                rows = rows[capped_rows([names[i] for i in rows], MAX_IMAGES_PER_PERSON)]
                pairs = normalised_pair_scores(emb[rows], [names[i] for i in rows], dec["cohort"])
                tail = ImpostorTail.from_scores(pairs, source="half of LFW's people, normalised")
                del pairs
            for size in ("100", "all"):
                for k in map(int, args.enroll.split(",")):
                    r = run_one(emb, names, tail, None if size == "all" else int(size), k,
                                "face" if mode == "face" else "template", args.target_fpir, only=eval_people,
                                kappa=dec["kappa"], cohort=dec["cohort"], plain=half_plain[id(emb)])
                    heldout.append({"gallery": size, "enrolled_per_person": k, "scoring": mode, **r})
    out = {"benchmark": "openset_1n_lfw", "domain": args.domain, "weights": args.weights,
           "model_version": d["version"], "precision": args.precision, "target_fpir": args.target_fpir,
           "prior": {"n_pairs": prior.n_pairs, "deepest_p": prior.deepest_p, "source": prior.source,
                     "search_comparisons_factor": kappa},
           "normalised_prior": None if norm is None else {
               "n_pairs": norm.tail.n_pairs, "deepest_p": norm.tail.deepest_p, "source": norm.tail.source,
               "search_comparisons_factor": norm.kappa, "cohort": norm.cohort.source,
               "cohort_people_left_out": len(exclude)},
           "results": results, "identity_disjoint_calibration": heldout, "wall_s": round(time.perf_counter() - t0, 1)}
    if args.measured:
        write_measured(args.measured, out)
    return emit(out, args.out)


def write_measured(path: str, out: dict, gallery: str = "1000", enrolled: int = 3) -> None:
    """The FNIR at each FPIR of the shipped scoring (templates, cohort-normalised when the checkpoint has a cohort)
    on one gallery, for the UI's presets, keyed by the model version it was measured with."""
    scoring = "template+cohort" if any(r["scoring"] == "template+cohort" for r in out["results"]) else "template"
    row = next(r for r in out["results"] if str(r["gallery"]) == gallery and r["enrolled_per_person"] == enrolled
               and r["scoring"] == scoring)
    fnir = {k.removeprefix("fnir_at_fpir_"): v["fnir"] for k, v in row.items() if k.startswith("fnir_at_fpir_")}
    Path(path).write_text(json.dumps({
        "model_version": out["model_version"], "precision": out["precision"],
        "measured_on": f"LFW: {int(gallery):,} people enrolled with {enrolled} photos each, searched with their other "
                       "photos and by people not enrolled (python -m benchmarks.openset)",
        "fnir_at_fpir": fnir}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
