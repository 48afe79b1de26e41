"""Embedding throughput: the project's fast path (or int8) vs the plain fp32 NCHW eager forward, side by side
in one run, at batch 1, 16 and 64, with the cosine check on real face crops. Prints JSON.

With `--precision int8` (model.quantize's model, built and gated once when not cached) or `--accuracy`, also the
accuracy that decides whether it may be used, on every LFW image: 10-fold, 1:N FNIR at FPIR 0.01 and rank-1,
and cross-precision (gallery fp32 or the `fast` path, probes int8), against fp32, with issue 36's gate
(benchmarks/precision_accuracy.py).

    python -m benchmarks.embed [--precision fast|int8] [--seconds 6]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.report import emit
from model.fast import optimise
from model.pipeline import build_network, load_checkpoint
from model.preprocessing import fixed_image_standardization
from training.datasets import faces_dir, sample_crops as real_crops


def rate(fn, x: torch.Tensor, seconds: float) -> float:
    with torch.inference_mode():
        fn(x)  # warm-up (and one-time kernel selection)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 2:
            fn(x)
            n += 1
    return n * len(x) / (time.perf_counter() - t0)


def paired_rates(fns: list, x: torch.Tensor, seconds: float) -> list[float]:
    """Images per second of each of `fns` on `x`, calls taking turns one by one and the median call time kept:
    on a shared machine both see the same load, and a burst of someone else's work costs a few calls only."""
    with torch.inference_mode():
        for fn in fns:
            fn(x)  # warm-up (and one-time kernel selection)
        times: list[list[float]] = [[] for _ in fns]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds * len(fns) or len(times[0]) < 3:
            for fn, ts in zip(fns, times):
                t = time.perf_counter()
                fn(x)
                ts.append(time.perf_counter() - t)
    return [len(x) / float(np.median(ts)) for ts in times]


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
    parser.add_argument("--detector-backend", default="torch", help="detector of the LFW crops (accuracy; "
                        "torch: benchmarks.lfw_all's crops)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.accuracy = (args.accuracy or args.precision == "int8") and not args.no_accuracy
    device = torch.device(args.device)
    ckpt = load_checkpoint("casia-webface")
    plain = build_network(ckpt).to(device).eval()
    if args.precision == "int8":  # the model as built, whatever its own gate said: this measures it
        from model.quantize import cpu_has_vnni, int8_embedder, int8_path, load_int8

        int8_embedder(ckpt, plain)  # builds (and gates) it once when the cache lacks it
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
        result["int8_build"] = json.loads(int8_path(ckpt.version).with_suffix(".json").read_text())
    for b in (int(v) for v in args.batches.split(",")):
        x = x_all[:b] if b <= len(x_all) else x_all.repeat((b + len(x_all) - 1) // len(x_all), 1, 1, 1)[:b]
        base, mine = paired_rates([plain, fast], x, args.seconds)
        result["batches"][str(b)] = {"plain_fp32_img_s": round(base, 2), "fast_img_s": round(mine, 2),
                                     "speedup": round(mine / base, 2)}
    if args.accuracy and (faces_dir() / "lfw-meta" / "pairs.txt").is_file():
        result["accuracy"] = accuracy(plain, fast, used, args.cache, args.detector_backend)
    return emit(result, args.out)


def accuracy(plain, fast, used: str, cache: str, detector_backend: str = "torch") -> dict:
    """fp32 vs `used` (and the service's `fast` path, and both galleries searched with `used` probes) on every
    LFW image: 10-fold, 1:N FNIR at FPIR 0.01 and rank-1 (benchmarks/precision_accuracy.py), with the gate.
    The crops are benchmarks.lfw_all's (its cache), each precision's embeddings cached beside them."""
    from benchmarks.lfw_all import lfw_paths
    from benchmarks.lfw_embed import crops_cached
    from benchmarks.precision_accuracy import compare, gate
    from model.calibration.cohort import cohort_people
    from model.fast import optimise
    from model.pipeline import FacePipeline
    from model.quantize import OrtEmbedder, export_embedder

    paths = lfw_paths()
    names = [p.parent.name for p in paths]
    pipeline = FacePipeline.load(device="cpu", precision="fast", detector_backend=detector_backend)
    crops, _ = crops_cached(pipeline, paths, Path(cache) if cache else None)
    version = pipeline.embedder.version

    def embed_with(net, precision: str) -> np.ndarray:
        from model.quantize import RECIPE

        tag = f"int8-{RECIPE}" if precision == "int8" else precision  # a new int8 recipe is a new model
        out = Path(cache or ".") / f"lfw-all-{version}-{tag}-emb.npy"
        if cache and out.is_file():
            return np.load(out)
        emb = []
        with torch.inference_mode():
            for i in tqdm(range(0, len(crops), 64), desc=f"embed {precision}", mininterval=30):
                x = fixed_image_standardization(torch.from_numpy(crops[i:i + 64]).permute(0, 3, 1, 2))
                emb.append(net(x).float().numpy())
        emb = np.concatenate(emb)
        if cache:
            np.save(out, emb)
        return emb

    shipped, shipped_precision = optimise(plain, torch.device("cpu"), "fast")
    # fp32 through ONNX Runtime (the same network, batch-norm folded: cosine to PyTorch's fp32 above 0.99999):
    # on a shared 2-core machine PyTorch's OpenMP threads wait for each other at every op and ran at 2 images/s
    fp32 = OrtEmbedder(export_embedder(plain))
    embeddings = {"fp32": embed_with(fp32, "fp32"), used: embed_with(fast, used)}
    if shipped_precision not in embeddings:  # the service's float path: benchmarks.lfw_all's embeddings if cached
        done = Path(cache or ".") / f"lfw-all-{version}-{shipped_precision}.npz"
        embeddings[shipped_precision] = (np.load(done)["emb"] if cache and done.is_file()
                                         else embed_with(shipped, shipped_precision))
    cross = tuple((g, used) for g in embeddings if g != used)
    got = compare(embeddings, names, paths, cohort_people(names), cross=cross)
    got["gate"] = {label: gate(row["delta_points_vs_fp32"]) for label, row in got.items()
                   if label != "fp32" and used in label}
    got.update({"images": len(paths), "detector_backend": pipeline.detector.backend,
                "today_default": shipped_precision})
    return got


if __name__ == "__main__":
    sys.exit(main())
