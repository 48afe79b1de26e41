"""Is a reduced-precision embedder as accurate as fp32? LFW 10-fold verification, an LFW 1:N open-set split
(FNIR at FPIR 0.01, rank-1) and cross-precision search (gallery embedded by one, probes by the other).

The 1:N split is our own (the lead's benchmarks/openset.py was not on main when this was written): the
people of the View 2 pair images with two or more images are alternately enrolled (first image in the
gallery, the others mated probes) or left out (all their images non-mated probes), as are people with one
image. FPIR: share of non-mated probes whose best score reaches the threshold; FNIR: share of mated probes
whose right identity is not the top candidate at or above it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.faces import faces_dir, read_pairs
from training.evaluate import kfold_accuracy


def open_set_split(names: list[str]) -> dict[str, np.ndarray]:
    """Indexes: gallery (one per enrolled person), mated probes, non-mated probes; gallery labels."""
    by_person: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_person.setdefault(n, []).append(i)
    multi = sorted(p for p, idx in by_person.items() if len(idx) >= 2)
    enrolled = set(multi[::2])
    gallery, mated, mated_label, nonmated = [], [], [], []
    for person in sorted(by_person):
        idx = by_person[person]
        if person in enrolled:
            label = len(gallery)
            gallery.append(idx[0])
            mated += idx[1:]
            mated_label += [label] * (len(idx) - 1)
        else:
            nonmated += idx
    return {"gallery": np.array(gallery), "mated": np.array(mated), "mated_label": np.array(mated_label),
            "nonmated": np.array(nonmated)}


def open_set(gallery_emb: np.ndarray, probe_emb: np.ndarray, split: dict, fpir: float = 0.01) -> dict:
    """FNIR at `fpir` and rank-1 of the split, the gallery from `gallery_emb`, the probes from `probe_emb`."""
    g = gallery_emb[split["gallery"]]
    mated_scores = probe_emb[split["mated"]] @ g.T
    nonmated_top = (probe_emb[split["nonmated"]] @ g.T).max(1)
    threshold = float(np.quantile(nonmated_top, 1 - fpir))
    top = mated_scores.argmax(1)
    right = top == split["mated_label"]
    hit = right & (mated_scores.max(1) >= threshold)
    return {"fnir": round(float(1 - hit.mean()), 4), "rank1": round(float(right.mean()), 4),
            "threshold": round(threshold, 4), "fpir": fpir, "gallery": len(g), "mated_probes": len(right),
            "nonmated_probes": len(nonmated_top)}


def lfw_view2() -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paths of the View 2 pair images; pair index arrays a, b; issame; folds."""
    pairs = read_pairs(faces_dir() / "lfw-meta" / "pairs.txt")
    paths = sorted({p for a, b, _, _ in pairs for p in (a, b)})
    index = {p: i for i, p in enumerate(paths)}
    return (paths, np.array([index[p[0]] for p in pairs]), np.array([index[p[1]] for p in pairs]),
            np.array([p[2] for p in pairs]), np.array([p[3] for p in pairs]))


def compare(embeddings: dict[str, np.ndarray], baseline: str = "fp32") -> dict:
    """Accuracy figures of each embedding set of the View 2 images, and against the baseline's gallery."""
    paths, a, b, issame, folds = lfw_view2()
    split = open_set_split([p.parent.name for p in paths])
    out = {}
    for name, emb in embeddings.items():
        acc = kfold_accuracy(np.sum(emb[a] * emb[b], axis=1), issame, folds)
        out[name] = {"lfw_10fold": acc, "open_set": open_set(emb, emb, split)}
        if name != baseline:
            out[name]["cross_gallery_" + baseline] = open_set(embeddings[baseline], emb, split)
            cos = np.sum(embeddings[baseline] * emb, axis=1)
            out[name]["cosine_vs_" + baseline] = {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5),
                                                  "p01": round(float(np.quantile(cos, 0.01)), 5)}
    return out
