"""The publishing gate: a fine-tuned checkpoint replaces the serving model only if it identifies the held-out
identities better (closed-set rank-1 and FNIR at the target FPIR) and keeps LFW (10-fold accuracy within
`max_lfw_drop` points).

Held-out identification: each held-out identity enrolls the first half of its crops (a template, the normalised
mean, as the service scores identities) and searches with the rest. A non-mated search is every probe searched
against the other identities only (leave its own identity out), every held-out face reported as nobody or as
someone else, and every face of the LFW gate's people that are not in the gallery (strangers); the threshold
is the one at which `target_fpir` of the non-mated searches would match (10 of them at least: a few dozen
searches cannot measure 1%, so FNIR is then taken at the lowest FPIR they resolve).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model.templates import template_of
from training.datasets import faces_dir, read_pairs
from training.evaluate import kfold_accuracy


def identification_report(emb: np.ndarray, labels: np.ndarray, enrolled: np.ndarray,
                          target_fpir: float = 0.01, strangers: np.ndarray | None = None,
                          min_false_matches: int = 10) -> dict:
    """`enrolled[c]`: class c is an identity (its crops split into gallery and probes); other classes'
    crops are non-mated searches only, and so are `strangers` (embeddings of people not in the gallery, e.g.
    the LFW gate's). Returns rank-1, FNIR at the FPIR threshold, and the sample sizes. An FPIR needs
    `min_false_matches` non-mated searches above its threshold to be measured at all: with fewer searches
    than that takes, FNIR is taken at the lowest FPIR they resolve (`fpir_evaluated`)."""
    labels = np.asarray(labels)
    ids = [c for c in np.unique(labels) if enrolled[c] and (labels == c).sum() >= 2]
    if len(ids) < 2:
        raise ValueError(f"held-out identification needs 2+ identities with 2+ faces, has {len(ids)}")
    templates, probes, probe_cls = [], [], []
    for c in ids:
        idx = np.nonzero(labels == c)[0]
        half = max(1, len(idx) // 2)
        templates.append(template_of(emb[idx[:half]]))
        probes += idx[half:].tolist()
        probe_cls += [len(templates) - 1] * (len(idx) - half)
    templates = np.stack(templates)
    scores = emb[probes] @ templates.T                                   # (mated probes, identities)
    probe_cls = np.array(probe_cls)
    own = scores[np.arange(len(probes)), probe_cls]
    others = scores.copy()
    others[np.arange(len(probes)), probe_cls] = -np.inf
    outsiders = np.nonzero(~np.isin(labels, ids))[0]
    nonmated = np.concatenate([others.max(1), (emb[outsiders] @ templates.T).max(1) if len(outsiders) else [],
                               (strangers @ templates.T).max(1) if strangers is not None and len(strangers) else []])
    rank1 = scores.argmax(1) == probe_cls
    fpir = min(1.0, max(target_fpir, min_false_matches / len(nonmated)))
    threshold = float(np.quantile(nonmated, 1.0 - fpir, method="higher"))
    hit = rank1 & (own > threshold)  # a match needs the right identity above the threshold
    return {"rank1": float(rank1.mean()), "fnir": float(1.0 - hit.mean()), "threshold": threshold,
            "target_fpir": target_fpir, "fpir_evaluated": round(fpir, 6), "identities": len(ids),
            "mated_searches": len(probes), "nonmated_searches": int(len(nonmated))}


def lfw_pairs(max_pairs: int | None = None) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """(image paths, pair index (n, 2), issame, fold) of LFW View 2; `max_pairs` keeps an equal share of each
    fold's same and different pairs (the first ones), for a fast gate."""
    pairs = read_pairs(faces_dir() / "lfw-meta" / "pairs.txt")
    if max_pairs:
        per = max(1, max_pairs // 20)  # 10 folds x (same, different)
        keep, seen = [], {}
        for p in pairs:
            key = (p[3], p[2])
            if seen.get(key, 0) < per:
                seen[key] = seen.get(key, 0) + 1
                keep.append(p)
        pairs = keep
    paths = sorted({x for a, b, _, _ in pairs for x in (a, b)})
    index = {p: i for i, p in enumerate(paths)}
    idx = np.array([[index[a], index[b]] for a, b, _, _ in pairs])
    return paths, idx, np.array([p[2] for p in pairs]), np.array([p[3] for p in pairs])


def lfw_accuracy(emb: np.ndarray, idx: np.ndarray, issame: np.ndarray, folds: np.ndarray) -> float:
    """LFW 10-fold accuracy (threshold chosen on the other nine folds), in [0, 1]."""
    scores = np.sum(emb[idx[:, 0]] * emb[idx[:, 1]], axis=1)
    return float(kfold_accuracy(scores, issame, folds)["accuracy_mean"])


def lfw_allowance(max_lfw_drop: float | None, corrections: int) -> float:
    """The LFW points a candidate may lose: `max_lfw_drop` when given; else 0.5 when the gallery holds corrections
    (someone asked the model to learn their camera, at a small cost on faces in general) and 0 when it holds
    none (training on the gallery's own labels must not cost anything elsewhere)."""
    if max_lfw_drop is not None:
        return max_lfw_drop
    return 0.5 if corrections > 0 else 0.0


def decide(base: dict, new: dict, base_lfw: float | None, new_lfw: float | None,
           max_lfw_drop_points: float = 0.5) -> tuple[bool, list[str]]:
    """(publish?, reasons). Better on held-out identities: rank-1 no lower and FNIR no higher, one of them
    strictly better; and LFW accuracy at most `max_lfw_drop_points` points below the serving model's."""
    reasons = []
    if new["rank1"] < base["rank1"]:
        reasons.append(f"held-out rank-1 fell: {base['rank1']:.4f} -> {new['rank1']:.4f}")
    if new["fnir"] > base["fnir"]:
        reasons.append(f"held-out FNIR at FPIR {base['target_fpir']} rose: {base['fnir']:.4f} -> {new['fnir']:.4f}")
    if not reasons and new["rank1"] == base["rank1"] and new["fnir"] == base["fnir"]:
        reasons.append("no better on the held-out identities (same rank-1 and FNIR)")
    # rounded: 10-fold means carry float error, and a drop of exactly the limit (0.98 -> 0.975) is allowed
    if base_lfw is not None and new_lfw is not None and round((base_lfw - new_lfw) * 100, 9) > max_lfw_drop_points:
        reasons.append(f"LFW accuracy fell {100 * (base_lfw - new_lfw):.2f} points "
                       f"({base_lfw:.4f} -> {new_lfw:.4f}; at most {max_lfw_drop_points} allowed)")
    return not reasons, reasons
