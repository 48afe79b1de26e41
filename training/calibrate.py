"""Calibrate a checkpoint: the impostor-score tail over every different-person pair of a reference set,
written into the checkpoint's metadata (or printed), so the service derives its operating point from it.

    python -m training.calibrate --weights checkpoints/finetuned.pt --reference-dir ../shared/faces/lfw
    python -m training.calibrate --weights casia-webface --reference-dir ../shared/faces/lfw --print

A 1:N search at FPIR 0.01 over 1,000 identities needs the impostor rate at 1e-5, and a quantile is only
trusted with at least 10 pairs beyond it, so the reference set needs millions of pairs: LFW's 13,233
images give 87 M. Identities the checkpoint was trained on should be left out (`--exclude`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def reference_embeddings(weights: str, root: Path, exclude: set[str] = frozenset(), precision: str = "fp32",
                         cache_dir: Path | None = Path(".cache/training")) -> tuple[np.ndarray, list[str]]:
    """Embeddings (the service's crop and model) of root/<label>/<images>, labels in `exclude` left out."""
    from training.data import cached_crops, list_images
    from model.pipeline import FacePipeline

    paths, labels = list_images(root)
    keep = [i for i, lab in enumerate(labels) if lab not in exclude]
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    pipeline = FacePipeline.load(weights=weights, device="auto", precision=precision)
    pre = pipeline.embedder.preprocessing
    crops = cached_crops(paths, cache_dir, pre, pipeline=pipeline)
    emb = np.concatenate([pipeline.embedder.embed(crops[i:i + 256]) for i in range(0, len(crops), 256)])
    return emb, labels


def write_thresholds(checkpoint: Path, thresholds: dict) -> str:
    """Replace a checkpoint file's calibrated thresholds (atomically); returns its version."""
    import torch

    from training.publish import write_checkpoint

    obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    obj.setdefault("metadata", {})["thresholds"] = thresholds
    write_checkpoint(obj, checkpoint)
    return obj["metadata"].get("version", "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True, help="checkpoint file (written in place) or registry name")
    ap.add_argument("--reference-dir", required=True, type=Path, help="<dir>/<label>/<images> of many people")
    ap.add_argument("--exclude", nargs="*", default=[], help="labels to leave out (the training identities)")
    ap.add_argument("--verify-far", type=float, default=1e-3, help="FAR of the fixed 1:1 threshold `cosine`")
    ap.add_argument("--print", action="store_true", help="print the thresholds instead of writing them")
    args = ap.parse_args(argv)
    from training.evaluate import calibrate

    emb, labels = reference_embeddings(args.weights, args.reference_dir, set(args.exclude))
    thresholds = calibrate(emb, labels, f"{args.reference_dir.name}", args.verify_far)
    if args.print or not Path(args.weights).is_file():
        print(json.dumps(thresholds, indent=1))
    else:
        version = write_thresholds(Path(args.weights), thresholds)
        print(f"# {args.weights}: thresholds written (version {version or 'from its weights'}, unchanged). A "
              "service already serving these weights uses them after a restart; a hot swap to them is refused "
              "(409 same_weights_new_calibration).", file=sys.stderr)
        print(json.dumps({k: v for k, v in thresholds.items() if k not in ("impostor_tail", "normalised")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
