"""What the gallery's self-calibration costs: `OperatingPoints.gallery_tail` on in-memory galleries of
growing size (synthetic unit vectors, `--per-person` faces per identity), timed the way the service runs it
(sample whole identities up to 3,000 faces, score each face against the other sampled identities, build the
tail, with the shipped checkpoint's tail and cohort: duplicates left out, censoring, the self-check). Prints JSON.

    python -m benchmarks.gallery_calibration --sizes 1000,10000,100000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from app.gallery.search.memory import MemoryVersionSearch
from app.services.operating_point import GALLERY_SAMPLE_FACES, OperatingPoints, normalisation_of, tail_of
from benchmarks.report import emit


def gallery(n_faces: int, per_person: int, dim: int = 512, seed: int = 0) -> MemoryVersionSearch:
    rng = np.random.default_rng(seed)
    idx = MemoryVersionSearch("bench", dim)
    for start in range(0, n_faces, 20_000):
        m = min(20_000, n_faces - start)
        v = rng.normal(size=(m, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = np.arange(start, start + m)
        people = ids // per_person
        idx.add(ids + 1, ids + 1, people + 1, [f"p{p}" for p in people], v)
    return idx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--per-person", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    thresholds = json.loads((Path(__file__).resolve().parents[1] / "model" / "tails" / "casia-webface.json").read_text())
    prior, norm = tail_of(thresholds), normalisation_of(thresholds)
    rows = []
    for n in map(int, args.sizes.split(",")):
        idx = gallery(n, args.per_person)
        times = []
        for _ in range(args.repeats):
            ops = OperatingPoints(target_fpir=0.01, target_far=1e-3, override=None, default=0.5)
            t0 = time.perf_counter()  # as the service computes it: duplicates, censoring, the cohort, the self-check
            tail = ops.gallery_tail("bench", idx, norm.cohort if norm else None, prior=prior)
            times.append(time.perf_counter() - t0)
        rows.append({"faces": n, "identities": idx.identities, "sampled_faces": min(n, GALLERY_SAMPLE_FACES),
                     "scores": tail.n_pairs, "deepest_p": tail.deepest_p,
                     "seconds_median": round(float(np.median(times)), 3), "seconds_all": [round(t, 3) for t in times]})
    return emit({"benchmark": "gallery_calibration", "per_person": args.per_person, "results": rows}, args.out)


if __name__ == "__main__":
    sys.exit(main())
