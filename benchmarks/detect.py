"""MTCNN throughput on ~640x480 photos and on LFW images: batched detection vs a one-image-at-a-time loop
over the same images, in one run; and where a request's time goes (decode, detect, embed, search). JSON.

Loops over the same images, taking turns pass by pass (median of the passes): this project's MTCNN one
image per call and in batches, for each detector backend (`--backends torch,onnxruntime`: PyTorch and
ONNX Runtime running the same networks); the service's detect in batches (with its mirrored border, so more
pixels); and, when `facenet_pytorch` is importable, facenet-pytorch's MTCNN one image per call (the plain
reference; `pip install --no-deps facenet-pytorch==2.6.0`, its wheel pins an old torch). `photos_640x480`
resizes the photos to one size, the best case for batching at that size. With `onnxruntime-int8` among the
backends (P/R/ONet quantised, model.mtcnn_ort.int8_runners), also whether it finds the same faces as
`onnxruntime` (IoU >= 0.9 for every face of at least 24 px) and its speed against it.

    python -m benchmarks.detect [--repeats 3] [--limit N] [--sets photos_640] [--backends torch,onnxruntime,onnxruntime-int8]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from PIL import Image

from app.gallery.search.memory import MemoryVersionSearch
from benchmarks.faces import faces_dir
from benchmarks.report import emit
from model.decode import decode_image
from model.pipeline import FacePipeline, load_detector


def photos_640(root) -> list[Image.Image]:
    out = []
    for p in sorted((root / "photos").glob("*/*.jpg")):
        im = decode_image(p.read_bytes())
        im.thumbnail((640, 640))  # 640x480-class
        out.append(im)
    return out


def lfw_sample(root, n: int) -> list:
    """The first `n` LFW `*_0001.jpg` images, leaving out the int8 models' calibration faces (so an int8
    detector is never checked on what it was calibrated on)."""
    from model.ort_quant import calibration_images

    calibration = set(calibration_images(320, root))
    return [p for p in sorted((root / "lfw").glob("*/*_0001.jpg")) if p not in calibration][:n]


def reference_detector(device: str):
    """facenet-pytorch's MTCNN with the same settings as ours, or None when it is not installed."""
    try:
        from facenet_pytorch import MTCNN as Reference
    except ImportError:
        return None
    return Reference(keep_all=True, min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709, device=device)


def rates(loops: dict, images, repeats: int) -> dict[str, float]:
    """Images per second of each loop: median over `repeats` passes, the loops taking turns."""
    for fn in loops.values():
        fn(images[:2])
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, fn in loops.items():
            t0 = time.perf_counter()
            fn(images)
            times[name].append(time.perf_counter() - t0)
    return {name: len(images) / statistics.median(ts) for name, ts in times.items()}


def same_faces(reference, candidate, images) -> dict:
    """Issue 36's rule: every face of at least 24 px (the search gate) found by one detector is found by the
    other at IoU >= 0.9."""
    from model.mtcnn_ort import GATE_MIN_FACE_PX, GATE_MIN_IOU, unmatched_faces

    ref, got = reference.detect(images), candidate.detect(images)
    return {"faces_reference": sum(int((np.minimum(d.boxes[:, 2] - d.boxes[:, 0], d.boxes[:, 3] - d.boxes[:, 1])
                                        >= GATE_MIN_FACE_PX).sum()) for d in ref),
            "missed": sum(unmatched_faces(a, b) for a, b in zip(ref, got)),
            "extra": sum(unmatched_faces(b, a) for a, b in zip(ref, got)),
            "min_iou": GATE_MIN_IOU, "min_face_px": GATE_MIN_FACE_PX}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--limit", type=int, default=None, help="images per set (default: all)")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backends", default="torch,onnxruntime",
                    help="detector backends to time side by side (the last one is the figures' main backend)")
    ap.add_argument("--detector-backend", default="auto", help="the service pipeline's backend (breakdown)")
    ap.add_argument("--sets", default="photos_640,photos_640x480,lfw_250")
    ap.add_argument("--no-breakdown", action="store_true", help="only the detector loops: no service loop, no request-time breakdown")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    root = faces_dir()
    if not (root / "photos").is_dir():
        print(json.dumps({"skipped": f"no face data under {root}"}))
        return 0
    backends = args.backends.split(",")
    pipe = FacePipeline.load(device=args.device, precision=args.precision, detector_backend=args.detector_backend)
    detectors = {b: load_detector(device=args.device, backend=b) for b in backends}
    int8_gate = {b: d.int8_gate for b, d in detectors.items() if d.int8_gate is not None}
    reference = reference_detector(args.device)
    photos = photos_640(root)[: args.limit]
    sets = {"photos_640": lambda: photos,
            "photos_640x480": lambda: [im.resize((640, 480), Image.BILINEAR) for im in photos],
            "lfw_250": lambda: [decode_image(p.read_bytes()) for p in lfw_sample(root, min(64, args.limit or 64))]}
    result = {"benchmark": "detect", "batch": args.batch, "repeats": args.repeats, "backends": backends,
              "service_detector_backend": pipe.detector.backend,
              "reference": "facenet_pytorch" if reference else "not installed", "sets": {},
              **({"int8_build_gate": int8_gate} if int8_gate else {})}

    def in_batches(fn):
        return lambda items: [fn(items[i:i + args.batch]) for i in range(0, len(items), args.batch)]

    def own_loops(det):
        return (lambda items: [det.detect([a]) for _, a in items],
                in_batches(lambda items: det.detect([a for _, a in items])))

    for name in args.sets.split(","):
        images = sets[name]()
        pairs = [(im, np.asarray(im)) for im in images]  # the detector takes arrays, the service PIL images
        loops = {}
        for b, det in detectors.items():
            loops[f"{b}_one_at_a_time"], loops[f"{b}_batched"] = own_loops(det)
        if not args.no_breakdown:  # what the service calls: the same with a mirrored border (more pixels)
            loops["service_detect_batched"] = in_batches(lambda items: pipe.detect([im for im, _ in items]))
        if reference:
            loops["facenet_pytorch_one_at_a_time"] = lambda items: [reference.detect(im) for im, _ in items]
        got = rates(loops, pairs, args.repeats)
        main_backend = backends[-1]
        row = {"images": len(images), "distinct_sizes": len({im.size for im in images}),
               "example_size": list(images[0].size), **{f"{k}_img_s": round(v, 2) for k, v in got.items()},
               "speedup_vs_own_loop": round(got[f"{main_backend}_batched"] / got[f"{main_backend}_one_at_a_time"], 2)}
        if {"torch", "onnxruntime"} <= set(backends):
            for mode in ("one_at_a_time", "batched"):
                row[f"onnxruntime_vs_torch_{mode}"] = round(got[f"onnxruntime_{mode}"] / got[f"torch_{mode}"], 2)
        if {"onnxruntime", "onnxruntime-int8"} <= set(backends):
            for mode in ("one_at_a_time", "batched"):
                row[f"int8_vs_onnxruntime_{mode}"] = round(got[f"onnxruntime-int8_{mode}"] / got[f"onnxruntime_{mode}"], 2)
            row["int8_same_faces"] = same_faces(detectors["onnxruntime"], detectors["onnxruntime-int8"],
                                                [a for _, a in pairs])
        for b, det in detectors.items():
            row[f"faces_found_{b}"] = sum(len(d) for d in det.detect([a for _, a in pairs]))
        row["faces_found"] = row[f"faces_found_{main_backend}"]
        if reference:
            row["speedup_vs_facenet_pytorch_loop"] = round(
                got[f"{main_backend}_batched"] / got["facenet_pytorch_one_at_a_time"], 2)
            row["faces_found_facenet_pytorch"] = sum(0 if b is None else len(b)
                                                     for b in (reference.detect(im)[0] for im, _ in pairs))
        result["sets"][name] = row
    if args.no_breakdown:
        return emit(result, args.out)
    # request time breakdown for one photo (single request, as the service does it)
    raw = [p.read_bytes() for p in sorted((root / "photos").glob("*/*.jpg"))[: min(20, args.limit or 20)]]
    index = MemoryVersionSearch("bench")
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
