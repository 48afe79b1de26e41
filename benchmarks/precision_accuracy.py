"""Is a reduced-precision embedder as accurate as fp32? On every LFW image (benchmarks.lfw_all's crops):
LFW 10-fold verification on the View 2 pairs, and 1:N open-set search by benchmarks.openset's protocol
(all people not held out enrolled with 1 or 3 photos, identity templates, the cohort's people left out of the
searches): FNIR at FPIR 0.01 and closed-set rank-1. Cross-precision: the gallery embedded by one precision,
the probes by another (a gallery enrolled before the precision changed).
"""
from __future__ import annotations

import numpy as np

from benchmarks.faces import faces_dir, read_pairs
from benchmarks.openset import evaluate, identity_scores, protocol
from training.evaluate import kfold_accuracy


def view2_rows(paths: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the View 2 pairs' images among `paths` (all of LFW): a, b, issame, folds."""
    index = {p: i for i, p in enumerate(paths)}
    pairs = read_pairs(faces_dir() / "lfw-meta" / "pairs.txt")
    return (np.array([index[p[0]] for p in pairs]), np.array([index[p[1]] for p in pairs]),
            np.array([p[2] for p in pairs]), np.array([p[3] for p in pairs]))


def open_set(gallery_emb: np.ndarray, probe_emb: np.ndarray, names: list[str], k_enroll: int,
             exclude: set[str]) -> dict:
    """benchmarks.openset's largest gallery (k photos each): rank-1 and FNIR at FPIR 0.01 (threshold set on
    the non-mated searches), the gallery's templates from `gallery_emb`, the searches from `probe_emb`."""
    p = protocol(names, None, k_enroll)
    nonmated = np.array([r for r in p.nonmated_rows if names[r] not in exclude], dtype=np.int64)
    gallery = [gallery_emb[r] for r in p.gallery_rows]
    res = evaluate(identity_scores(probe_emb[p.mated_rows], gallery, "template"), p.mated_truth,
                   identity_scores(probe_emb[nonmated], gallery, "template"), {})
    at = res["fnir_at_fpir_0.01"]
    return {"rank1": res["rank1"], "fnir_at_fpir_0.01": at["fnir"], "threshold": at["threshold"],
            "fpir": at["fpir"], "identities": len(gallery), "mated_searches": len(p.mated_rows),
            "nonmated_searches": len(nonmated)}


def compare(embeddings: dict[str, np.ndarray], names: list[str], paths: list, exclude: set[str],
            baseline: str = "fp32", cross: tuple[tuple[str, str], ...] = ()) -> dict:
    """Figures of each precision's embeddings of the same images, the pairs (gallery, probes) in `cross`, and
    each one's differences from `baseline` in points."""
    a, b, issame, folds = view2_rows(paths)
    out: dict = {}
    runs = [(name, name, name) for name in embeddings] + [(f"{g}_gallery_{p}_probes", g, p) for g, p in cross]
    for label, g, p in runs:
        row: dict = {}
        if g == p:
            emb = embeddings[g]
            row["lfw_10fold"] = kfold_accuracy(np.sum(emb[a] * emb[b], axis=1), issame, folds)
        else:  # a verification of a probe against an enrolled face: one side in each precision
            row["lfw_10fold"] = kfold_accuracy(np.sum(embeddings[g][a] * embeddings[p][b], axis=1), issame, folds)
        for k in (1, 3):
            row[f"open_set_{k}_photo"] = open_set(embeddings[g], embeddings[p], names, k, exclude)
        if p != baseline:
            cos = np.sum(embeddings[baseline] * embeddings[p], axis=1)
            row[f"cosine_{p}_vs_{baseline}"] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5),
                                                "p001": round(float(np.quantile(cos, 0.001)), 5)}
        out[label] = row
    ref = out[baseline]
    for label, row in out.items():
        if label == baseline:
            continue
        row["delta_points_vs_" + baseline] = {
            "lfw_10fold": round(100 * (row["lfw_10fold"]["accuracy_mean"] - ref["lfw_10fold"]["accuracy_mean"]), 3),
            **{f"{k}_photo_{m}": round(100 * (row[f"open_set_{k}_photo"][m] - ref[f"open_set_{k}_photo"][m]), 3)
               for k in (1, 3) for m in ("fnir_at_fpir_0.01", "rank1")}}
    return out


def gate(deltas: dict, lfw_points: float = 0.3, fnir_points: float = 1.0, rank1_points: float = 0.5) -> dict:
    """Issue 36's acceptance: LFW 10-fold within 0.3 points of fp32, FNIR at FPIR 0.01 at most 0.01 (1 point)
    higher, rank-1 within 0.5 points; what missed and by how much."""
    misses = {}
    if deltas["lfw_10fold"] < -lfw_points:
        misses["lfw_10fold"] = round(-lfw_points - deltas["lfw_10fold"], 3)
    for k in (1, 3):
        if deltas[f"{k}_photo_fnir_at_fpir_0.01"] > fnir_points:
            misses[f"{k}_photo_fnir_at_fpir_0.01"] = round(deltas[f"{k}_photo_fnir_at_fpir_0.01"] - fnir_points, 3)
        if deltas[f"{k}_photo_rank1"] < -rank1_points:
            misses[f"{k}_photo_rank1"] = round(-rank1_points - deltas[f"{k}_photo_rank1"], 3)
    return {"passed": not misses, "missed_by_points": misses,
            "rule": f"lfw >= -{lfw_points}, fnir <= +{fnir_points}, rank1 >= -{rank1_points} points"}
