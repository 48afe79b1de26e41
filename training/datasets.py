"""Where the research face data lives (never copied into the repository), LFW protocol readers, and a
small sample of real face crops. Shared by training, the benchmarks and the tests."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from model import align
from model.decode import decode_image
from model.pipeline import load_detector

REPO = Path(__file__).resolve().parent.parent


def faces_dir() -> Path:
    """`$FACEID_FACES_DIR`, else ../shared/faces beside the repository."""
    return Path(os.environ.get("FACEID_FACES_DIR") or REPO.parent / "shared" / "faces")


def lfw_image(name: str, number: int | str) -> Path:
    return faces_dir() / "lfw" / name / f"{name}_{int(number):04d}.jpg"


def read_pairs(path: Path) -> list[tuple[Path, Path, bool, int]]:
    """LFW pairs file -> (image_a, image_b, same, fold). View 2 has a `folds n` header; View 1 a count."""
    lines = path.read_text().split("\n")
    header = lines[0].split()
    n_folds, per_fold = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    pairs = []
    for i, line in enumerate(x for x in lines[1:] if x.strip()):
        parts = line.split()
        fold = i // (2 * per_fold) if n_folds > 1 else 0
        if len(parts) == 3:
            pairs.append((lfw_image(parts[0], parts[1]), lfw_image(parts[0], parts[2]), True, fold))
        else:
            pairs.append((lfw_image(parts[0], parts[1]), lfw_image(parts[2], parts[3]), False, fold))
    return pairs


def read_people(path: Path) -> list[tuple[str, int]]:
    """peopleDevTrain/DevTest.txt -> [(name, image count)]."""
    lines = [x.split() for x in path.read_text().split("\n")[1:] if x.strip()]
    return [(p[0], int(p[1])) for p in lines]


def sample_crops(n: int = 64) -> np.ndarray:
    """`n` 160x160 face crops from LFW (random pixels when the data is absent: cosine figures are then not
    about faces)."""
    root = faces_dir() / "lfw"
    if not root.is_dir():
        return np.random.default_rng(0).integers(0, 255, (n, 160, 160, 3), dtype=np.uint8)
    paths = sorted(root.glob("*/*_0001.jpg"))[:n]
    images = [decode_image(p.read_bytes()) for p in paths]
    det = load_detector()
    crops = []
    for im, d in zip(images, det.detect(images)):
        box = d.boxes[0] if len(d) else align.centre_box(im.width, im.height, 0.45)
        crops.append(align.crop(im, box, 160, 14))
    return np.stack(crops)
