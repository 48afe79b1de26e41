"""Encoding a face crop for storage: Pillow's PNG encoder (compress level 1, what the gallery used before) and
app.gallery.png (Up filter, zlib's run-length strategy), side by side on the same crops, in turns. JSON: the
median milliseconds per crop, the mean size, and whether every crop decodes back to the same pixels.

The crops are the centre 182 x 182 of LFW images (about the face and its margin) resized to 160 x 160, the size
the service stores (the model's input: `align.crop` resizes the box with its margin to `image_size`), or random
pixels where LFW is absent (the worst case for compression).

    python -m benchmarks.png [--crops 200] [--rounds 5]
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import numpy as np
from PIL import Image

from app.gallery.png import encode_rgb
from benchmarks.faces import faces_dir
from benchmarks.report import emit


def pillow(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def crops(n: int) -> tuple[str, list[np.ndarray]]:
    paths = sorted((faces_dir() / "lfw").glob("*/*_0001.jpg"))[:n]
    if not paths:
        rng = np.random.default_rng(0)
        return "random", [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(n)]
    return "lfw", [np.asarray(Image.open(p).convert("RGB").crop((34, 34, 216, 216)).resize((160, 160), Image.BILINEAR))
                   for p in paths]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    source, images = crops(args.crops)
    encoders = {"pillow_png_level1": pillow, "faceid_png": encode_rgb}
    times = {k: [] for k in encoders}
    sizes = {k: [] for k in encoders}
    lossless = {k: True for k in encoders}
    for r in range(args.rounds):
        for i, crop in enumerate(images):
            order = list(encoders) if (r + i) % 2 == 0 else list(reversed(encoders))  # in turns
            for name in order:
                t = time.perf_counter()
                data = encoders[name](crop)
                times[name].append(time.perf_counter() - t)
                if r == 0:
                    sizes[name].append(len(data))
                    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                    lossless[name] &= bool(np.array_equal(back, crop))
    ms = {k: round(statistics.median(v) * 1000, 3) for k, v in times.items()}
    return emit({
        "benchmark": "png", "source": source, "crops": len(images), "shape": list(images[0].shape),
        "rounds": args.rounds, "median_ms": ms,
        "mean_bytes": {k: round(statistics.mean(v)) for k, v in sizes.items()},
        "lossless": lossless,
        "pillow_over_faceid": round(ms["pillow_png_level1"] / ms["faceid_png"], 2),
    }, args.out)


if __name__ == "__main__":
    sys.exit(main())
