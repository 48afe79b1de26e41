"""Inference fast path chosen at load time: batch-norm folded into convolutions, channels-last memory,
and reduced precision where the hardware runs it natively (bf16 on CPUs with AVX512-BF16/AMX, fp16 on CUDA).

`precision`: 'fp32' (the network as trained), 'fast' (pick the best float path for this device), 'bf16',
'fp16', 'int8' (ONNX Runtime, model.quantize), 'auto' ('fast', but int8 first on CPUs with VNNI or AMX,
when the checkpoint's int8 model passes its gate: plan_precision says what to try and why).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from model.inception_resnet import BasicConv2d, l2_normalize


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # int8 dot products in one instruction: where int8 pays
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    return any(f in (cpu_flags() if flags is None else flags) for f in BF16_FLAGS)


def plan_precision(device: torch.device, precision: str, flags: set[str] | None = None) -> list[tuple[str, str]]:
    """The precisions to try in order, each with why: int8 first where it is asked for (or, with 'auto', where
    the CPU has VNNI or AMX), then the float path ('fast's choice). Only int8 can be unavailable (no int8
    model that passes its gate), so the list has at most two entries."""
    device = torch.device(device)
    if precision != "auto":
        if precision == "int8":
            return [("int8", "int8 requested")]
        chosen = resolve_precision(device, precision, flags)
        return [(chosen, f"{precision} requested" + (f": {chosen} on this {device.type}" if chosen != precision
                                                      else ""))]
    if device.type != "cpu":
        return [(resolve_precision(device, "fast"), f"auto on {device.type}: as fast")]
    flags = cpu_flags() if flags is None else flags
    if cpu_has_native_bf16(flags):
        fallback = ("bf16", f"auto: the CPU has {'/'.join(f for f in BF16_FLAGS if f in flags)}")
    else:
        fallback = ("fp32-folded", "auto: the CPU has neither VNNI nor AVX512-BF16")
    vnni = [f for f in INT8_FLAGS if f in flags]
    return ([("int8", f"auto: the CPU has {'/'.join(vnni)}")] if vnni else []) + [fallback]


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


def resolve_precision(device: torch.device, precision: str, flags: set[str] | None = None) -> str:
    if precision != "fast":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16(flags) else "fp32-folded"


def optimise(net: nn.Module, device: torch.device, precision: str = "fp32") -> tuple[nn.Module, str]:
    """Return (network to call for embeddings, precision actually used)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return net.eval(), "fp32"
    dtypes = {"fp32-folded": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"unknown precision {precision!r}; use auto, fast, fp32, bf16, fp16 or int8")
    folded = fold_batchnorm(net).to(device=device, dtype=dtypes[precision], memory_format=torch.channels_last)
    return _Cast(folded, dtypes[precision]).eval(), precision
