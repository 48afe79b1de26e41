"""Embedding throughput: the project's fast path (or int8) vs the plain fp32 NCHW eager forward, side by side
in one run, at batch 1, 16 and 64, with the cosine check on real face crops. Prints JSON.

With `--precision int8` (the quantised model from `python -m model.quantize`) or `--accuracy`, also the
accuracy that decides whether it may be used: LFW 10-fold, 1:N FNIR at FPIR 0.01 and cross-precision rank-1
(gallery fp32, probes int8), against fp32 (benchmarks/precision_accuracy.py).

    python -m benchmarks.embed [--precision fast|int8] [--seconds 6]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    parser.add_argument("--accuracy", action="store_true", help="also LFW 10-fold, 1:N FNIR and cross-precision "
                        "rank-1 against fp32 (default with --precision int8)")
    parser.add_argument("--no-accuracy", action="store_true", help="speed and cosine only")
    parser.add_argument("--cache", default=".cache/benchmarks", help="LFW crop cache (benchmarks.lfw's)")
    parser.add_argument("--detector-backend", default="torch", help="detector of the LFW crops (accuracy)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.accuracy = (args.accuracy or args.precision == "int8") and not args.no_accuracy
    device = torch.device(args.device)
    ckpt = load_checkpoint("casia-webface")
    plain = build_network(ckpt).to(device).eval()
    if args.precision == "int8":
        from model.quantize import cpu_has_vnni, load_int8
        fast, used = load_int8(ckpt.version, device), "int8"
    else:
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
    if used == "int8":
        result["cpu_has_vnni"] = cpu_has_vnni()
    for b in (int(v) for v in args.batches.split(",")):
        x = x_all[:b] if b <= len(x_all) else x_all.repeat((b + len(x_all) - 1) // len(x_all), 1, 1, 1)[:b]
        base = rate(plain, x, args.seconds)   # interleaved per batch size: both see the same machine state
        mine = rate(fast, x, args.seconds)
        result["batches"][str(b)] = {"plain_fp32_img_s": round(base, 2), "fast_img_s": round(mine, 2),
                                     "speedup": round(mine / base, 2)}
    if args.accuracy and (faces_dir() / "lfw-meta" / "pairs.txt").is_file():
        result["accuracy"] = accuracy(plain, fast, used, args.cache, args.detector_backend)
    return emit(result, args.out)


def accuracy(plain, fast, used: str, cache: str, detector_backend: str = "torch") -> dict:
    """LFW 10-fold, 1:N FNIR at FPIR 0.01 and cross-precision search, fp32 vs `used`, on the View 2 images
    (MTCNN crops from the LFW benchmark's cache)."""
    from benchmarks.lfw_embed import crops_cached
    from benchmarks.precision_accuracy import compare, lfw_view2
    from model.pipeline import FacePipeline

    paths = lfw_view2()[0]
    pipeline = FacePipeline.load(device="cpu", detector_backend=detector_backend)
    crops, _ = crops_cached(pipeline, paths, Path(cache) if cache else None)

    def embed_with(net):
        out = []
        with torch.inference_mode():
            for i in range(0, len(crops), 64):
                x = fixed_image_standardization(torch.from_numpy(crops[i:i + 64]).permute(0, 3, 1, 2))
                out.append(net(x).float().numpy())
        return np.concatenate(out)

    got = compare({"fp32": embed_with(plain), used: embed_with(fast)})
    got["detector_backend"] = pipeline.detector.backend
    mine, ref = got[used], got["fp32"]
    got["deltas_points"] = {
        "lfw_10fold": round(100 * (mine["lfw_10fold"]["accuracy_mean"] - ref["lfw_10fold"]["accuracy_mean"]), 3),
        "fnir_at_fpir_0.01": round(100 * (mine["open_set"]["fnir"] - ref["open_set"]["fnir"]), 3),
        "cross_rank1": round(100 * (mine["cross_gallery_fp32"]["rank1"] - ref["open_set"]["rank1"]), 3)}
    return got


if __name__ == "__main__":
    sys.exit(main())
