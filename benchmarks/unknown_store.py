"""What keeping unknown faces costs in CPU, step by step, on a real SQLite file: one kept face (`UnknownStore.riding`
inside a transaction, as identify's probes carry it, with the commit), and a refine's parts (snapshot, clustering,
apply, templates, suggestions) over N faces, each with numpy's BLAS at one thread (what the server runs,
FACEID_BLAS_THREADS=1) and at the library's default (one per core), in the same process and the same run.

CPU time above wall time means threads working beside the caller: with OpenBLAS's default, its idle threads spin
on a core after each call (docs/unknown.md).

    python -m benchmarks.unknown_store [--faces 2000] [--keeps 600] [--out benchmarks/results/unknown_store.json]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.report import emit


def _timed(fn) -> tuple[object, float, float]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, 1000 * (time.process_time() - c), 1000 * (time.perf_counter() - w)


def run(faces: int, keeps: int, seed: int = 0) -> dict:
    from threadpoolctl import threadpool_info, threadpool_limits

    from app.gallery.feedback import FaceCrop
    from app.gallery.store import GalleryStore, crop_to_png, make_engine, migrate
    from app.gallery.unknown import UnknownStore
    from app.services.unknown import template_of
    from model.clustering import average_linkage

    rng = np.random.default_rng(seed)
    png = crop_to_png(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))

    def crop(i: int) -> FaceCrop:
        return FaceCrop(png, 160, 0, f"{i:064x}", [0, 0, 80, 80], [[1.0, 1.0]] * 5, 0.99, "v1")

    v = rng.normal(size=(faces + keeps, 512)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    default = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    default = max(default, os.cpu_count() or 1)
    out: dict = {"benchmark": "unknown_store", "faces": faces, "keeps": keeps, "blas_default_threads": default,
                 "threshold": 0.5, "runs": {}}
    for name, threads in (("blas_1_thread", 1), ("blas_default", default)):
        with tempfile.TemporaryDirectory() as d, threadpool_limits(threads, user_api="blas"):
            engine = make_engine(f"sqlite:///{d}/g.db")
            migrate(engine)
            store = UnknownStore(GalleryStore(engine))
            for i in range(faces):
                store.keep([(crop(i), {"v1": v[i]})], "v1", 0.5, 0, 10 * (faces + keeps))
            c, w = time.process_time(), time.perf_counter()
            for i in range(faces, faces + keeps):  # as identify's probes' transaction carries them
                with store.riding([(crop(i), {"v1": v[i]})], "v1", 0.5, 0.0, 10 * (faces + keeps)) as ride:
                    with store.sessions() as s, s.begin():
                        ride.keep(s)
                    ride.committed = True
            row = {"keep_cpu_ms": round(1000 * (time.process_time() - c) / keeps, 2),
                   "keep_wall_ms": round(1000 * (time.perf_counter() - w) / keeps, 2)}
            (rev, ids, old, _, vec), cpu, wall = _timed(lambda: store.snapshot("v1"))
            row["snapshot"] = {"cpu_ms": round(cpu, 1), "wall_ms": round(wall, 1)}
            new, cpu, wall = _timed(lambda: average_linkage(vec, 0.5))
            row["cluster"] = {"cpu_ms": round(cpu, 1), "wall_ms": round(wall, 1)}
            _, cpu, wall = _timed(lambda: store.apply(rev, ids, old, new, ("v1", 0.5, vec)))
            row["apply"] = {"cpu_ms": round(cpu, 1), "wall_ms": round(wall, 1)}
            order = np.unique(new)
            _, cpu, wall = _timed(lambda: np.stack([template_of(vec[new == c]) for c in order]))
            row["templates"] = {"cpu_ms": round(cpu, 1), "wall_ms": round(wall, 1)}
            _, cpu, wall = _timed(lambda: store.set_suggestions({int(c): (None, None) for c in order}))
            row["suggestions"] = {"cpu_ms": round(cpu, 1), "wall_ms": round(wall, 1)}
            parts = [row[k] for k in ("snapshot", "cluster", "apply", "templates", "suggestions")]
            row["refine_cpu_ms"] = round(sum(p["cpu_ms"] for p in parts), 1)
            row["refine_wall_ms"] = round(sum(p["wall_ms"] for p in parts), 1)
            out["runs"][name] = row
            engine.dispose()
    one, dflt = out["runs"]["blas_1_thread"], out["runs"]["blas_default"]
    out["refine_cpu_ratio_default_vs_1_thread"] = round(dflt["refine_cpu_ms"] / max(one["refine_cpu_ms"], 1e-9), 2)
    out["refine_wall_ratio_default_vs_1_thread"] = round(dflt["refine_wall_ms"] / max(one["refine_wall_ms"], 1e-9), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=int, default=2000, help="faces kept before the refine is timed")
    ap.add_argument("--keeps", type=int, default=600, help="kept faces timed one by one")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    return emit(run(args.faces, args.keeps), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
