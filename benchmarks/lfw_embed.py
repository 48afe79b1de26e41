"""Embed LFW images the way the service does (MTCNN crop, largest face). The crops and their cache are
`model.crops`'s (re-exported here for existing imports)."""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from model.crops import crops_cached, face_crops  # noqa: F401 - re-export
from model.pipeline import Embedder


def embed_all(embedder: Embedder, crops: np.ndarray, batch: int = 64) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = [embedder.embed(crops[i:i + batch]) for i in tqdm(range(0, len(crops), batch), desc="embed",
                                                             mininterval=10, disable=None)]
    return np.concatenate(out), time.perf_counter() - t0
