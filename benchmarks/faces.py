"""Where the research face data lives (never copied into the repository) and LFW protocol readers."""
from __future__ import annotations

import os
from pathlib import Path

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
