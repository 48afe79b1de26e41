"""Exact search latency over galleries of 10k, 100k and 1M random unit vectors, with the memory they take.
Prints JSON.

    python -m benchmarks.search [--sizes 10000,100000,1000000] [--queries 50]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from app.gallery.index import VectorIndex
from benchmarks.report import emit


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    out = {"benchmark": "search", "dim": 512, "top_k": args.top_k, "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        base = rss_mb()
        idx = VectorIndex("bench")
        chunk = 100_000
        for start in range(0, n, chunk):  # built in chunks, as the store feeds it
            m = min(chunk, n - start)
            v = rng.standard_normal((m, 512), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            ids = np.arange(start, start + m)
            idx.add(ids + 1, ids + 1, ids // 4 + 1, [f"p{i}" for i in ids // 4], v)
        mem = rss_mb() - base
        q = rng.standard_normal((args.queries, 512), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        idx.search(q[:1], args.top_k)
        times = []
        for i in range(args.queries):
            t = time.perf_counter()
            idx.search(q[i:i + 1], args.top_k)
            times.append((time.perf_counter() - t) * 1000)
        out["sizes"][str(n)] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                                "p95_ms": round(float(np.percentile(times, 95)), 2),
                                "vectors_held_mb": round(n * 512 * idx._mat.element_size() / 2**20, 1),
                                "rss_delta_mb": round(mem, 1)}
        del idx
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
