"""Pixel preprocessing for the embedder, in one place."""
from __future__ import annotations

import torch


def fixed_image_standardization(image: torch.Tensor) -> torch.Tensor:
    """uint8/float pixels 0..255 -> roughly -1..1, as FaceNet 20180408 and 20180402 were trained."""
    return (image.float() - 127.5) / 128.0


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """Per-image zero mean / unit std (older FaceNet checkpoints)."""
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    std = x.std(dim=(-3, -2, -1), keepdim=True).clamp(min=1.0 / (x[0].numel() ** 0.5))
    return (x - mean) / std


NORMALIZATIONS = {"fixed_standardization": fixed_image_standardization, "prewhiten": prewhiten}


def normalize(batch: torch.Tensor, name: str) -> torch.Tensor:
    try:
        return NORMALIZATIONS[name](batch)
    except KeyError:
        raise ValueError(f"unknown normalization {name!r}; known: {sorted(NORMALIZATIONS)}") from None
