"""Triplet loss (FaceNet): max(0, ||a - p||² - ||a - n||² + margin) on L2-normalised embeddings."""
from __future__ import annotations

import torch
from torch import nn


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances, clamped at 0 against rounding."""
    dot = embeddings @ embeddings.t()
    sq = dot.diagonal()
    return (sq[:, None] - 2 * dot + sq[None, :]).clamp(min=0)


class TripletLoss(nn.Module):
    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = margin

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Mean loss over explicit (N, D) anchor / positive / negative embeddings."""
        ap = (anchor - positive).pow(2).sum(1)
        an = (anchor - negative).pow(2).sum(1)
        return torch.relu(ap - an + self.margin).mean()

    def forward_mined(self, embeddings: torch.Tensor, anchor_idx: torch.Tensor, positive_idx: torch.Tensor,
                      negative_idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(mean loss over the mined triplets, fraction of them still violating the margin)."""
        if anchor_idx.numel() == 0:
            return embeddings.sum() * 0.0, 0.0
        d = squared_distances(embeddings)
        losses = torch.relu(d[anchor_idx, positive_idx] - d[anchor_idx, negative_idx] + self.margin)
        active = float((losses > 0).float().mean())
        return losses.mean(), active
