"""Checkpoints a hot swap may switch to: where they may come from, whether their metadata can serve, the probe
a candidate must pass, and the swap's status record. The swap itself is `app.services.serving.Serving`."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.core.errors import AppError
from model.pipeline import Checkpoint, Embedder, load_checkpoint
from model.preprocessing import NORMALIZATIONS
from model.weights import REGISTRY, Preprocessing, WeightsError, checkpoint_dir

log = logging.getLogger(__name__)


@dataclass
class SwapStatus:
    state: str = "idle"               # idle | reembedding | switching | done | failed
    candidate_version: str | None = None
    candidate_name: str | None = None
    previous_version: str | None = None
    faces_total: int = 0
    faces_done: int = 0
    crops_per_s: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    history: list = field(default_factory=list)

    def public(self) -> dict:
        out = asdict(self)
        out.pop("history")
        return out


def resolve_checkpoint(spec: str, checkpoints_dir: Path) -> str:
    """A registry name, or a file inside `checkpoints_dir` (never a path outside it)."""
    if spec in REGISTRY and spec != "mtcnn":
        return spec
    root = Path(checkpoints_dir).resolve()
    try:
        path = (root / spec).resolve()
    except (ValueError, OSError) as exc:  # NUL bytes, names too long for the file system
        raise AppError(422, "invalid_checkpoint_name", f"not a usable file name ({exc})") from None
    if not path.is_relative_to(root):
        raise AppError(422, "checkpoint_outside_directory", f"checkpoints must be inside {root}")
    if not path.is_file():
        raise AppError(404, "unknown_checkpoint", f"no checkpoint named {spec!r} in the checkpoints directory")
    return str(path)


def list_checkpoints(checkpoints_dir: Path) -> list[dict]:
    """What a swap can name: the `.pt` files of `checkpoints_dir` (newest first), then the registry's weight sets
    (`cached`: already on this machine, else fetched or converted at the swap)."""
    root = Path(checkpoints_dir)
    files = sorted((p for p in root.glob("*.pt") if p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True) \
        if root.is_dir() else []
    out = [{"name": p.name, "source": "file", "size_bytes": p.stat().st_size, "modified_at": p.stat().st_mtime,
            "description": None, "cached": True} for p in files]
    cache = checkpoint_dir()
    for name, ws in REGISTRY.items():
        if name != "mtcnn":
            cached = any((cache / f).is_file() for f in (ws.file_name, ws.offline_file_name))
            out.append({"name": name, "source": "registry", "size_bytes": None, "modified_at": None,
                        "description": ws.description, "cached": cached})
    return out


def metadata_problem(ckpt: Checkpoint, serving: Preprocessing | None = None) -> str | None:
    """Why a checkpoint's metadata cannot serve (None when it can): its name must be a printable string of 1 to
    200 characters; the calibrated cosine threshold a finite number in [-1, 1]; the input size sane and, for a
    swap, the serving model's crop size and margin (stored face crops are re-embedded as they are, without the
    original uploads). The version is not metadata: `load_checkpoint` derives it from the weights."""
    if not isinstance(ckpt.name, str) or not 1 <= len(ckpt.name) <= 200 or not ckpt.name.isprintable():
        return f"its name {str(ckpt.name)[:60]!r} is not a printable string of 1 to 200 characters"
    thresholds = ckpt.thresholds if isinstance(ckpt.thresholds, dict) else {"cosine": ckpt.thresholds}
    thr = thresholds.get("cosine", 0.0)
    if (isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr)
                            or not -1.0 <= thr <= 1.0):
        return f"its calibrated cosine threshold {thr!r} is not a finite number in [-1, 1]"
    pre = ckpt.preprocessing
    for name, value, lo, hi in (("image_size", pre.image_size, 64, 1024), ("margin", pre.margin, 0, 512),
                                ("embedding_size", pre.embedding_size, 1, 8192)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"its preprocessing.{name} {value!r} is not an integer in [{lo}, {hi}]"
    if not isinstance(pre.normalization, str) or pre.normalization not in NORMALIZATIONS:
        return f"its preprocessing.normalization {pre.normalization!r} is not one of {sorted(NORMALIZATIONS)}"
    if serving is not None and (pre.image_size, pre.margin) != (serving.image_size, serving.margin):
        return (f"it expects {pre.image_size} px crops with margin {pre.margin}; the gallery's stored crops are "
                f"{serving.image_size} px with margin {serving.margin} (the serving model's)")
    return None


def validate_candidate(spec: str, device, precision: str, probe: np.ndarray, embedding_size: int,
                       serving: Preprocessing | None = None, flip: bool = False) -> Embedder:
    """Load and probe a candidate; any problem is an AppError (the serving model is untouched)."""
    try:
        ckpt = load_checkpoint(spec)
    except (WeightsError, TypeError, ValueError, KeyError) as exc:  # TypeError: unknown preprocessing fields
        raise AppError(422, "invalid_checkpoint", f"the checkpoint cannot be loaded: {exc}") from exc
    problem = metadata_problem(ckpt, serving)
    if problem:
        raise AppError(422, "invalid_checkpoint_metadata", f"refused: {problem}")
    try:  # a missing int8 model is built by run_swap, in the background (it takes about a minute)
        cand = Embedder(ckpt, device, precision, flip, build_int8=False)
    except WeightsError as exc:
        raise AppError(422, "invalid_checkpoint", str(exc)) from exc
    try:
        out = cand.embed(probe)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: torch refuses the input shape
        raise AppError(422, "invalid_checkpoint", f"candidate failed the probe batch: {exc}") from exc
    if out.shape != (len(probe), embedding_size) or not np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-3):
        raise AppError(422, "invalid_checkpoint", f"candidate gives embeddings of shape {out.shape}, "
                                                   f"expected (n, {embedding_size}) unit vectors")
    return cand


def fit_crops(crops: list[np.ndarray], size: int) -> np.ndarray:
    """Stack crops as (n, size, size, 3), resizing any stored at another size (a gallery enrolled under a
    model with another input size): np.stack of mixed sizes would fail the whole batch."""
    out = [c if c.shape[:2] == (size, size) else
           np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR), dtype=np.uint8) for c in crops]
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


async def with_int8(candidate: Embedder, spec: str, checkpoints_dir: Path) -> Embedder:
    """The candidate with its own int8 model where its precision plan wants one that was not cached at
    validation: built (and gated) now, before any re-embedding and the switch. Else the candidate itself."""
    from model.fast import plan_precision

    plan = plan_precision(candidate.device, candidate.precision_requested)
    if candidate.precision == "int8" or plan[0][0] != "int8":
        return candidate
    ckpt = await run_in_threadpool(load_checkpoint, resolve_checkpoint(spec, checkpoints_dir))
    if ckpt.version + ("+flip" if candidate.flip else "") != candidate.version:
        raise ValueError(f"{spec} changed during the swap ({candidate.version} -> {ckpt.version})")
    return await run_in_threadpool(Embedder, ckpt, candidate.device, candidate.precision_requested, candidate.flip)


def calibrated_numbers(thresholds: dict) -> str:
    """The numbers of a calibration, in a canonical form (text such as notes and sources left out; NaN
    compares equal to itself), to tell whether a checkpoint with the serving weights was recalibrated."""
    def numbers(x):
        if isinstance(x, dict):
            return {k: numbers(v) for k, v in x.items() if not isinstance(v, str)}
        if isinstance(x, list):
            return [numbers(v) for v in x]
        return x
    return json.dumps(numbers(thresholds or {}), sort_keys=True)
