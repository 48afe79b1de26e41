"""Large uploads: 12 MP JPEGs (the shared photos upscaled in memory, never written) through decode, detect
and crop, the full decode vs the reduced (draft-mode) decode with small faces cropped from full resolution,
side by side in one run (median of passes, taking turns). Prints JSON.

    python -m benchmarks.large [--photos 8] [--megapixels 12] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time

import numpy as np
from PIL import Image

from benchmarks.faces import faces_dir
from benchmarks.report import emit
from model.decode import decode_image
from model.draft import DraftImage, decode_for_detection
from model.pipeline import FacePipeline


def large_jpegs(n: int, megapixels: float) -> list[bytes]:
    out = []
    for p in sorted((faces_dir() / "photos").glob("*/*.jpg"))[:: 3][:n]:
        im = decode_image(p.read_bytes())
        f = (megapixels * 1e6 / (im.width * im.height)) ** 0.5
        buf = io.BytesIO()
        im.resize((round(im.width * f), round(im.height * f)), Image.BICUBIC).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--detector-backend", default="auto")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not (faces_dir() / "photos").is_dir():
        print(json.dumps({"skipped": f"no face data under {faces_dir()}"}))
        return 0
    pipe = FacePipeline.load(device="cpu", detector_backend=args.detector_backend)
    data = large_jpegs(args.photos, args.megapixels)
    limit = 40_000_000

    def full(d):
        im = decode_image(d, limit)
        return im, pipe.faces(im, pipe.detect([im])[0])

    def draft(d):
        im = decode_for_detection(d, limit, pipe.max_detect_side)
        return im, pipe.faces(im, pipe.detect([im])[0])

    loops = {"full_decode": full, "draft_decode": draft}
    times = {k: [] for k in loops}
    decode_ms = {k: [] for k in loops}
    for fn in loops.values():
        fn(data[0])
    for _ in range(args.repeats):
        for name, fn in loops.items():
            t0 = time.perf_counter()
            for d in data:
                fn(d)
            times[name].append((time.perf_counter() - t0) / len(data))
            t0 = time.perf_counter()
            for d in data:
                (decode_image(d, limit) if name == "full_decode" else decode_for_detection(d, limit, pipe.max_detect_side))
            decode_ms[name].append(1000 * (time.perf_counter() - t0) / len(data))
    found_full, found_draft, needed_full, same_crops, iou_min = 0, 0, 0, 0, 1.0
    for d in data:
        (a, fa), (b, fb) = full(d), draft(d)
        found_full, found_draft = found_full + len(fa), found_draft + len(fb)
        needed_full += int(isinstance(b, DraftImage) and b.decoded_full)
        for x in fb:
            ious = [_iou(x.box, y.box) for y in fa]
            if ious:
                iou_min = min(iou_min, max(ious))
                same_crops += int(np.array_equal(x.crop, fa[int(np.argmax(ious))].crop))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"benchmark": "large", "photos": len(data), "megapixels": args.megapixels,
              "example_size": list(Image.open(io.BytesIO(data[0])).size), "max_detect_side": pipe.max_detect_side,
              "detector_backend": pipe.detector.backend, "repeats": args.repeats,
              "decode_detect_crop_ms": {k: round(1000 * v, 1) for k, v in med.items()},
              "decode_ms": {k: round(statistics.median(v), 1) for k, v in decode_ms.items()},
              "speedup": round(med["full_decode"] / med["draft_decode"], 2),
              "faces_found": {"full_decode": found_full, "draft_decode": found_draft},
              "min_best_iou_draft_vs_full": round(iou_min, 3),
              "images_that_needed_the_full_decode": needed_full,
              "crops_identical_to_full_decode_crops": same_crops}
    return emit(result, args.out)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


if __name__ == "__main__":
    sys.exit(main())
