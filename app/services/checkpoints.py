"""The serving model snapshot and hot swaps.

Requests read `manager.current` once and use that snapshot (network, preprocessing, version, threshold)
to the end, so a swap never mixes two models inside one request. A swap: validate the candidate beside
the serving model, re-embed every stored face crop with it in the background (enrollments meanwhile are
embedded by both), switch model and index in one reference assignment, then catch up stragglers.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.core.errors import AppError
from app.services.operating_point import calibration_problem
from model.pipeline import Checkpoint, Embedder, load_checkpoint
from model.preprocessing import NORMALIZATIONS
from model.weights import REGISTRY, Preprocessing, WeightsError

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


class ModelManager:
    def __init__(self, embedder: Embedder):
        self._current = embedder
        self._lock = threading.Lock()
        self.previous: Embedder | None = None
        self.candidate: Embedder | None = None
        self.status = SwapStatus()
        self._task: asyncio.Task | None = None

    @property
    def current(self) -> Embedder:
        return self._current

    def switch(self, embedder: Embedder) -> Embedder:
        """Make `embedder` current (one reference assignment: atomic for readers). Returns the old one."""
        with self._lock:
            old, self._current = self._current, embedder
            self.previous = old
            return old

    @property
    def swapping(self) -> bool:
        return self._task is not None and not self._task.done()

    @staticmethod
    def load(spec: str, device: str, precision: str, flip: bool = False) -> Embedder:
        return Embedder(load_checkpoint(spec), device, precision, flip)


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


async def reembed_missing(service, embedder: Embedder, status: SwapStatus | None = None, chunk: int = 64) -> int:
    """Embed every stored crop that lacks `embedder`'s version, in chunks on the model thread (so serving
    batches interleave). Returns how many were added."""
    loop = asyncio.get_running_loop()
    gen = service.store.faces_missing(embedder.version, batch=chunk)
    added = 0
    while True:
        rows = await run_in_threadpool(next, gen, None)
        if rows is None:
            return added
        crops = fit_crops([c for _, c in rows], embedder.preprocessing.image_size)
        vectors = await loop.run_in_executor(service.executor, embedder.embed, crops)
        added += await run_in_threadpool(service.store.add_embeddings, embedder.version,
                                         {fid: v for (fid, _), v in zip(rows, vectors)})
        if status is not None:
            status.faces_done += len(rows)


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


async def run_swap(service, candidate: Embedder, spec: str) -> None:
    models: ModelManager = service.models
    st = models.status
    try:
        candidate = await with_int8(candidate, spec, service.settings.checkpoints_dir)
        models.candidate = candidate
        st.faces_total = await run_in_threadpool(service.store.counts)
        st.faces_total = st.faces_total["faces"]
        t0 = time.perf_counter()
        await reembed_missing(service, candidate, st)
        st.crops_per_s = round(st.faces_done / max(time.perf_counter() - t0, 1e-9), 1)
        await reembed_missing(service, candidate)          # faces enrolled by the old model alone meanwhile
        st.state = "switching"
        dim = candidate.preprocessing.embedding_size
        await run_in_threadpool(service.index.get, candidate.version, dim)
        # the serving row switches in the same transaction that checks the new version's index is complete
        await run_in_threadpool(service.store.set_serving, spec, candidate.version,
                                service.index.serving_hook(candidate.version, dim))  # other processes follow
        old = models.switch(candidate)                     # model and (warm) index together
        models.candidate = None
        await reembed_missing(service, candidate)          # requests that started before the switch
        if not service.settings.keep_old_versions:
            await run_in_threadpool(service.store.prune_versions, {candidate.version})
            service.index.drop({candidate.version})
        st.state, st.finished_at = "done", time.time()
        log.info("swapped model %s -> %s (%d faces re-embedded)", old.version, candidate.version, st.faces_done)
    except Exception as exc:  # noqa: BLE001 - the old model keeps serving; the status says why
        models.candidate = None
        st.state, st.error, st.finished_at = "failed", f"{type(exc).__name__}: {exc}", time.time()
        log.exception("model swap failed; still serving %s", models.current.version)
    finally:
        st.history.append(st.public())


def _calibrated_numbers(thresholds: dict) -> str:
    """The numbers of a calibration, in a canonical form (text such as notes and sources left out; NaN
    compares equal to itself), to tell whether a checkpoint with the serving weights was recalibrated."""
    def numbers(x):
        if isinstance(x, dict):
            return {k: numbers(v) for k, v in x.items() if not isinstance(v, str)}
        if isinstance(x, list):
            return [numbers(v) for v in x]
        return x
    return json.dumps(numbers(thresholds or {}), sort_keys=True)


async def start_swap(service, spec: str) -> SwapStatus:
    """Validate synchronously (errors are the caller's 4xx), then re-embed and switch in the background."""
    models: ModelManager = service.models
    if models.swapping:
        raise AppError(409, "swap_in_progress", f"a swap to {models.status.candidate_version} is running")
    path = resolve_checkpoint(spec, service.settings.checkpoints_dir)
    current = models.current
    probe = await run_in_threadpool(service.probe_crops)
    candidate = await run_in_threadpool(validate_candidate, path, current.device, current.precision_requested,
                                        probe, current.preprocessing.embedding_size, current.preprocessing,
                                        current.flip)
    if service.settings.match_threshold is None:  # the operating point will come from its calibration
        n_identities = (await run_in_threadpool(service.store.counts))["identities"]
        problem = calibration_problem(candidate.thresholds, service.settings.target_fpir, n_identities,
                                      candidate.preprocessing.embedding_size)
        if problem:
            raise AppError(422, "calibration_too_thin", f"not swapping to {candidate.name}: {problem}")
    if models.swapping:  # another request won the race while we validated
        raise AppError(409, "swap_in_progress", f"a swap to {models.status.candidate_version} is running")
    if candidate.version == current.version:
        if _calibrated_numbers(candidate.thresholds) != _calibrated_numbers(current.thresholds):  # recalibrated
            raise AppError(409, "same_weights_new_calibration",
                           f"{candidate.name} has the weights already serving (version {current.version}) but "
                           "different calibrated thresholds; a hot swap changes models, not calibrations: "
                           "restart the service (every replica) to use them")
        models.status = SwapStatus(state="done", candidate_version=candidate.version, candidate_name=candidate.name,
                                   previous_version=current.version, finished_at=time.time(),
                                   history=models.status.history)
        return models.status
    models.status = SwapStatus(state="reembedding", candidate_version=candidate.version, candidate_name=candidate.name,
                               previous_version=current.version, started_at=time.time(), history=models.status.history)
    models.candidate = candidate
    models._task = asyncio.get_running_loop().create_task(run_swap(service, candidate, spec))
    return models.status


async def follow_serving(service, interval_s: float = 2.0) -> None:
    """Background task of every process: when another process (worker or replica) has swapped the model,
    load the same checkpoint, embed whatever it lacks, and switch too. It wakes on the gallery's change feed
    (PostgreSQL: LISTEN/NOTIFY; SQLite: every couple of seconds)."""
    models: ModelManager = service.models
    failed: set[str] = set()
    while True:
        await service.changes.wait()
        try:
            spec, version = await run_in_threadpool(service.store.serving)
            if not version or version == models.current.version or models.swapping or version in failed:
                continue
            path = resolve_checkpoint(spec, service.settings.checkpoints_dir)
            cur = models.current
            ckpt = await run_in_threadpool(load_checkpoint, path)
            problem = metadata_problem(ckpt, cur.preprocessing)
            if problem:
                log.warning("gallery says serve %s (%s) but %s; not following", spec, version, problem)
                failed.add(version)
                continue
            cand = await run_in_threadpool(Embedder, ckpt, cur.device, cur.precision_requested, cur.flip)
            if cand.version != version:
                log.warning("gallery says serve %s (%s) but that file is now %s here; not following",
                            spec, version, cand.version)
                failed.add(version)
                continue
            await reembed_missing(service, cand)
            await run_in_threadpool(service.index.get, cand.version, cand.preprocessing.embedding_size)
            models.switch(cand)
            log.info("followed the gallery's model swap to %s (%s)", spec, version)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep serving the current model; try again later
            log.exception("could not follow the gallery's serving model")
            await asyncio.sleep(10 * interval_s)
