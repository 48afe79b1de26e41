"""Detection sized to the request: the service's detector (FacePipeline.detect, its backend) with the pyramid
starting at the search gate (24 px) and at the enrolment gate (40 px) against the full pyramid (20 px), on
the same images one at a time, the three taking turns image by image. JSON.

For each floor: the median per-image speedup over the full pyramid, the faces at or above that floor in the
full pyramid's answer, how many of them the floored detection did not find again at IoU >= 0.9 and how many
it found that the full one had not (both 0 means the same faces), and the faces below the floor that are no
longer reported.

    python -m benchmarks.detect_floor [--lfw 40] [--passes 2] [--out benchmarks/results/detect_floor.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from benchmarks.detect import lfw_sample
from benchmarks.faces import faces_dir
from benchmarks.report import emit

FLOORS = (24, 40)


def sizes(d) -> np.ndarray:
    return np.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])


def run_set(pipe, paths, passes: int) -> dict:
    from model.mtcnn_ort import unmatched_faces

    images = [pipe.decode(p.read_bytes()) for p in paths]
    floors = (None, *FLOORS)
    times = {f: [[] for _ in images] for f in floors}
    found = {f: [None] * len(images) for f in floors}
    pipe.detect(images[:1])
    for p in range(passes):
        for i, im in enumerate(images):
            order = floors[(i + p) % len(floors):] + floors[:(i + p) % len(floors)]
            for f in order:
                t0 = time.perf_counter()
                found[f][i] = pipe.detect([im], None if f is None else [f])[0]
                times[f][i].append(time.perf_counter() - t0)
    full = [statistics.median(t) for t in times[None]]
    out = {"images": len(images), "faces_full_pyramid": sum(len(d.boxes) for d in found[None]),
           "full_pyramid_median_ms": round(statistics.median(full) * 1000, 1)}
    for f in FLOORS:
        mine = [statistics.median(t) for t in times[f]]
        out[f"floor_{f}"] = {
            "median_ms": round(statistics.median(mine) * 1000, 1),
            "speedup_median": round(statistics.median(a / b for a, b in zip(full, mine)), 3),
            "faces_at_or_above": int(sum((sizes(d) >= f).sum() for d in found[None])),
            "missed_iou_0.9": sum(unmatched_faces(a, b, 0.9, f) for a, b in zip(found[None], found[f])),
            "extra_iou_0.9": sum(unmatched_faces(b, a, 0.9, f) for a, b in zip(found[None], found[f])),
            "faces_below_no_longer_reported": int(sum((sizes(d) < f).sum() for d in found[None])
                                                   - sum((sizes(d) < f).sum() for d in found[f]))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=int, default=40)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--detector-backend", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = faces_dir()
    if not (root / "photos").is_dir():
        print(json.dumps({"skipped": f"no face data under {root}"}))
        return 0
    from model.pipeline import FacePipeline

    pipe = FacePipeline.load(device=args.device, precision="fast", detector_backend=args.detector_backend)
    sets = {"photos": sorted((root / "photos").glob("*/*.jpg")), "lfw": lfw_sample(root, args.lfw)}
    result = {"benchmark": "detect_floor", "detector_backend": pipe.detector.backend, "passes": args.passes,
              "sets": {name: run_set(pipe, paths, args.passes) for name, paths in sets.items()}}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
