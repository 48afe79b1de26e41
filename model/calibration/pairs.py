"""Sampling a gallery and scoring its impostor pairs: what a tail is measured on.

`pick_identities` samples whole identities; `search_score_matrix` / `search_impostor_scores` score each face
against the other identities as a search scores them (template or best face); `pair_scores` /
`normalised_pair_scores` give every different-label pair, plain or less each probe's cohort shift.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from model.templates import templates_by_row

if TYPE_CHECKING:  # annotation only
    from model.calibration.cohort import Cohort


def pick_identities(labels: np.ndarray, max_faces: int, seed: int = 0) -> np.ndarray:
    """Rows of all the faces of a random subset of identities, at most `max_faces` faces (at least one
    identity): what a gallery's self-calibration samples, so that each sampled identity is whole."""
    labels = np.asarray(labels)
    if len(labels) <= max_faces:
        return np.arange(len(labels))
    uniq, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq)).tolist()
    keep, total = [], 0
    for i in order:  # identities that do not fit are skipped (one huge identity does not starve the sample)
        if total + counts[i] <= max_faces:
            keep.append(i)
            total += int(counts[i])
    return np.flatnonzero(np.isin(inv, keep or order[:1]))


def search_impostor_scores(emb: np.ndarray, labels: np.ndarray, scoring: str = "template",
                           shift: np.ndarray | None = None) -> np.ndarray:
    """A gallery's own impostor scores, as a stranger's search meets them: each face against every *other*
    identity, the identity scored the way the search scores it (`template`: the normalised mean of its
    faces; `face`: its best face). One score per (face, other identity). With one face per identity this is
    every different-identity pair (in both directions); with several, the template scores are what a
    face-to-face tail would underestimate (a mean of k faces scores higher against a stranger than one face).
    `shift` (per face, a `Cohort`'s) is subtracted from each face's scores: the normalised search scores."""
    emb = np.asarray(emb, dtype=np.float32)
    uniq, inv = np.unique(np.asarray(labels), return_inverse=True)
    if len(uniq) < 2:
        return np.zeros(0, np.float32)
    scores = search_score_matrix(emb, inv, len(uniq), scoring)
    if shift is not None:
        scores = scores - np.asarray(shift, dtype=np.float32)[:, None]
    own = np.zeros(scores.shape, bool)
    own[np.arange(len(emb)), inv] = True
    return scores[~own]


def search_score_matrix(emb: np.ndarray, inv: np.ndarray, k: int, scoring: str = "template",
                        templates: np.ndarray | None = None) -> np.ndarray:
    """(faces, identities) scores of each face against each of the `k` identities (`inv`: each face's identity
    row) as a search scores an identity: `template`, the normalised mean of its faces (`templates` when the
    caller has them); `face`, its best face."""
    emb = np.asarray(emb, dtype=np.float32)
    if scoring == "template":
        if templates is None:
            templates = templates_by_row(emb, inv, k)
        return emb @ templates.T
    if scoring == "face":
        order = np.argsort(inv, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(inv, minlength=k))[:-1]]
        return np.maximum.reduceat(emb @ emb[order].T, starts, axis=1)
    raise ValueError(f"unknown scoring {scoring!r}")


def pair_scores(emb: np.ndarray, labels, shift: np.ndarray | None = None, block: int = 2048) -> np.ndarray:
    """Impostor scores (float32) of every different-label pair, computed in row blocks to bound memory: each
    unordered pair once; with `shift` (per row), every ordered pair (i, j) as score(i, j) - shift(i), since
    either face can be the probe."""
    emb = np.asarray(emb, dtype=np.float32)
    lab = np.unique(np.asarray(labels), return_inverse=True)[1]
    out = []
    for start in range(0, len(emb), block):
        rows = np.arange(start, min(start + block, len(emb)))
        sims = emb[rows] @ emb.T
        keep = lab[None, :] != lab[rows][:, None]
        if shift is None:
            keep &= np.arange(len(emb))[None, :] > rows[:, None]
        else:
            sims -= np.asarray(shift, dtype=np.float32)[rows][:, None]
        out.append(sims[keep])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def normalised_pair_scores(emb: np.ndarray, labels, cohort: Cohort, block: int = 2048) -> np.ndarray:
    """The normalised impostor scores a checkpoint's search tail is measured on (`pair_scores` less each
    probe's cohort shift)."""
    return pair_scores(emb, labels, cohort.shift(np.asarray(emb, dtype=np.float32)), block)
