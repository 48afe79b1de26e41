"""Inference fast path chosen at load time: batch-norm folded into convolutions, channels-last memory,
and reduced precision where the hardware runs it natively (bf16 on CPUs with AVX512-BF16/AMX, fp16 on CUDA).

`precision`: 'fp32' (the network as trained), 'fast' (pick the best for this device), 'bf16', 'fp16'.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from model.inception_resnet import BasicConv2d, l2_normalize


def cpu_has_native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Eval-mode copy with every conv+bn (and last_linear+last_bn) fused into one layer."""
    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if isinstance(module, BasicConv2d) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    if isinstance(getattr(net, "last_bn", None), nn.BatchNorm1d):
        net.last_linear = fuse_linear_bn_eval(net.last_linear, net.last_bn)
        net.last_bn = nn.Identity()
    return net


class _Cast(nn.Module):
    """Runs the wrapped network in `dtype` and channels-last; returns float32 (L2-normalised in fp32)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        feats = self.net.forward_head(self.net.forward_features(x)).float()
        return l2_normalize(feats)


def resolve_precision(device: torch.device, precision: str) -> str:
    if precision != "fast":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32-folded"


def optimise(net: nn.Module, device: torch.device, precision: str = "fp32") -> tuple[nn.Module, str]:
    """Return (network to call for embeddings, precision actually used)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return net.eval(), "fp32"
    dtypes = {"fp32-folded": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r}; use fp32, fast, bf16 or fp16")
    folded = fold_batchnorm(net).to(device=device, dtype=dtypes[precision], memory_format=torch.channels_last)
    return _Cast(folded, dtypes[precision]).eval(), precision
