"""LFW 10-fold verification accuracy (standard View 2 protocol) with the service's pipeline. Prints JSON.

    python -m benchmarks.lfw [--weights casia-webface] [--out benchmarks/results/lfw.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.faces import faces_dir, read_pairs
from benchmarks.lfw_embed import crops_cached, embed_all
from benchmarks.report import emit
from model.pipeline import FacePipeline
from training.evaluate import impostor_calibration, kfold_accuracy, verification_report


def lfw_scores(pipeline: FacePipeline, cache_dir: Path | None, transform=None):
    pairs = read_pairs(faces_dir() / "lfw-meta" / "pairs.txt")
    paths = sorted({p for a, b, _, _ in pairs for p in (a, b)})
    index = {p: i for i, p in enumerate(paths)}
    crops, misses = crops_cached(pipeline, paths, cache_dir)
    if transform is not None:
        crops = transform(crops)
    emb, embed_s = embed_all(pipeline.embedder, crops)
    info_extra = impostor_calibration(emb, [p.parent.name for p in paths])
    a = np.array([index[p[0]] for p in pairs])
    b = np.array([index[p[1]] for p in pairs])
    scores = np.sum(emb[a] * emb[b], axis=1)
    issame = np.array([p[2] for p in pairs])
    folds = np.array([p[3] for p in pairs])
    return scores, issame, folds, {"images": len(paths), "no_face_found": misses, "embed_s": round(embed_s, 1),
                                   **info_extra}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="casia-webface", help="registry name or checkpoint path")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--detector-backend", default="torch", help="torch | onnxruntime | auto")
    parser.add_argument("--cache", default=".cache/benchmarks", help="face-crop cache folder ('' for none)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if not (faces_dir() / "lfw-meta" / "pairs.txt").is_file():
        print(json.dumps({"skipped": f"no LFW under {faces_dir()}"}))
        return 0
    t0 = time.perf_counter()
    pipeline = FacePipeline.load(weights=args.weights, device="auto", precision=args.precision,
                                 detector_backend=args.detector_backend)
    scores, issame, folds, info = lfw_scores(pipeline, Path(args.cache) if args.cache else None)
    result = {"benchmark": "lfw_10fold", "weights": args.weights, "model_version": pipeline.embedder.version,
              "precision": pipeline.embedder.precision,
              "detector_backend": pipeline.detector.backend, "device": str(pipeline.embedder.device),
              **kfold_accuracy(scores, issame, folds), **verification_report(scores, issame), **info,
              "wall_s": round(time.perf_counter() - t0, 1), "torch_threads": torch.get_num_threads()}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
