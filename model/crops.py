"""Face crops of image files the way the service makes them (MTCNN, largest face by default), with one disk cache.

Used by training (its data set) and by the benchmarks (LFW). The cache key holds everything that changes a
crop: the file list, the embedder's image size and margin, and the detector's settings (minimum face size,
thresholds, pyramid factor, resampling, edge padding, maximum side, backend), so a changed setting never reads
stale crops.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import align
from model.decode import decode_image
from model.pipeline import FacePipeline
from model.weights import Preprocessing


SELECT = ("largest", "centre")


def face_crops(pipeline: FacePipeline, paths: list[Path], image_size: int, margin: int, batch: int = 16,
               transform=None, select: str = "largest") -> tuple[np.ndarray, int]:
    """(crops uint8 (n, S, S, 3), number of images where no face was found and the centre was used). `select`:
    which face of an image with several: the largest (facenet-pytorch's select_largest), or the one nearest the
    image's centre (LFW's convention: the person an image is filed under is the face at its centre; the largest
    is sometimes the person beside them)."""
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}")
    crops, misses = [], 0
    for start in tqdm(range(0, len(paths), batch), desc="detect", mininterval=10, disable=None):
        images = [decode_image(Path(p).read_bytes()) for p in paths[start:start + batch]]
        for im, det in zip(images, pipeline.detect(images)):
            if len(det):
                b = det.boxes
                if select == "largest":
                    pick = np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
                else:
                    pick = np.argmin(np.hypot((b[:, 0] + b[:, 2]) / 2 - im.width / 2,
                                              (b[:, 1] + b[:, 3]) / 2 - im.height / 2))
                box = b[int(pick)]
            else:
                misses += 1
                box = align.centre_box(im.width, im.height, 0.45)
            crops.append(align.crop(im, box, image_size, margin))
    out = np.stack(crops)
    return (transform(out) if transform else out), misses


def crop_settings(pipeline: FacePipeline, preprocessing: Preprocessing, select: str = "largest") -> dict:
    """Everything that changes a crop, as a JSON-able dict (the cache key's content)."""
    det = pipeline.detector
    return {"image_size": preprocessing.image_size, "margin": preprocessing.margin,
            "min_face_size": det.min_face_size, "thresholds": list(det.thresholds), "factor": det.factor,
            "resample": det.resample, "pad_crops": det.pad_crops, "edge_pad_fraction": pipeline.edge_pad_fraction,
            "edge_pad_mode": "reflect", "max_detect_side": pipeline.max_detect_side, "select": select,
            "backend": det.backend}


def crops_cached(pipeline: FacePipeline, paths: list[Path], cache_dir: Path | None,
                 preprocessing: Preprocessing | None = None, select: str = "largest") -> tuple[np.ndarray, int]:
    """Face crops of `paths` (and the count of faceless images), cached by file list and crop settings.
    `preprocessing` defaults to the pipeline's embedder's (the checkpoint's); `select` as in `face_crops`."""
    pre = preprocessing or pipeline.embedder.preprocessing
    settings = json.dumps(crop_settings(pipeline, pre, select), sort_keys=True)
    key = hashlib.sha256(("|".join(map(str, paths)) + "|" + settings).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"crops-{key}.npz" if cache_dir else None
    if path and path.is_file():
        data = np.load(path)
        return data["crops"], int(data["misses"])
    crops, misses = face_crops(pipeline, list(paths), pre.image_size, pre.margin, select=select)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, crops=crops, misses=misses)
        tmp.replace(path)  # a reader never sees half a cache file
    return crops, misses
