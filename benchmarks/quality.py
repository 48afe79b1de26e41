"""Search quality gates measured: how identification degrades as the searched face gets smaller or blurrier.
Prints JSON.

LFW 1:N as `benchmarks.openset` runs it (all enrollable people, 3 clean photos each, the cohort's people left
out), but each search photo's face crop is degraded first: shrunk to a face of `--sizes` pixels and brought back
to the network's 160 px (what the service's crop does with a small face), or blurred (Gaussian, `--blurs` px at
160 px). For each level: closed-set rank-1, and the FPIR and FNIR at the operating point the service ships for
this gallery (cohort-normalised, gallery tail included), plus the blur proxy the level gives (variance of the
Laplacian of the grey crop, the usual sharpness measure) and the face's box side (the crop less its margin).

    python -m benchmarks.quality [--sizes 16,24,32,48] [--blurs 1.5,3] [--mated 600] [--nonmated 1000]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from benchmarks.report import emit


def shrink(crop: np.ndarray, side: int) -> np.ndarray:
    img = Image.fromarray(crop)
    return np.asarray(img.resize((side, side), Image.BOX).resize(img.size, Image.BILINEAR))


def blur(crop: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(radius)))


def laplacian_variance(crop: np.ndarray) -> float:
    g = np.asarray(Image.fromarray(crop).convert("L"), dtype=np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--sizes", default="16,24,32,48", help="crop sides (px) the search face is shrunk to")
    ap.add_argument("--blurs", default="1.5,3", help="Gaussian blur radii (px at 160 px)")
    ap.add_argument("--mated", type=int, default=600)
    ap.add_argument("--nonmated", type=int, default=1000)
    ap.add_argument("--target-fpir", type=float, default=0.01)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    from app.services.operating_point import normalisation_of, operating_point_public, tail_of
    from benchmarks.lfw_all import lfw_embeddings, lfw_paths
    from benchmarks.lfw_embed import crops_cached, embed_all
    from benchmarks.openset import TARGET_FAR, gallery_tail, identity_scores, protocol, verification_threshold
    from model.calibration.cohort import cohort_people
    from model.calibration.operating_point import operating_point
    from model.pipeline import FacePipeline

    pipeline = FacePipeline.load(weights=args.weights, device="auto", precision=args.precision)
    norm = normalisation_of(pipeline.embedder.thresholds)
    if norm is None:
        raise SystemExit(f"{args.weights} carries no cohort normalisation")
    d = lfw_embeddings(args.weights, args.precision, pipeline=pipeline)
    names = d["names"]
    p = protocol(names, None, 3, only=set(names) - cohort_people(names), mated_per_person=1,
                 max_nonmated=args.nonmated)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(p.mated_rows), min(args.mated, len(p.mated_rows)), replace=False))
    mated_rows, truth = p.mated_rows[keep], p.mated_truth[keep]
    gallery = [d["emb"][r] for r in p.gallery_rows]
    op = operating_point(norm.tail, args.target_fpir, len(gallery), gallery_tail(gallery, "template", norm.cohort,
                                                                                 tail_of(pipeline.embedder.thresholds)),
                         max_rate=TARGET_FAR, comparisons_factor=norm.kappa)
    floor = verification_threshold(tail_of(pipeline.embedder.thresholds), gallery, "template")
    op = dataclasses.replace(op, normalised=True, reference_shift=norm.cohort.reference_shift, floor=floor)
    margin, side = pipeline.embedder.preprocessing.margin, pipeline.embedder.preprocessing.image_size
    rows = np.concatenate([mated_rows, p.nonmated_rows])
    paths = lfw_paths()
    crops, misses = crops_cached(pipeline, [paths[r] for r in rows], Path(".cache/benchmarks"))  # the searches only
    levels = [("clean", None, None)] + [(f"face {s} px", "size", int(s)) for s in args.sizes.split(",") if s] + \
        [(f"blur {b}", "blur", float(b)) for b in args.blurs.split(",") if b]
    out = []
    for name, kind, value in levels:
        probes = crops if kind is None else np.stack(
            [shrink(c, value) if kind == "size" else blur(c, value) for c in crops])
        emb, _ = embed_all(pipeline.embedder, probes)
        s = identity_scores(emb, gallery, "template")
        need = np.maximum(op.threshold + norm.cohort.shift(emb), floor)  # each face's own, as the service decides
        need_m, need_n = need[:len(mated_rows)], need[len(mated_rows):]
        sm, sn = s[:len(mated_rows)], s[len(mated_rows):]
        ok = sm.argmax(1) == truth
        box = None if kind != "size" else round(value * (side - 2 * margin) / side, 1)
        out.append({"level": name, "face_box_px": box,
                    "laplacian_variance_median": round(float(np.median([laplacian_variance(c) for c in probes])), 1),
                    "rank1": round(float(ok.mean()), 4),
                    "fpir": round(float(np.mean(sn.max(1) >= need_n)), 4),
                    "fnir": round(float(1 - np.mean(ok & (sm.max(1) >= need_m))), 4)})
        print(out[-1], file=sys.stderr, flush=True)
    return emit({"benchmark": "quality_gates", "weights": args.weights, "precision": args.precision,
                 "identities": len(gallery), "enrolled_per_person": 3, "mated_searches": int(len(mated_rows)),
                 "nonmated_searches": int(len(p.nonmated_rows)), "target_fpir": args.target_fpir,
                 "operating_point": operating_point_public(op), "levels": out,
                 "wall_s": round(time.perf_counter() - t0, 1)}, args.out)


if __name__ == "__main__":
    sys.exit(main())
