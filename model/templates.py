"""An identity's template: the normalised mean of its faces' unit embeddings. The one place for the rule:
the gallery's stored templates, the in-memory search, calibration, duplicates and the training gate use it."""
from __future__ import annotations

import numpy as np


def template_of(vectors: np.ndarray) -> np.ndarray:
    """One identity's template from its faces' embeddings (n, d): float32 (d,), summed in float64."""
    mean = np.asarray(vectors, dtype=np.float64).sum(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def templates_of(emb: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every identity's template at once: (unique labels, their templates (k, d) float32, each face's row in
    them). The same numbers as `template_of` per identity."""
    uniq, inv = np.unique(np.asarray(labels), return_inverse=True)
    return uniq, templates_by_row(emb, inv, len(uniq)), inv


def templates_by_row(emb: np.ndarray, inv: np.ndarray, k: int) -> np.ndarray:
    """(k, d) float32 templates of faces `emb` whose identity rows are `inv` (0..k-1)."""
    emb = np.asarray(emb, dtype=np.float32)
    sums = np.zeros((k, emb.shape[1] if emb.ndim == 2 else 0), np.float64)
    np.add.at(sums, inv, emb)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
