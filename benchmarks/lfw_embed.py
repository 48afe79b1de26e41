"""Embed LFW images the way the service does (MTCNN crop, largest face) with a cache on disk."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import align
from model.decode import decode_image
from model.pipeline import Embedder, FacePipeline


def face_crops(pipeline: FacePipeline, paths: list[Path], image_size: int, margin: int, batch: int = 16,
               transform=None):
    """(crops uint8 (n, S, S, 3), number of images where no face was found and the centre was used)."""
    crops, misses = [], 0
    for start in tqdm(range(0, len(paths), batch), desc="detect", mininterval=10, disable=None):
        images = [decode_image(p.read_bytes()) for p in paths[start:start + batch]]
        for im, det in zip(images, pipeline.detect(images)):
            if len(det):
                areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
                box = det.boxes[int(np.argmax(areas))]  # facenet-pytorch's select_largest
            else:
                misses += 1
                box = align.centre_box(im.width, im.height, 0.45)
            crops.append(align.crop(im, box, image_size, margin))
    out = np.stack(crops)
    return (transform(out) if transform else out), misses


def crops_cached(pipeline: FacePipeline, paths: list[Path], cache_dir: Path | None) -> tuple[np.ndarray, int]:
    """Face crops of `paths`, cached by the list of paths and preprocessing (detection is the slow part)."""
    pre = pipeline.embedder.preprocessing
    key = hashlib.sha256(("|".join(map(str, paths)) + f"|{pre.image_size}|{pre.margin}|"
                          f"{pipeline.edge_pad_fraction}|reflect|{pipeline.detector.resample}"
                          + ("" if pipeline.detector.backend == "torch" else f"|{pipeline.detector.backend}")).encode()).hexdigest()[:16]
    path = cache_dir / f"crops-{key}.npz" if cache_dir else None
    if path and path.is_file():
        data = np.load(path)
        return data["crops"], int(data["misses"])
    crops, misses = face_crops(pipeline, paths, pre.image_size, pre.margin)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, crops=crops, misses=misses)
    return crops, misses


def embed_all(embedder: Embedder, crops: np.ndarray, batch: int = 64) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = [embedder.embed(crops[i:i + batch]) for i in tqdm(range(0, len(crops), batch), desc="embed",
                                                             mininterval=10, disable=None)]
    return np.concatenate(out), time.perf_counter() - t0
