"""What micro-batching can give at most on this machine: the pipeline in-process, with no HTTP, no database and no
request threads, one image at a time and in batches of `--batch`, on the images `benchmarks.serve` sends (the
first image of the first 32 LFW people), same weights, precision, detector backend and detection floor as a
server started with the defaults. Both modes alternate in rounds of `--seconds` each (`--passes` times), so that
machine noise hits both; each figure is the median over the passes. JSON.

The two modes do the same work per image (decode, detect, crop, embed); batched, the detector runs its pyramid
stages and the embedder its forward once per batch instead of once per image. Their ratio bounds what batching
can give a server on this machine (issue 33's "16 clients: batching on >= 2x batching off"): a server's
requests per second with batching on cannot exceed the batched rate here (the request's own work only adds),
and with batching off the server runs the model one image at a time, as the first mode does (overlapping only
the request's own work with it).

    python -m benchmarks.batching_ceiling [--batch 16] [--seconds 8] [--passes 3] [--precision auto]

Run it alone on the machine (`flock /tmp/faceid-bench.lock ...`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.serve import probes


class NetworkClock:
    """Time spent inside ONNX Runtime's `run` (the detector's three networks and the int8 embedder are ONNX
    Runtime sessions): what batching can share in the networks themselves, apart from the Python around them."""

    def __init__(self):
        import onnxruntime as ort

        self.seconds, cls = 0.0, ort.InferenceSession
        original = cls.run

        def run(session, *a, **kw):
            t = time.perf_counter()
            try:
                return original(session, *a, **kw)
            finally:
                self.seconds += time.perf_counter() - t

        cls.run = run


def rate(pipeline, clock: NetworkClock, images: list[bytes], floor: float | None, size: int,
         seconds: float) -> dict:
    """Images per second, `size` images at a time, and the milliseconds per image of each stage: decoded and
    cropped one by one, detected in one call of the detector and embedded in one forward (as the server's
    batchers do; `size` 1: as `FacePipeline.process` and a server with batching off do)."""
    n, i, stop = 0, 0, time.perf_counter() + seconds
    spent = dict.fromkeys(("decode", "detect", "detect_networks", "crop", "embed", "embed_network"), 0.0)
    t0 = time.perf_counter()
    while time.perf_counter() < stop:
        group = [images[(i + k) % len(images)] for k in range(size)]
        a = time.perf_counter()
        decoded = [pipeline.decode(d) for d in group]
        b, before = time.perf_counter(), clock.seconds
        dets = pipeline.detect(decoded, None if floor is None else [floor] * size)
        c, spent["detect_networks"] = time.perf_counter(), spent["detect_networks"] + clock.seconds - before
        faces = [f for im, d in zip(decoded, dets) for f in pipeline.faces(im, d)]
        d_, before = time.perf_counter(), clock.seconds
        if faces:
            pipeline.embedder.embed(np.stack([f.crop for f in faces]))
        e, spent["embed_network"] = time.perf_counter(), spent["embed_network"] + clock.seconds - before
        for k, dt in (("decode", b - a), ("detect", c - b), ("crop", d_ - c), ("embed", e - d_)):
            spent[k] += dt
        n, i = n + size, i + size
    return {"images_per_s": n / (time.perf_counter() - t0), **{f"{k}_ms": v / n * 1000 for k, v in spent.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--precision", default="auto", help="as FACEID_PRECISION (auto: what a server would pick)")
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not (faces_dir() / "lfw").is_dir():
        return emit({"skipped": f"no LFW under {faces_dir()}"}, args.out)
    from app.core.config import Settings
    from model.pipeline import FacePipeline, resolve_detector_backend, resolve_device

    settings = Settings(weights=args.weights, device="cpu", precision=args.precision)
    device = resolve_device("cpu")
    pipeline = FacePipeline.load(weights=args.weights, device="cpu", precision=args.precision,
                                 detector_backend=resolve_detector_backend(device, settings.detector_backend))
    floor = None if settings.detect_below_gate else float(settings.search_min_face_size)
    images, clock = probes(32), NetworkClock()
    modes = {"one_at_a_time": 1, "batched": args.batch}
    for size in modes.values():  # warm-up: every shape once
        rate(pipeline, clock, images, floor, size, 1.0)
    rows = [{m: rate(pipeline, clock, images, floor, size, args.seconds) for m, size in modes.items()}
            for _ in range(args.passes)]
    med = {m: {k: statistics.median(r[m][k] for r in rows) for k in rows[0][m]} for m in modes}
    one, many = med["one_at_a_time"], med["batched"]

    def gain(k: str) -> float | None:  # None: the stage does not run in ONNX Runtime here (no time to compare)
        if k == "images_per_s":
            return round(many[k] / one[k], 3)
        return round(one[k] / many[k], 3) if one[k] > 0 and many[k] > 0 else None

    gains = {k.removesuffix("_ms"): gain(k) for k in many}
    med = {m: {k: round(v, 2) for k, v in row.items()} for m, row in med.items()}
    return emit({
        "benchmark": "batching_ceiling",
        "images": len(images), "batch": args.batch, "seconds": args.seconds, "passes": args.passes,
        "precision": pipeline.embedder.precision, "precision_reason": pipeline.embedder.precision_reason,
        "detector_backend": pipeline.detector.backend, "detection_floor_px": floor,
        "torch_threads": torch.get_num_threads(),
        "median": med,
        "batched_over_one_at_a_time": gains,
        "passes_images_per_s": [{m: round(r[m]["images_per_s"], 2) for m in modes} for r in rows],
    }, args.out)


if __name__ == "__main__":
    sys.exit(main())
