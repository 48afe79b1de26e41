"""MTCNN throughput on ~640x480 photos and on LFW images: batched detection vs a one-image-at-a-time loop
over the same images, in one run; and where a request's time goes (decode, detect, embed, search). JSON.

    python -m benchmarks.detect [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from PIL import Image

from app.gallery.index import VectorIndex
from benchmarks.faces import faces_dir
from benchmarks.report import emit
from model.decode import decode_image
from model.pipeline import FacePipeline


def photos_640(root) -> list[Image.Image]:
    out = []
    for p in sorted((root / "photos").glob("*/*.jpg")):
        im = decode_image(p.read_bytes())
        im.thumbnail((640, 640))  # 640x480-class
        out.append(im)
    return out


def rate(fn, images, repeats: int) -> float:
    fn(images[:2])
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(images)
    return repeats * len(images) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    root = faces_dir()
    if not (root / "photos").is_dir():
        print(json.dumps({"skipped": f"no face data under {root}"}))
        return 0
    pipe = FacePipeline.load(device=args.device, precision=args.precision)
    sets = {"photos_640": photos_640(root),
            "lfw_250": [decode_image(p.read_bytes()) for p in sorted((root / "lfw").glob("*/*_0001.jpg"))[:64]]}
    result = {"benchmark": "detect", "batch": args.batch, "sets": {}}
    for name, images in sets.items():
        def batched(ims):
            for i in range(0, len(ims), args.batch):
                pipe.detect(ims[i:i + args.batch])

        def one_by_one(ims):
            for im in ims:
                pipe.detect([im])

        loop = rate(one_by_one, images, args.repeats)
        many = rate(batched, images, args.repeats)
        sizes = sorted({im.size for im in images})
        result["sets"][name] = {"images": len(images), "distinct_sizes": len(sizes), "example_size": list(sizes[0]),
                                "one_at_a_time_img_s": round(loop, 2), "batched_img_s": round(many, 2),
                                "speedup": round(many / loop, 2)}
    # request time breakdown for one photo (single request, as the service does it)
    raw = [p.read_bytes() for p in sorted((root / "photos").glob("*/*.jpg"))[:20]]
    index = VectorIndex("bench")
    rng = np.random.default_rng(0)
    v = rng.standard_normal((10_000, 512), dtype=np.float32)
    index.add(np.arange(1, 10_001), np.arange(1, 10_001), np.arange(1, 10_001), [str(i) for i in range(10_000)],
              v / np.linalg.norm(v, axis=1, keepdims=True))
    parts = {"decode": 0.0, "detect": 0.0, "crop": 0.0, "embed": 0.0, "search": 0.0}
    for data in raw:
        t = time.perf_counter()
        im = decode_image(data)
        parts["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        det = pipe.detect([im])[0]
        parts["detect"] += time.perf_counter() - t
        t = time.perf_counter()
        faces = pipe.faces(im, det)
        parts["crop"] += time.perf_counter() - t
        if faces:
            t = time.perf_counter()
            emb = pipe.embedder.embed(np.stack([f.crop for f in faces]))
            parts["embed"] += time.perf_counter() - t
            t = time.perf_counter()
            index.search(emb, 5)
            parts["search"] += time.perf_counter() - t
    total = sum(parts.values())
    result["request_time_share"] = {k: round(v / total, 3) for k, v in parts.items()}
    result["request_ms_mean"] = round(1000 * total / len(raw), 1)
    result["precision"] = pipe.embedder.precision
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
