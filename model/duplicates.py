"""Suspected duplicate identities: two labels whose faces score as one person.

Every real gallery has some (two spellings, a person enrolled from the UI and again from a folder, a re-enrolment
after a name change, a mislabelled photo). Left alone they spoil the gallery's own impostor tail, which would
count a same-person pair under two labels as two strangers who look alike.

Rule: two identities are suspected duplicates when their templates (the normalised mean of each one's faces)
score at or above `duplicate_threshold`: the model's 1:1 impostor-tail quantile at the per-pair rate that
makes each identity, searched against the N - 1 others, a false suggestion with probability DUPLICATE_FPIR, and
never looser than DUPLICATE_MAX_FAR. Over N identities that is at most N(N - 1)/2 x p = N x DUPLICATE_FPIR / 2
expected false suggestions (1.5 per 1,000 identities) if template pairs scored like single face pairs; measured
on clean LFW galleries (`benchmarks.openset --duplicates`): 0 to 1 per 1,000.

The gallery tail (`robust_impostor_scores`) drops the pairs of suspected duplicates and censors every remaining
score at the same-person threshold: a pair that scores as the same person is not evidence about strangers, and a
few such pairs (undetected duplicates, a mislabelled photo) can then move no quantile below that threshold.
"""
from __future__ import annotations

import numpy as np

from model.calibration.pairs import search_score_matrix
from model.calibration.tail import ImpostorTail, per_comparison_rate
from model.templates import templates_of

# Each identity, searched against the others, is suggested as a duplicate by mistake at most this often.
DUPLICATE_FPIR = 3e-3
# Never suggest a pair the model's 1:1 tail puts above this false-accept rate (small galleries).
DUPLICATE_MAX_FAR = 1e-5


def gallery_min_beyond(n_identities: int) -> int:
    """Identity pairs that must lie beyond a gallery quantile before it is used: a quarter of the identities. A
    gallery with up to 5 % of its identities enrolled twice holds N/20 same-person pairs that may go undetected
    (one photo each: `duplicate_threshold` finds a third of them on LFW); with N/4 pairs beyond, they are at most a
    fifth of a used quantile's pairs and cannot carry it."""
    return int(n_identities) // 4


def duplicate_threshold(tail: ImpostorTail, n_identities: int) -> float:
    """The template score from which two of `n_identities` identities are suspected to be one person."""
    p = min(DUPLICATE_MAX_FAR, per_comparison_rate(DUPLICATE_FPIR, max(int(n_identities) - 1, 1)))
    return tail.score_at(p)


def duplicate_pairs(templates: np.ndarray, threshold: float, block: int | None = None) -> list[tuple[int, int, float]]:
    """Every row pair (i < j) of `templates` scoring at or above `threshold`, strongest first, computed in row
    blocks (by default as many rows as keep a block's scores within 128 MB)."""
    t = np.asarray(templates, dtype=np.float32)
    block = block or max(16, min(4096, 2**25 // max(len(t), 1)))
    out: list[tuple[int, int, float]] = []
    for start in range(0, len(t), block):
        sims = t[start:start + block] @ t.T
        rows, cols = np.nonzero(sims >= threshold)
        rows = rows + start
        keep = cols > rows
        out += [(int(i), int(j), float(s)) for i, j, s in
                zip(rows[keep], cols[keep], sims[rows[keep] - start, cols[keep]])]
    out.sort(key=lambda x: -x[2])
    return out


def robust_impostor_scores(emb: np.ndarray, labels, scoring: str, same_person: float,
                           distinct: set[tuple] | None = None, shift: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray | None, list[tuple]]:
    """A gallery's impostor scores as a stranger's search meets them (`search_impostor_scores`), less the
    pairs of suspected duplicate identities (template score >= `same_person`, unless `distinct` holds the pair
    of labels: people said to be different), each remaining score censored at `same_person`. With `shift`
    (per face) also the normalised scores of the same pairs. Returns (plain, normalised or None, the duplicate
    label pairs found)."""
    uniq, templates, inv = templates_of(emb, labels)
    if len(uniq) < 2:
        return np.zeros(0, np.float32), None if shift is None else np.zeros(0, np.float32), []
    dup = [(i, j) for i, j, _ in duplicate_pairs(templates, same_person)
           if not distinct or pair_key(uniq[i], uniq[j]) not in distinct]
    scores = search_score_matrix(emb, inv, len(uniq), scoring, templates)
    own = np.zeros(scores.shape, bool)
    own[np.arange(len(inv)), inv] = True
    for i, j in dup:  # both directions: a face of either against the other identity
        own[inv == i, j] = True
        own[inv == j, i] = True
    plain = np.minimum(scores[~own], same_person)
    normalised = None
    if shift is not None:  # censored as plain scores, then lowered by each face's shift
        normalised = (np.minimum(scores, same_person) - np.asarray(shift, np.float32)[:, None])[~own]
    return plain, normalised, [pair_key(uniq[i], uniq[j]) for i, j in dup]


def pair_key(a, b) -> tuple:
    """The order-free key of an identity pair (as `distinct` holds them)."""
    a, b = a.item() if hasattr(a, "item") else a, b.item() if hasattr(b, "item") else b
    return (a, b) if a <= b else (b, a)
