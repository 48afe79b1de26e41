"""What flip test-time augmentation costs per request: `FacePipeline.process` (decode, detect, crop, embed) on
the same photos with `FACEID_FLIP_TTA` off and on, interleaved in one run (a same-run ratio; this machine is
noisy). Its accuracy is `benchmarks/openset.py`'s "template+flip" rows. Prints JSON.

    python -m benchmarks.flip_tta --rounds 3
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.report import emit
from model.pipeline import Embedder, FacePipeline, load_checkpoint
from training.datasets import faces_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    photos = sorted(Path(faces_dir(), "photos").rglob("*.jpg"))[: args.images]
    data = [p.read_bytes() for p in photos]
    pipeline = FacePipeline.load(device="cpu", precision=args.precision, detector_backend="auto")
    flip = Embedder(load_checkpoint("casia-webface"), "cpu", args.precision, flip=True)
    times = {"plain": [], "flip": []}
    faces = 0
    for d in data[:2]:  # warm both
        pipeline.process(d), pipeline.process(d, embedder=flip)
    for _ in range(args.rounds):
        for d in data:
            for name, emb in (("plain", pipeline.embedder), ("flip", flip)):
                t0 = time.perf_counter()
                found = pipeline.process(d, embedder=emb)
                times[name].append(time.perf_counter() - t0)
            faces += len(found)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    total = {k: float(np.sum(v)) for k, v in times.items()}
    return emit({"benchmark": "flip_tta", "precision": pipeline.embedder.precision, "images": len(data),
                 "rounds": args.rounds, "faces_per_round": faces // args.rounds,
                 "p50_ms": {k: round(v * 1000, 1) for k, v in p50.items()},
                 "time_ratio_flip_over_plain": round(total["flip"] / total["plain"], 3)}, args.out)


if __name__ == "__main__":
    sys.exit(main())
