"""How fast can the embedder get on this CPU? Measured ceilings, side by side in one run. Prints JSON.

- FLOPs per 160x160 face (torch's FlopCounterMode) and the plain fp32 forward's share of this machine's
  measured fp32 GEMM peak (2048^3 matmul);
- GEMM peaks for fp32, bf16 and int8 (torch._int_mm): the best speedup any bf16 or int8 path could reach
  over the plain forward is the peak ratio times the plain forward's efficiency;
- the int8 accuracy guard: post-training fake quantisation of every conv/linear input and weight
  (per-channel int8 weights, per-tensor uint8 activations over the calibration set's 0.001/99.999
  percentiles) against fp32 on held-out real faces;
- a real int8 network (PyTorch's FX post-training quantisation, x86 backend, histogram observers) beside
  the plain forward at batch 16: images/s and cosine to fp32. Not a service option: it misses the guard.

    python -m benchmarks.ceiling
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.embed import rate, real_crops
from benchmarks.report import emit
from model.fast import fold_batchnorm
from model.pipeline import build_network, load_checkpoint
from model.preprocessing import fixed_image_standardization


def gemm_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Sustained GFLOPS (GOPS for int8) of one n x n x n matrix product."""
    if dtype == torch.int8:
        a = torch.randint(-100, 100, (n, n), dtype=torch.int8)
        b = torch.randint(-100, 100, (n, n), dtype=torch.int8)
        op = torch._int_mm
    else:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        op = torch.matmul
    op(a, b)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        op(a, b)
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9


def int8_fake_quant_cosine(net: nn.Module, calib: torch.Tensor, test: torch.Tensor) -> dict:
    net = fold_batchnorm(net)
    with torch.inference_mode():
        ref = net(test)
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ranges: dict[nn.Module, tuple[float, float]] = {}

    def observe(m, inputs):
        v = inputs[0].flatten()[:: max(1, inputs[0].numel() // 1_000_000)]
        lo, hi = torch.quantile(v, torch.tensor([0.00001, 0.99999])).tolist()
        old = ranges.get(m, (lo, hi))
        ranges[m] = (min(old[0], lo, 0.0), max(old[1], hi))

    hooks = [m.register_forward_pre_hook(observe) for m in layers]
    with torch.inference_mode():
        net(calib)
    for h in hooks:
        h.remove()

    def quantise_input(m, inputs):
        lo, hi = ranges[m]
        scale = max(hi - lo, 1e-8) / 255
        return (torch.fake_quantize_per_tensor_affine(inputs[0], scale, round(-lo / scale), 0, 255),)

    for m in layers:
        if m not in ranges:  # never called in forward (the classification head)
            continue
        w = m.weight.data
        s = (w.abs().flatten(1).amax(1) / 127).clamp(min=1e-12)
        m.weight.data = torch.fake_quantize_per_channel_affine(w, s, torch.zeros(len(s), dtype=torch.int32), 0,
                                                               -128, 127)
        m.register_forward_pre_hook(quantise_input)
    with torch.inference_mode():
        cos = (ref * net(test)).sum(1)
    return {"cosine_min": round(float(cos.min()), 5), "cosine_mean": round(float(cos.mean()), 5),
            "calibration_faces": len(calib), "faces_checked": len(test)}


def int8_fx(plain: nn.Module, calib: torch.Tensor, test: torch.Tensor, seconds: float) -> dict:
    import warnings

    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import (
        HistogramObserver,
        PerChannelMinMaxObserver,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    class Features(nn.Module):  # the traceable part; L2 normalisation is applied outside
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_head(self.net.forward_features(x))

    torch.backends.quantized.engine = "x86"
    qconfig = QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                                qscheme=torch.per_channel_symmetric))
    with warnings.catch_warnings():
        # FX quantisation is deprecated in favour of torchao; its quantized cat warns about mixed scales
        warnings.simplefilter("ignore")
        prepared = prepare_fx(Features(fold_batchnorm(plain)), get_default_qconfig_mapping("x86").set_global(qconfig),
                              example_inputs=(calib[:2],))
        with torch.inference_mode():
            prepared(calib)
        qnet = convert_fx(prepared)
        with torch.inference_mode():
            cos = (plain(test) * nn.functional.normalize(qnet(test), dim=1)).sum(1)
        x = test[:16]
        base, fast = rate(plain, x, seconds), rate(qnet, x, seconds)
    return {"cosine_min": round(float(cos.min()), 5), "plain_fp32_b16_img_s": round(base, 2),
            "int8_b16_img_s": round(fast, 2), "speedup": round(fast / base, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    plain = build_network(load_checkpoint("casia-webface")).eval()
    x16 = torch.randn(16, 3, 160, 160)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        plain(x16)
    gflop = counter.get_total_flops() / 16 / 1e9
    peaks = {name: gemm_peak(dt, seconds=args.seconds)
             for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8))}
    plain_img_s = rate(plain, x16, args.seconds * 2)
    efficiency = plain_img_s * gflop / peaks["fp32"]
    crops = fixed_image_standardization(torch.from_numpy(real_crops(128)).permute(0, 3, 1, 2))
    result = {
        "benchmark": "ceiling", "torch_threads": torch.get_num_threads(),
        "gflop_per_face": round(gflop, 3),
        "gemm_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "plain_fp32_b16_img_s": round(plain_img_s, 2),
        "plain_fp32_share_of_fp32_peak": round(efficiency, 3),
        # even at 100 % of its GEMM peak, a path cannot beat the plain forward by more than this
        "max_speedup_bound": {k: round(peaks[k] / peaks["fp32"] / efficiency, 2) for k in ("bf16", "int8")},
        "int8_fake_quant": int8_fake_quant_cosine(build_network(load_checkpoint("casia-webface")),
                                                  crops[:64], crops[64:]),
        "int8_fx": int8_fx(plain, crops[:64], crops[64:], args.seconds * 2),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
