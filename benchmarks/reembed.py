"""Hot-swap re-embedding throughput: a gallery of 2,000+ real face crops, a swap over HTTP, crops per second.
Prints JSON.

    python -m benchmarks.reembed [--faces 2000]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.gallery.store import GalleryStore, NewFace, make_engine, migrate
from benchmarks.faces import faces_dir
from benchmarks.lfw_embed import crops_cached
from benchmarks.models import perturbed_checkpoint
from benchmarks.report import emit
from benchmarks.server import running
from model.pipeline import FacePipeline


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=2000)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not (faces_dir() / "lfw").is_dir():
        print(json.dumps({"skipped": f"no LFW under {faces_dir()}"}))
        return 0
    paths = sorted((faces_dir() / "lfw").glob("*/*.jpg"))[: args.faces]
    pipeline = FacePipeline.load(device="cpu", precision=args.precision)
    crops, _ = crops_cached(pipeline, paths, Path(".cache/benchmarks"))
    vectors = pipeline.embedder.embed(crops)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "g.db"
        engine = make_engine(f"sqlite:///{db}")
        migrate(engine)
        store = GalleryStore(engine)
        for i in range(0, len(paths), 200):  # one transaction per 200 faces, each person an identity
            for p, c, v in zip(paths[i:i + 200], crops[i:i + 200], vectors[i:i + 200]):
                store.enroll(p.parent.name, [NewFace(c, 14, p.name, [0, 0, 1, 1], [[0, 0]] * 5, 1.0,
                                                     {pipeline.embedder.version: v})])
        engine.dispose()
        ckdir = Path(tmp) / "checkpoints"
        version = perturbed_checkpoint(ckdir / "second.pt")
        env = {"FACEID_CHECKPOINTS_DIR": str(ckdir), "FACEID_PRECISION": args.precision}
        with running(db, env=env) as srv:
            c = httpx.Client(base_url=srv.url, timeout=120)
            t0 = time.perf_counter()
            assert c.post("/admin/model", json={"checkpoint": "second.pt"}).status_code == 202
            while (state := c.get("/admin/model").json())["swap"]["state"] not in ("done", "failed"):
                time.sleep(0.2)
            wall = time.perf_counter() - t0
    swap = state["swap"]
    return emit({"benchmark": "reembed", "faces": len(paths), "state": swap["state"],
                      "faces_reembedded": swap["faces_done"], "crops_per_s": swap["crops_per_s"],
                      "swap_wall_s": round(wall, 1), "serving_version": state["serving_version"],
                      "expected_version": version, "precision": args.precision}, args.out)


if __name__ == "__main__":
    sys.exit(main())
