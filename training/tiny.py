"""A tiny embedder with InceptionResnetV1's training interface (`FEATURE_LAYERS`, `forward_features`,
`forward_head`), for smoke runs and tests of the training machinery (`--arch tiny`): seconds on a CPU, no
weights. Its checkpoints are not for serving."""
from __future__ import annotations

import torch
from torch import nn

from model.inception_resnet import l2_normalize


class TinyEmbedder(nn.Module):
    FEATURE_LAYERS = ("conv1", "conv2", "pool")

    def __init__(self, embedding_size: int = 64):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.last_linear = nn.Linear(16 * 16, embedding_size)

    def forward_features(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = len(self.FEATURE_LAYERS) if stop is None else stop
        for name in self.FEATURE_LAYERS[start:stop]:
            x = getattr(self, name)(x)
        return torch.flatten(x, 1) if stop == len(self.FEATURE_LAYERS) else x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.last_linear(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.forward_head(self.forward_features(x)))
