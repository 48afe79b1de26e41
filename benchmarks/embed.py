"""Embedding throughput: the project's fast path vs the plain fp32 NCHW eager forward, side by side in one
run, at batch 1, 16 and 64, with the cosine check on real face crops. Prints JSON.

    python -m benchmarks.embed [--precision fast] [--seconds 6]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmarks.report import emit
from model.fast import optimise
from model.pipeline import build_network, load_checkpoint
from model.preprocessing import fixed_image_standardization
from training.datasets import sample_crops as real_crops


def rate(fn, x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up (and one-time kernel selection)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 2:
            fn(x)
            n += 1
    return n * len(x) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    plain = build_network(load_checkpoint("casia-webface")).to(device).eval()
    fast, used = optimise(plain, device, args.precision)
    crops = real_crops(64)
    x_all = fixed_image_standardization(torch.from_numpy(crops).permute(0, 3, 1, 2)).to(device)
    with torch.inference_mode():
        ref, got = plain(x_all).float(), fast(x_all).float()
    cos = (ref * got).sum(1).cpu().numpy()
    result = {"benchmark": "embed", "device": str(device), "precision": used,
              "resolved_from": args.precision, "torch_threads": torch.get_num_threads(),
              "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "faces_checked": len(cos),
              "batches": {}}
    for b in (int(v) for v in args.batches.split(",")):
        x = x_all[:b] if b <= len(x_all) else x_all.repeat((b + len(x_all) - 1) // len(x_all), 1, 1, 1)[:b]
        base = rate(plain, x, args.seconds)   # interleaved per batch size: both see the same machine state
        mine = rate(fast, x, args.seconds)
        result["batches"][str(b)] = {"plain_fp32_img_s": round(base, 2), "fast_img_s": round(mine, 2),
                                     "speedup": round(mine / base, 2)}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
