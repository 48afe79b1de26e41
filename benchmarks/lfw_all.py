"""Every LFW image through the service's pipeline (MTCNN crop of the largest face, embedding, and the
embedding of the mirrored crop), cached on disk: the input of the 1:N and calibration benchmarks.

    python -m benchmarks.lfw_all [--weights casia-webface] [--precision fast]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.faces import faces_dir
from benchmarks.lfw_embed import crops_cached, embed_all
from model.pipeline import FacePipeline


def lfw_paths() -> list[Path]:
    return sorted((faces_dir() / "lfw").glob("*/*.jpg"))


def lfw_embeddings(weights: str = "casia-webface", precision: str = "fast", cache_dir: Path = Path(".cache/benchmarks"),
                   pipeline: FacePipeline | None = None) -> dict:
    """{"paths", "names", "emb", "emb_flip", "face_size", "version"} for every LFW image (cached by model version)."""
    pipeline = pipeline or FacePipeline.load(weights=weights, device="auto", precision=precision)
    version = pipeline.embedder.version
    paths = lfw_paths()
    out = cache_dir / f"lfw-all-{version}-{pipeline.embedder.precision}.npz"
    if out.is_file():
        d = np.load(out, allow_pickle=False)
        return {"paths": paths, "names": [p.parent.name for p in paths], "emb": d["emb"],
                "emb_flip": d["emb_flip"], "version": version, "crops_misses": int(d["misses"])}
    crops, misses = crops_cached(pipeline, paths, cache_dir)
    emb, _ = embed_all(pipeline.embedder, crops)
    emb_flip, _ = embed_all(pipeline.embedder, np.ascontiguousarray(crops[:, :, ::-1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, emb=emb, emb_flip=emb_flip, misses=misses)
    return {"paths": paths, "names": [p.parent.name for p in paths], "emb": emb, "emb_flip": emb_flip,
            "version": version, "crops_misses": misses}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--precision", default="fast")
    args = ap.parse_args(argv)
    d = lfw_embeddings(args.weights, args.precision)
    print(json.dumps({"images": len(d["paths"]), "version": d["version"], "no_face_found": d["crops_misses"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
