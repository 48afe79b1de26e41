"""InceptionResnetV1 (FaceNet) with facenet-pytorch's layer names, so its published state_dicts load.

Layer names follow the TensorFlow original via facenet-pytorch (`conv2d_1a`, `repeat_1`, `mixed_6a`,
`block8`, `last_linear`, `last_bn`, `logits`). Weights are never downloaded in the constructor unless
`pretrained` is given, and then only through `model.weights` (cache first, offline source second).
"""
from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

# Number of training classes of each published weight set (the size of its `logits` head).
PRETRAINED_NUM_CLASSES = {"vggface2": 8631, "casia-webface": 10575}
EMBEDDING_SIZE = 512


class BasicConv2d(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, kernel_size, stride, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride,
                              padding=padding, bias=False)
        # eps as in the TensorFlow original
        self.bn = nn.BatchNorm2d(out_planes, eps=0.001, momentum=0.1, affine=True)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Block35(nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(256, 32, kernel_size=1, stride=1)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 32, kernel_size=1, stride=1),
            BasicConv2d(32, 32, kernel_size=3, stride=1, padding=1),
        )
        self.branch2 = nn.Sequential(
            BasicConv2d(256, 32, kernel_size=1, stride=1),
            BasicConv2d(32, 32, kernel_size=3, stride=1, padding=1),
            BasicConv2d(32, 32, kernel_size=3, stride=1, padding=1),
        )
        self.conv2d = nn.Conv2d(96, 256, kernel_size=1, stride=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Block17(nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.branch0 = BasicConv2d(896, 128, kernel_size=1, stride=1)
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 128, kernel_size=1, stride=1),
            BasicConv2d(128, 128, kernel_size=(1, 7), stride=1, padding=(0, 3)),
            BasicConv2d(128, 128, kernel_size=(7, 1), stride=1, padding=(3, 0)),
        )
        self.conv2d = nn.Conv2d(256, 896, kernel_size=1, stride=1)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        return self.relu(self.conv2d(out) * self.scale + x)


class Block8(nn.Module):
    def __init__(self, scale: float = 1.0, noReLU: bool = False):  # noqa: N803 (facenet-pytorch name)
        super().__init__()
        self.scale = scale
        self.noReLU = noReLU
        self.branch0 = BasicConv2d(1792, 192, kernel_size=1, stride=1)
        self.branch1 = nn.Sequential(
            BasicConv2d(1792, 192, kernel_size=1, stride=1),
            BasicConv2d(192, 192, kernel_size=(1, 3), stride=1, padding=(0, 1)),
            BasicConv2d(192, 192, kernel_size=(3, 1), stride=1, padding=(1, 0)),
        )
        self.conv2d = nn.Conv2d(384, 1792, kernel_size=1, stride=1)
        if not self.noReLU:
            self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat((self.branch0(x), self.branch1(x)), 1)
        out = self.conv2d(out) * self.scale + x
        return out if self.noReLU else self.relu(out)


class Mixed_6a(nn.Module):  # noqa: N801 (TensorFlow name)
    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, kernel_size=3, stride=2)
        self.branch1 = nn.Sequential(
            BasicConv2d(256, 192, kernel_size=1, stride=1),
            BasicConv2d(192, 192, kernel_size=3, stride=1, padding=1),
            BasicConv2d(192, 256, kernel_size=3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed_7a(nn.Module):  # noqa: N801 (TensorFlow name)
    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(
            BasicConv2d(896, 256, kernel_size=1, stride=1),
            BasicConv2d(256, 384, kernel_size=3, stride=2),
        )
        self.branch1 = nn.Sequential(
            BasicConv2d(896, 256, kernel_size=1, stride=1),
            BasicConv2d(256, 256, kernel_size=3, stride=2),
        )
        self.branch2 = nn.Sequential(
            BasicConv2d(896, 256, kernel_size=1, stride=1),
            BasicConv2d(256, 256, kernel_size=3, stride=1, padding=1),
            BasicConv2d(256, 256, kernel_size=3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class InceptionResnetV1(nn.Module):
    """FaceNet embedder: (N, 3, 160, 160) standardised RGB -> (N, 512) unit vectors, or logits.

    `pretrained` ('vggface2' / 'casia-webface') adds the matching `logits` head and loads the weights
    through the weight registry. With `classify=True` and `num_classes`, `logits` is a fresh head of that size.
    """

    def __init__(self, pretrained: str | None = None, classify: bool = False,
                 num_classes: int | None = None, dropout_prob: float = 0.6, device=None):
        super().__init__()
        self.pretrained = pretrained
        self.classify = classify
        self.num_classes = num_classes
        if pretrained is not None and pretrained not in PRETRAINED_NUM_CLASSES:
            raise ValueError(f"pretrained must be one of {sorted(PRETRAINED_NUM_CLASSES)}, got {pretrained!r}")
        if pretrained is None and classify and num_classes is None:
            raise ValueError('If "pretrained" is not given and "classify" is True, "num_classes" must be given')

        self.conv2d_1a = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, kernel_size=3, stride=1)
        self.conv2d_2b = BasicConv2d(32, 64, kernel_size=3, stride=1, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, kernel_size=1, stride=1)
        self.conv2d_4a = BasicConv2d(80, 192, kernel_size=3, stride=1)
        self.conv2d_4b = BasicConv2d(192, 256, kernel_size=3, stride=2)
        self.repeat_1 = nn.Sequential(*[Block35(scale=0.17) for _ in range(5)])
        self.mixed_6a = Mixed_6a()
        self.repeat_2 = nn.Sequential(*[Block17(scale=0.10) for _ in range(10)])
        self.mixed_7a = Mixed_7a()
        self.repeat_3 = nn.Sequential(*[Block8(scale=0.20) for _ in range(5)])
        self.block8 = Block8(noReLU=True)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout_prob)
        self.last_linear = nn.Linear(1792, EMBEDDING_SIZE, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=0.001, momentum=0.1, affine=True)

        if pretrained is not None:
            self.logits = nn.Linear(EMBEDDING_SIZE, PRETRAINED_NUM_CLASSES[pretrained])
            load_weights(self, pretrained)
        if classify and num_classes is not None:
            self.logits = nn.Linear(EMBEDDING_SIZE, num_classes)

        self.device = torch.device("cpu")
        if device is not None:
            self.device = torch.device(device)
            self.to(self.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone: image batch -> (N, 1792) pooled features."""
        x = self.conv2d_1a(x)
        x = self.conv2d_2a(x)
        x = self.conv2d_2b(x)
        x = self.maxpool_3a(x)
        x = self.conv2d_3b(x)
        x = self.conv2d_4a(x)
        x = self.conv2d_4b(x)
        x = self.repeat_1(x)
        x = self.mixed_6a(x)
        x = self.repeat_2(x)
        x = self.mixed_7a(x)
        x = self.repeat_3(x)
        x = self.block8(x)
        x = self.avgpool_1a(x)
        return torch.flatten(x, 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Bottleneck: (N, 1792) -> (N, 512) unnormalised embedding (before L2 / logits)."""
        return self.last_bn(self.last_linear(self.dropout(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_head(self.forward_features(x))
        if self.classify:
            return self.logits(x)
        # The one place where embeddings are L2-normalised.
        return F.normalize(x, p=2, dim=1)


def get_torch_home() -> str:
    """`$TORCH_HOME`, else `$XDG_CACHE_HOME/torch`, else `~/.cache/torch` (as torch.hub does)."""
    return os.path.expanduser(
        os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    )


def load_weights(mdl: nn.Module, dname: str) -> None:
    """Load the pretrained weight set `dname` ('vggface2' / 'casia-webface') into `mdl` (strict)."""
    from model.weights import load_state_dict  # local import: weights imports this module

    mdl.load_state_dict(load_state_dict(dname), strict=True)
