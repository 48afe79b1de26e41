"""Unknown faces kept by choice and clustered into people to name (issue 30).

A face /identify answers `unknown` is kept (crop, embeddings, box, source hash, time) when the request says
`remember_unknown=true` or FACEID_REMEMBER_UNKNOWN is on. It joins the cluster whose faces it scores highest with
on average when that mean reaches the same-person threshold, else starts its own (the online step, in the keep's
transaction). The refine (in the background every FACEID_UNKNOWN_REFINE_EVERY_FACES new faces, or on demand)
re-clusters every kept face by average linkage at the same threshold, dismissed clusters kept together, and
refreshes each cluster's suggestion: the enrolled identity its template matches at the service's operating point.

The same-person threshold is the serving checkpoint's impostor tail at FACEID_UNKNOWN_CLUSTER_FAR (a pair
false-accept rate), never a hand-picked distance.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import AppError, is_disk_full, outage_reason
from app.gallery.models import MAX_ID
from app.gallery.store import NotFound
from app.gallery.unknown import KeptFace, UnknownStore
from app.services.operating_point import tail_of
from model.clustering import average_linkage
from model.templates import template_of

log = logging.getLogger(__name__)


@dataclass
class RefineResult:
    faces: int
    clusters: int
    threshold: float
    seconds: float
    applied: bool


def same_person_threshold(thresholds: dict, far: float, default: float) -> float:
    """The cosine score a different-person pair reaches with probability `far` (a checkpoint's calibration: its
    impostor tail); checkpoints without a tail: their fixed 1:1 threshold."""
    tail = tail_of(thresholds)
    if tail is None:
        return float((thresholds or {}).get("cosine", default))
    return float(tail.score_at(far))


def merge_rule(thresholds: dict, far: float, default: float):
    """(threshold, threshold_for): a merge of clusters of a and b faces needs their mean pair score at the impostor
    tail's score for `far / min(a, b)`: whichever side is absorbed, each of its faces is accepted at no more than
    `far` (a group of k faces wrongly joining another person costs k faces, so it must be k times less likely). A
    single face joining a cluster, the online step, needs the plain `far` score."""
    base = same_person_threshold(thresholds, far, default)
    tail = tail_of(thresholds)
    if tail is None:
        return base, None
    log_p = np.linspace(np.log(far) - np.log(1e6), np.log(far), 241)
    scores = np.array([tail.score_at(float(np.exp(x))) for x in log_p])

    def threshold_for(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.interp(np.log(far / np.maximum(np.minimum(a, b), 1.0)), log_p, scores)
    return base, threshold_for


def cluster(vectors: np.ndarray, thresholds: dict, far: float, default: float,
            groups: np.ndarray | None = None) -> np.ndarray:
    """The refine's clustering (the benchmark runs this very function): average linkage with `merge_rule`."""
    base, threshold_for = merge_rule(thresholds, far, default)
    return average_linkage(vectors, base, groups, threshold_for)


def _unknown_faces(decisions) -> list[int]:
    """The indexes of an answer's faces decided `unknown`: the ones kept."""
    return [i for i, d in enumerate(decisions) if d.status == "unknown"]


class UnknownService:
    def __init__(self, settings: Settings, store: UnknownStore, serving):
        self.settings, self.store, self.serving = settings, store, serving
        self._since_refine = 0
        self._refined_faces = 0                # faces at the last refine: the next is due after a share of them
        self._refine_lock = threading.Lock()   # one refine at a time in this process
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s, which may be another thread's

    def threshold(self, embedder) -> float:
        return same_person_threshold(embedder.thresholds, self.settings.unknown_cluster_far, self.settings.default_threshold)

    # --- the request path -------------------------------------------------------------------------------
    async def keep(self, result, decisions) -> list[KeptFace | None]:
        """Keep the `unknown` faces of one /identify answer (one transaction); per face its KeptFace or None (not
        unknown, or the write failed: the answer never fails for it, the failure is logged). FaceService.identify
        keeps them in its probes' transaction instead (`ride`) when it keeps probes: this is the way without."""
        picked = _unknown_faces(decisions)
        if not picked:
            return [None] * len(decisions)

        def write():  # the PNG encoding too (done once per face: the probe's, when it kept one): off the event loop
            return self.store.keep(*self._keep_args(result, picked))

        try:
            kept = await run_in_threadpool(write)
        except SQLAlchemyError as exc:
            log.warning("unknown faces not kept: %s%s", str(exc)[:200], " (disk full)" if is_disk_full(exc) else "")
            return [None] * len(decisions)
        return self.kept(decisions, picked, kept)

    @contextmanager
    def riding(self, result, decisions):
        """For FaceService.identify: hold it around the probes' transaction; it yields a ride whose `keep(session)`
        writes this answer's unknown faces there (`UnknownStore.riding`; set `committed`, read `picked` and `out`),
        or None when no face is unknown."""
        picked = _unknown_faces(decisions)
        if not picked:
            yield None
            return
        with self.store.riding(*self._keep_args(result, picked)) as ride:
            ride.picked = picked
            yield ride

    def _keep_args(self, result, picked: list[int]) -> tuple:
        embedder, cfg = result.embedder, self.settings
        rows = [(result.stored(result.faces[i]), {embedder.version: result.faces[i].embedding}) for i in picked]
        return rows, embedder.version, self.threshold(embedder), cfg.unknown_retention_s, cfg.unknown_max_faces

    def kept(self, decisions, picked: list[int], kept: list) -> list[KeptFace | None]:
        """Per face of the answer its KeptFace (or None); counts the new ones toward the next refine."""
        out: list[KeptFace | None] = [None] * len(decisions)
        for i, k in zip(picked, kept, strict=True):
            out[i] = k
        self._since_refine += sum(1 for k in kept if k is not None and not k.again)  # new faces only
        if self._refine_due():
            self._poke()
        return out

    def _poke(self) -> None:
        """Wake run() now, from any thread (it runs on the background loop: app/core/background.py)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    # --- the refine ---------------------------------------------------------------------------------------
    def refine_now(self, attempts: int = 3) -> RefineResult:
        """Re-cluster every kept face with a serving-model embedding (blocking: a worker thread), then refresh the
        suggestions. A write meanwhile makes it start again (up to `attempts` times)."""
        with self._refine_lock:
            self._since_refine = 0
            snap = self.serving.current
            thr = self.threshold(snap.embedder)
            t0 = time.perf_counter()
            for _ in range(attempts):
                rev, face_ids, old, dismissed, vectors = self.store.snapshot(snap.version)
                groups = np.where(dismissed, old, -1)   # a dismissed cluster stays together; new faces may join
                new = cluster(vectors, snap.embedder.thresholds, self.settings.unknown_cluster_far,
                              self.settings.default_threshold, groups) if len(face_ids) else np.zeros(0, np.int64)
                if self.store.apply(rev, face_ids, old, new, (snap.version, thr, vectors)):
                    break
            else:
                return RefineResult(len(face_ids), len(set(new.tolist())), thr, time.perf_counter() - t0, False)
            self._refined_faces = len(face_ids)
            self._suggest(snap)
            return RefineResult(len(face_ids), len(set(new.tolist())), thr, time.perf_counter() - t0, True)

    def _suggest(self, snap) -> None:
        """Each undismissed cluster's suggestion: its template searched in the gallery, decided at the operating
        point in force (with the cohort shift where searches use one)."""
        _, face_ids, cids, dismissed, vectors = self.store.snapshot(snap.version)
        keep = ~dismissed
        if not keep.any():
            return
        cids, vectors = cids[keep], vectors[keep]
        order = np.unique(cids)
        templates = np.stack([template_of(vectors[cids == c]) for c in order]).astype(np.float32)
        snap.search.sync()
        out: dict[int, tuple[int | None, float | None]] = {int(c): (None, None) for c in order}
        if snap.search.identities:
            op = snap.for_search()
            matches = snap.search.search(templates, 1)
            norm = snap.operating.normalisation(snap.embedder) if op.normalised else None
            shifts = norm.cohort.shift(templates) if norm is not None else np.zeros(len(templates), np.float32)
            for c, ms, shift in zip(order, matches, shifts):
                if ms and ms[0].score >= op.threshold_for(float(shift)):
                    out[int(c)] = (ms[0].identity_id, float(ms[0].score))
        self.store.set_suggestions(out)

    def _refine_due(self) -> bool:
        """After FACEID_UNKNOWN_REFINE_EVERY_FACES new faces, and a quarter of those at the last refine: a refine
        costs about the square of the faces, so their total stays a small multiple of the last one's."""
        return self._since_refine >= max(self.settings.unknown_refine_every_faces, self._refined_faces // 4)

    async def refine(self) -> RefineResult:
        return await run_in_threadpool(self.refine_now)

    async def run(self) -> None:
        """Background task: expired faces deleted and a due refine run, every FACEID_UNKNOWN_REFINE_INTERVAL_S or
        when enough new faces wake it."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.unknown_refine_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await run_in_threadpool(self.store.prune_expired)
                if self._refine_due():
                    await self.refine()
            except asyncio.CancelledError:
                raise
            except DBAPIError as exc:  # the database is away (an outage): one line, the next wake retries
                log.warning("unknown faces: database unavailable (pruning, refining): %s", outage_reason(exc))
            except Exception:  # noqa: BLE001 - the clusters stay as the online step left them; try again later
                log.warning("refining the unknown clusters failed", exc_info=True)

    # --- reads and edits for the routes -------------------------------------------------------------------
    async def list(self, offset: int, limit: int, min_faces: int, dismissed: bool):
        await run_in_threadpool(self.store.prune_expired)
        return await run_in_threadpool(self.store.list_clusters, offset, limit, min_faces, dismissed)

    async def get(self, cluster_id: int):
        await run_in_threadpool(self.store.prune_expired)
        got = await run_in_threadpool(self.store.get_cluster, cluster_id) if cluster_id <= MAX_ID else None
        if got is None:
            raise AppError(404, "unknown_cluster", f"cluster {cluster_id} does not exist")
        return got

    async def face(self, face_id: int):
        row = await run_in_threadpool(self.store.get_face, face_id) if face_id <= MAX_ID else None
        if row is None or (row.expires_at is not None and _expired(row.expires_at)):
            raise AppError(404, "unknown_face", f"kept unknown face {face_id} does not exist")
        return row

    async def dismiss(self, cluster_id: int):
        if not (cluster_id <= MAX_ID and await run_in_threadpool(self.store.dismiss, cluster_id)):
            raise AppError(404, "unknown_cluster", f"cluster {cluster_id} does not exist")
        return await self.get(cluster_id)

    async def delete(self, cluster_id: int) -> None:
        if not (cluster_id <= MAX_ID and await run_in_threadpool(self.store.delete_cluster, cluster_id)):
            raise AppError(404, "unknown_cluster", f"cluster {cluster_id} does not exist")

    async def delete_face(self, face_id: int) -> None:
        if not (face_id <= MAX_ID and await run_in_threadpool(self.store.delete_face, face_id)):
            raise AppError(404, "unknown_face", f"kept unknown face {face_id} does not exist")

    async def purge(self) -> int:
        return await run_in_threadpool(self.store.purge)

    async def enroll(self, cluster_id: int, label: str | None, identity_id: int | None):
        """(identity, faces, created): the cluster's faces enrolled, the cluster gone, in one transaction."""
        if (label is None) == (identity_id is None):
            raise AppError(422, "invalid_request", "give exactly one of label or identity_id")
        if cluster_id > MAX_ID:
            raise AppError(404, "unknown_cluster", f"cluster {cluster_id} does not exist")
        if identity_id is not None and identity_id > MAX_ID:
            raise AppError(404, "unknown_identity", f"identity {identity_id} does not exist")
        try:
            return await run_in_threadpool(self.store.enroll, cluster_id, label, identity_id)
        except NotFound as exc:
            raise AppError(404, f"unknown_{exc.kind}", str(exc)) from None
        except SQLAlchemyError as exc:
            from sqlalchemy.exc import IntegrityError

            if isinstance(exc, IntegrityError):
                raise AppError(409, "label_taken", f"identity {label!r} was created meanwhile; retry") from None
            raise


def _expired(at) -> bool:
    from datetime import timezone

    from app.gallery.models import utcnow

    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)) < utcnow()
