"""What a request adds to the work: per photo, the in-process pipeline (decode, detect, crop, embed: what a
script would call), the same photo over HTTP (`POST /identify` to a real uvicorn server, one client), and the
plain facenet-pytorch loop (its MTCNN, keep_all, and InceptionResnetV1 in fp32 with the same weights),
taken in turns photo by photo (the order rotating), so that machine noise hits all three alike. JSON.

Reports per set (the 61 photos; a sample of LFW) and overall: the median time of each path, the medians of
the per-photo ratios (HTTP / in-process; facenet-pytorch / HTTP), the median overhead (HTTP minus
in-process) and where a request's time goes: the median of each stage of the server's own `Server-Timing`
header (app.core.timing). And the floor under any answer: the same number of bytes that are not an image, sent
in the same turns (`http_not_an_image`: read, parsed, checked and refused before any model work), as
`floor_over_in_process`, the lowest `http_over_in_process` a server on this HTTP stack could reach with these
photos. Also whether the service and facenet-pytorch found the same faces at or above the
search gate (FACEID_SEARCH_MIN_FACE_SIZE, 24 px): faces matched at IoU >= 0.5, per side.

    python -m benchmarks.overhead [--passes 2] [--lfw 40] [--out benchmarks/results/overhead.json]
    python -m benchmarks.overhead --env FACEID_BATCHING=false       # the server under other settings

facenet-pytorch is optional (`pip install --no-deps facenet-pytorch==2.6.0`: its wheel pins an old torch).
Run it alone on the machine (`flock /tmp/faceid-bench.lock ...`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from benchmarks.detect import lfw_sample
from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.server import Server

GATE_PX = 24


def server_timing(value: str) -> dict[str, float]:
    """'read;dur=1.2, detect;dur=50.0' -> {'read': 1.2, 'detect': 50.0} (milliseconds)."""
    out = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, rest = part.partition(";")
        for attr in rest.split(";"):
            if attr.startswith("dur="):
                out[name] = float(attr[4:])
    return out


class FacenetPytorchLoop:
    """The ten-line script a user would compare with: facenet-pytorch's MTCNN (keep_all) and
    InceptionResnetV1 (fp32, eval) with this project's weights, one photo per call."""

    def __init__(self, state_dict: dict, image_size: int, margin: int, device: str = "cpu"):
        from facenet_pytorch import MTCNN, InceptionResnetV1

        self.device = torch.device(device)
        self.mtcnn = MTCNN(image_size=image_size, margin=margin, keep_all=True, min_face_size=20,
                           thresholds=[0.6, 0.7, 0.7], factor=0.709, post_process=True, device=self.device)
        self.resnet = InceptionResnetV1(pretrained=None, classify=False, num_classes=None).eval()
        missing, unexpected = self.resnet.load_state_dict(state_dict, strict=False)
        if missing:  # the embedder's keys must all be there: the same network, key for key
            raise RuntimeError(f"facenet-pytorch's InceptionResnetV1 lacks weights for {missing[:3]}")
        self.resnet.to(self.device)

    def __call__(self, data: bytes):
        from PIL import Image
        import io

        img = Image.open(io.BytesIO(data)).convert("RGB")
        boxes, _ = self.mtcnn.detect(img)
        faces = self.mtcnn.extract(img, boxes, None) if boxes is not None else None
        if faces is None:
            return np.zeros((0, 4), np.float32)
        with torch.inference_mode():
            self.resnet(faces.to(self.device)).cpu()
        return boxes


def facenet_pytorch_loop(weights: str, device: str = "cpu"):
    try:
        import facenet_pytorch  # noqa: F401
    except ImportError:
        return None
    from model.pipeline import load_checkpoint

    ckpt = load_checkpoint(weights)
    return FacenetPytorchLoop(ckpt.state_dict, ckpt.preprocessing.image_size, ckpt.preprocessing.margin, device)


def matched(a: np.ndarray, b: np.ndarray, min_px: float = GATE_PX, min_iou: float = 0.5) -> tuple[int, int]:
    """(faces of boxes `a` at or above the gate, how many of them boxes `b` has at IoU >= min_iou), by
    model.mtcnn_ort.unmatched_faces, the rule of benchmarks.detect and detect_floor."""
    from model.mtcnn import Detections
    from model.mtcnn_ort import unmatched_faces

    da, db = (Detections(np.asarray(x, np.float32).reshape(-1, 4), np.zeros(len(x), np.float32),
                         np.zeros((len(x), 5, 2), np.float32)) for x in (a, b))
    big = int((np.minimum(da.boxes[:, 2] - da.boxes[:, 0], da.boxes[:, 3] - da.boxes[:, 1]) >= min_px).sum())
    return big, big - unmatched_faces(da, db, min_iou, min_px)


def run_set(photos: list[Path], passes: int, http: httpx.Client, pipeline, reference, floor: float | None) -> dict:
    paths = {"in_process": lambda d: pipeline.process(d, min_face_px=floor), "http": lambda d: http.post(
        "/identify", files={"file": ("p.jpg", d, "image/jpeg")}),
             # the floor of any answer: the same number of bytes, not an image, refused after the upload is read,
             # parsed and its header checked (keys, limits, routing, an error's JSON), before any model work
             "http_not_an_image": lambda d: http.post("/identify", files={"file": ("p.jpg", bytes(len(d)),
                                                                                     "image/jpeg")})}
    if reference is not None:
        paths["facenet_pytorch"] = reference
    names = list(paths)
    per_photo = {n: [[] for _ in photos] for n in names}
    stages: list[dict[str, float]] = []
    faces = {"service_gate_faces": 0, "found_by_facenet_pytorch": 0, "facenet_pytorch_gate_faces": 0,
             "found_by_service": 0}
    for p in range(passes):
        for i, path in enumerate(photos):
            data = path.read_bytes()
            order = names[(i + p) % len(names):] + names[:(i + p) % len(names)]  # rotating who goes first
            for n in order:
                t0 = time.perf_counter()
                out = paths[n](data)
                per_photo[n][i].append(time.perf_counter() - t0)
                if n == "http_not_an_image" and not 400 <= out.status_code < 500:
                    raise RuntimeError(f"{path.name}: not an image answered HTTP {out.status_code}")
                if n == "http":
                    if out.status_code != 200:
                        raise RuntimeError(f"{path.name}: HTTP {out.status_code} {out.text[:200]}")
                    stages.append(server_timing(out.headers.get("server-timing", "")))
                    if p == 0:
                        boxes = np.array([f["box"] for f in out.json()["faces"]], np.float32).reshape(-1, 4)
                        if reference is not None:
                            ref = reference(data)
                            a, b = matched(boxes, ref)
                            faces["service_gate_faces"] += a
                            faces["found_by_facenet_pytorch"] += b
                            a, b = matched(ref, boxes)
                            faces["facenet_pytorch_gate_faces"] += a
                            faces["found_by_service"] += b
    med = {n: [statistics.median(ts) * 1000 for ts in per_photo[n]] for n in names}
    out = {"photos": len(photos), "passes": passes,
           "median_ms": {n: round(statistics.median(v), 1) for n, v in med.items()},
           "http_over_in_process": round(statistics.median(h / i for h, i in zip(med["http"], med["in_process"])), 3),
           "overhead_ms": round(statistics.median(h - i for h, i in zip(med["http"], med["in_process"])), 1),
           # what a request costs before any model work, per photo against the in-process pipeline: the lowest
           # http_over_in_process any server built on this HTTP stack could reach with these photos
           "floor_over_in_process": round(statistics.median(
               1 + f / i for f, i in zip(med["http_not_an_image"], med["in_process"])), 3),
           "server_timing_median_ms": {k: round(statistics.median(s.get(k, 0.0) for s in stages), 2)
                                       for k in dict.fromkeys(k for s in stages for k in s)}}
    if reference is not None:
        out["facenet_pytorch_over_http"] = round(statistics.median(
            f / h for f, h in zip(med["facenet_pytorch"], med["http"])), 3)
        out["same_faces_at_gate_iou_0.5"] = faces
    out["_per_photo_ms"] = med
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--lfw", type=int, default=40, help="LFW images in the sample (0: none)")
    ap.add_argument("--limit", type=int, default=None, help="photos of the 61 (default: all)")
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--device", default="cpu", help="of the server, the in-process pipeline and facenet-pytorch")
    ap.add_argument("--env", action="append", default=[], help="FACEID_X=value for the server (repeatable)")
    ap.add_argument("--no-reference", action="store_true", help="leave facenet-pytorch out")
    ap.add_argument("--checkout", default=None, help="run the server from another source tree (`git archive REV | "
                    "tar -x -C DIR`): the overhead before a change")
    ap.add_argument("--start-timeout-s", type=float, default=300.0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    root = faces_dir()
    if not (root / "photos").is_dir():
        print(json.dumps({"skipped": f"no face data under {root}"}))
        return 0
    from app.core.config import Settings
    from model.pipeline import FacePipeline

    sets = {"photos": sorted((root / "photos").glob("*/*.jpg"))[: args.limit]}
    if args.lfw:
        sets["lfw"] = lfw_sample(root, args.lfw)
    sets = {name: images for name, images in sets.items() if images}  # --limit 0: LFW only
    if not sets:
        return emit({"skipped": "no images: --limit 0 and --lfw 0"})
    env = {"FACEID_LOG_JSON": "true", "FACEID_WEIGHTS": args.weights, "FACEID_DEVICE": args.device,
           **dict(e.split("=", 1) for e in args.env)}
    result = {"benchmark": "overhead", "server_env": env, "server_checkout": args.checkout, "torch_threads": torch.get_num_threads(), "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "overhead.db", env=env, checkout=args.checkout).start(timeout_s=args.start_timeout_s)
        try:
            with httpx.Client(base_url=srv.url, timeout=120) as http:
                for i, img in enumerate(sorted((root / "lfw").glob("*/*_0002.jpg"))[:10]):  # a small gallery
                    http.post("/enroll", data={"label": f"p{i}"}, files={"files": ("a.jpg", img.read_bytes())})
                ready = http.get("/ready").json()
                result["server"] = {k: ready.get(k) for k in ("precision", "precision_reason", "detector_backend",
                                                              "device", "model_version")}
                pipeline = FacePipeline.load(weights=args.weights, device=args.device, precision=ready["precision"],
                                             detector_backend=ready.get("detector_backend") or "auto")
                reference = None if args.no_reference else facenet_pytorch_loop(args.weights, args.device)
                result["facenet_pytorch"] = "installed" if reference is not None else "not installed"
                # the server's detection floor (app.services.recognition.FaceService.detection_floor), so that
                # both sides do the same work and the difference is the request's own
                settings = Settings(**{k[7:].lower(): v for k, v in env.items() if k.startswith("FACEID_")
                                       and k[7:].lower() in Settings.model_fields})
                floor = None if settings.detect_below_gate else float(settings.search_min_face_size)
                result["detection_floor_px"] = floor
                warm = next(iter(sets.values()))[:3]
                run_set(warm, 1, http, pipeline, reference, floor)  # warm-up: every path, every shape once
                for name, photos in sets.items():
                    result["sets"][name] = run_set(photos, args.passes, http, pipeline, reference, floor)
        finally:
            srv.stop()
    every = {n: [t for s in result["sets"].values() for t in s["_per_photo_ms"][n]]
             for n in next(iter(result["sets"].values()))["_per_photo_ms"]}
    result["all"] = {"photos": len(every["http"]),
                     "median_ms": {n: round(statistics.median(v), 1) for n, v in every.items()},
                     "http_over_in_process": round(statistics.median(
                         h / i for h, i in zip(every["http"], every["in_process"])), 3),
                     "overhead_ms": round(statistics.median(
                         h - i for h, i in zip(every["http"], every["in_process"])), 1),
                     "floor_over_in_process": round(statistics.median(
                         1 + f / i for f, i in zip(every["http_not_an_image"], every["in_process"])), 3)}
    if "facenet_pytorch" in every:
        result["all"]["facenet_pytorch_over_http"] = round(statistics.median(
            f / h for f, h in zip(every["facenet_pytorch"], every["http"])), 3)
    for s in result["sets"].values():
        s.pop("_per_photo_ms")
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
