"""Online triplet selection from a batch's embeddings: batch-all, batch-hard and semi-hard (FaceNet's choice).

Indexes are grouped by class label (label -> list of indexes); selection is vectorised over the batch.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from training.loss import squared_distances

MINING = ("batch_all", "batch_hard", "semi_hard")


def group_by_label(labels) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, lab in enumerate(torch.as_tensor(labels).tolist()):
        groups[lab].append(i)
    return dict(groups)


class TripletSelection:
    """`selector(embeddings, labels) -> (anchor_idx, positive_idx, negative_idx)` (1-D long tensors)."""

    def __init__(self, mining: str = "batch_all", margin: float = 0.2):
        if mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}")
        self.mining, self.margin = mining, margin

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor, not_labels: torch.Tensor | None = None):
        """`not_labels[i]`: the class sample i was reported not to be (-1: none). Every margin-violating triplet
        whose negative is such a reported pair (either way round) is added to the mined ones: a known mistake
        is trained on whatever the mining strategy would have picked."""
        labels = torch.as_tensor(labels, device=embeddings.device)
        d = squared_distances(embeddings.detach().float())
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask = same & ~eye      # [a, p]
        neg_mask = ~same            # [a, n]
        a, p, n = getattr(self, f"_{self.mining}")(d, pos_mask, neg_mask)
        if not_labels is None:
            return a, p, n
        nl = torch.as_tensor(not_labels, device=labels.device)
        reported = ((nl[None, :] == labels[:, None]) | (nl[:, None] == labels[None, :])) & neg_mask   # [a, n]
        if not reported.any():
            return a, p, n
        valid = pos_mask[:, :, None] & reported[:, None, :] & (d[:, :, None] - d[:, None, :] + self.margin > 0)
        ra, rp, rn = valid.nonzero(as_tuple=True)
        m = len(labels)
        codes = torch.unique(torch.cat([(a * m + p) * m + n, (ra * m + rp) * m + rn]))  # union, sorted
        return codes // (m * m), (codes // m) % m, codes % m

    def _batch_all(self, d, pos_mask, neg_mask):
        """Every valid triplet that still violates the margin (loss > 0)."""
        loss = d[:, :, None] - d[:, None, :] + self.margin       # [a, p, n]
        valid = pos_mask[:, :, None] & neg_mask[:, None, :] & (loss > 0)
        a, p, n = valid.nonzero(as_tuple=True)
        return a, p, n

    def _batch_hard(self, d, pos_mask, neg_mask):
        """Per anchor: the farthest positive and the closest negative."""
        has = pos_mask.any(1) & neg_mask.any(1)
        far_pos = torch.where(pos_mask, d, torch.full_like(d, -1.0)).argmax(1)
        near_neg = torch.where(neg_mask, d, torch.full_like(d, float("inf"))).argmin(1)
        a = has.nonzero(as_tuple=True)[0]
        return a, far_pos[a], near_neg[a]

    def _semi_hard(self, d, pos_mask, neg_mask):
        """Per (anchor, positive): the closest negative farther than the positive but within the margin."""
        ap = d[:, :, None]
        an = d[:, None, :]
        semi = pos_mask[:, :, None] & neg_mask[:, None, :] & (an > ap) & (an < ap + self.margin)
        masked = torch.where(semi, an.expand_as(semi), torch.full(semi.shape, float("inf"), device=d.device))
        best = masked.argmin(2)                                   # [a, p]
        ok = semi.any(2)
        a, p = ok.nonzero(as_tuple=True)
        return a, p, best[a, p]
