"""What serves requests, and hot swaps of it.

A request takes `serving.current` once: a `Snapshot` (the embedder, its version's search, the operating points)
that it uses to the end, so a swap never mixes two models inside one request. A swap: validate the candidate
beside the serving model, re-embed every stored face crop with it in the background (enrollments meanwhile are
embedded by both), warm its search and operating point, switch (`Serving._switch`: one reference assignment),
catch up stragglers, then retire the old version (its search's memory, its tails). Processes that did not run
the swap follow it (`follow`) the same way, retiring what they held of the old version too.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import AppError
from app.gallery.search import SearchBackend, VersionSearch
from app.gallery.store import GalleryStore
from app.services.checkpoints import (SwapStatus, calibrated_numbers, fit_crops, metadata_problem,
                                      resolve_checkpoint, validate_candidate, with_int8)
from app.services.operating_point import OperatingPoints, calibration_problem
from model.calibration.operating_point import OperatingPoint
from model.pipeline import Embedder, load_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What one request uses from start to end: the model, its version's search and the operating points."""
    embedder: Embedder
    search: VersionSearch
    operating: OperatingPoints

    @property
    def version(self) -> str:
        return self.embedder.version

    def synced(self) -> "Snapshot":
        """This snapshot, its search caught up with the gallery's writes (a database read: off the event loop)."""
        self.search.sync()
        return self

    def for_search(self, requested: float | None = None) -> OperatingPoint:
        return self.operating.for_search(self.embedder, self.search, requested)

    def for_verify(self, requested: float | None = None) -> OperatingPoint:
        return self.operating.for_verify(self.embedder, self.search, requested)


class Serving:
    """The serving snapshot, the swap candidate and the swap's status; swap, follow and retire."""

    def __init__(self, settings: Settings, embedder: Embedder, search: SearchBackend, changes,
                 operating: OperatingPoints, store: GalleryStore, executor: Executor,
                 probe_crops: Callable[[Embedder], np.ndarray], leader: "Serving | None" = None):
        self.settings, self.search, self.changes, self.operating = settings, search, changes, operating
        self.store, self.executor, self.probe_crops = store, executor, probe_crops
        # a collection other than `default` follows the default's Serving (its leader): one model for all, swapped
        # by the leader (`adopt`); its own search, operating points and stores
        self.leader = leader
        self._current = self.snapshot_of(embedder)
        self.previous_version: str | None = None
        self._candidate: Embedder | None = None
        self.status = SwapStatus()
        self._task: asyncio.Task | None = None
        self.also_retire: list[Callable[[set[str]], None]] = []  # other per-version caches (duplicate lists)
        # other stores of face crops embedded per model version (kept unknown faces): faces_missing, add_embeddings,
        # prune_versions, re-embedded by a swap after the gallery
        self.also_embedded: list = []
        # the other collections (app/services/collections.py): re-embedded by a swap before it switches
        # (`reembed_elsewhere(embedder)`), switched after it (`switched_elsewhere(embedder, prune)`)
        self.elsewhere = None

    @property
    def current(self) -> Snapshot:
        return self._current

    @property
    def embedder(self) -> Embedder:
        return self._current.embedder

    @property
    def candidate(self) -> Embedder | None:
        return self.leader.candidate if self.leader is not None else self._candidate

    @candidate.setter
    def candidate(self, value: Embedder | None) -> None:
        self._candidate = value

    @property
    def swapping(self) -> bool:
        if self.leader is not None:
            return self.leader.swapping
        return self._task is not None and not self._task.done()

    async def adopt(self, embedder: Embedder, prune: bool = False) -> None:
        """A collection's Serving: switch to the model its leader switched to (what it lacks embedded first),
        then retire the old version (and, `prune`, delete its stored embeddings)."""
        if embedder.version == self.embedder.version:
            return
        await self._embed_and_switch(embedder)
        await self.reembed_missing(embedder)  # enrolled meanwhile by the old model
        if prune:
            await self._prune_all_but(embedder.version)
        self.retire()

    async def _embed_and_switch(self, embedder: Embedder) -> Snapshot:
        """Embed what the stores lack for `embedder`, warm its snapshot, switch to it; the old snapshot."""
        await self.reembed_missing(embedder)
        await self.reembed_others(embedder)
        snapshot = await run_in_threadpool(self.snapshot_of, embedder)
        await run_in_threadpool(self.warm, snapshot)
        return self._switch(snapshot)

    async def _prune_all_but(self, version: str) -> None:
        """Delete the stored embeddings (gallery, kept unknown faces) and indexes of every other version."""
        await run_in_threadpool(self.store.prune_versions, {version})
        for other in self.also_embedded:
            await run_in_threadpool(other.prune_versions, {version})
        await run_in_threadpool(self.search.drop_indexes, {version})

    def snapshot_of(self, embedder: Embedder) -> Snapshot:
        """A snapshot for `embedder`: its version's search loaded (first use) and synced."""
        return Snapshot(embedder, self.search.version(embedder.version, embedder.preprocessing.embedding_size),
                        self.operating)

    def warm(self, snapshot: Snapshot) -> None:
        """What the first request of `snapshot` would otherwise pay: its operating point (the gallery's tail)."""
        try:
            snapshot.for_search()
        except Exception:  # noqa: BLE001 - a failed warm-up only moves the work to the first request
            log.warning("could not warm the operating point of %s", snapshot.version, exc_info=True)

    def _switch(self, snapshot: Snapshot) -> Snapshot:
        """Make `snapshot` current. Returns the old one."""
        old = self._current
        self._current = snapshot  # the switch: one reference assignment, atomic for every reader
        self.previous_version = old.version  # the version only: the old model's memory goes with its snapshot
        return old

    def retire(self) -> None:
        """Forget what this process holds of versions no longer served (nor swapped to): their search's memory,
        their gallery tails and decoded normalisations."""
        keep = {self._current.version} | ({self.candidate.version} if self.candidate is not None else set())
        self.search.retire(keep)
        self.operating.forget(keep)
        for forget in self.also_retire:
            forget(keep)

    def held(self) -> list[str]:
        """The model versions this process holds anything of (search, tails): after a swap, only the new one."""
        return sorted(self.search.held() | self.operating.held())

    async def close(self) -> None:
        """At shutdown: a swap in progress is cancelled (the old model keeps being the gallery's record)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- re-embedding -------------------------------------------------------------------------------------
    async def reembed_missing(self, embedder: Embedder, status: SwapStatus | None = None, chunk: int = 64,
                              store=None) -> int:
        """Embed every stored crop (of the gallery, or of `store`) that lacks `embedder`'s version, in chunks on
        the model thread (so serving batches interleave). Returns how many were added."""
        loop = asyncio.get_running_loop()
        store = store or self.store
        gen = store.faces_missing(embedder.version, batch=chunk)
        added = 0
        while True:
            rows = await run_in_threadpool(next, gen, None)
            if rows is None:
                return added
            crops = fit_crops([c for _, c in rows], embedder.preprocessing.image_size)
            vectors = await loop.run_in_executor(self.executor, embedder.embed, crops)
            added += await run_in_threadpool(store.add_embeddings, embedder.version,
                                             {fid: v for (fid, _), v in zip(rows, vectors)})
            if status is not None:
                status.faces_done += len(rows)

    async def reembed_others(self, embedder: Embedder) -> int:
        """`reembed_missing` for the other stores (kept unknown faces)."""
        return sum([await self.reembed_missing(embedder, store=other) for other in self.also_embedded])

    async def _elsewhere(self, embedder: Embedder, prune: bool | None = None) -> None:
        """The other collections: re-embedded for `embedder` (prune None), or switched to it."""
        if self.elsewhere is None:
            return
        if prune is None:
            await self.elsewhere.reembed_elsewhere(embedder)
        else:
            await self.elsewhere.switched_elsewhere(embedder, prune)

    # --- swap -----------------------------------------------------------------------------------------
    async def swap(self, spec: str) -> SwapStatus:
        """Validate synchronously (errors are the caller's 4xx), then re-embed and switch in the background."""
        if self.leader is not None:
            raise AppError(409, "swap_service_wide", "the model is the service's: swap it with POST /admin/model")
        if self.swapping:
            raise AppError(409, "swap_in_progress", f"a swap to {self.status.candidate_version} is running")
        path = resolve_checkpoint(spec, self.settings.checkpoints_dir)
        current = self.embedder
        probe = await run_in_threadpool(self.probe_crops, current)
        candidate = await run_in_threadpool(validate_candidate, path, current.device, current.precision_requested,
                                            probe, current.preprocessing.embedding_size, current.preprocessing,
                                            current.flip)
        if self.settings.match_threshold is None:  # the operating point will come from its calibration
            n_identities = (await run_in_threadpool(self.store.counts))["identities"]
            problem = calibration_problem(candidate.thresholds, self.settings.target_fpir, n_identities,
                                          candidate.preprocessing.embedding_size)
            if problem:
                raise AppError(422, "calibration_too_thin", f"not swapping to {candidate.name}: {problem}")
        if self.swapping:  # another request won the race while we validated
            raise AppError(409, "swap_in_progress", f"a swap to {self.status.candidate_version} is running")
        if candidate.version == current.version:
            if calibrated_numbers(candidate.thresholds) != calibrated_numbers(current.thresholds):  # recalibrated
                raise AppError(409, "same_weights_new_calibration",
                               f"{candidate.name} has the weights already serving (version {current.version}) but "
                               "different calibrated thresholds; a hot swap changes models, not calibrations: "
                               "restart the service (every replica) to use them")
            self.status = SwapStatus(state="done", candidate_version=candidate.version, candidate_name=candidate.name,
                                     previous_version=current.version, finished_at=time.time(),
                                     history=self.status.history)
            return self.status
        self.status = SwapStatus(state="reembedding", candidate_version=candidate.version,
                                 candidate_name=candidate.name, previous_version=current.version,
                                 started_at=time.time(), history=self.status.history)
        self.candidate = candidate
        self._task = asyncio.get_running_loop().create_task(self._run_swap(candidate, spec))
        return self.status

    async def _run_swap(self, candidate: Embedder, spec: str) -> None:
        st = self.status
        try:
            candidate = await with_int8(candidate, spec, self.settings.checkpoints_dir)
            self.candidate = candidate
            st.faces_total = (await run_in_threadpool(self.store.counts))["faces"]
            t0 = time.perf_counter()
            await self.reembed_missing(candidate, st)
            st.crops_per_s = round(st.faces_done / max(time.perf_counter() - t0, 1e-9), 1)
            await self.reembed_missing(candidate)          # faces enrolled by the old model alone meanwhile
            await self.reembed_others(candidate)           # kept unknown faces (their clusters follow the model)
            await self._elsewhere(candidate)               # the other collections
            st.state = "switching"
            dim = candidate.preprocessing.embedding_size
            snapshot = await run_in_threadpool(self.snapshot_of, candidate)
            await run_in_threadpool(self.warm, snapshot)
            # the serving row switches in the same transaction that checks the new version's index is complete
            await run_in_threadpool(self.store.set_serving, spec, candidate.version,
                                    self.search.prepare_switch(candidate.version, dim))  # other processes follow
            old = self._switch(snapshot)
            self.candidate = None
            await self.reembed_missing(candidate)          # requests that started before the switch
            await self.reembed_others(candidate)
            if not self.settings.keep_old_versions:
                await self._prune_all_but(candidate.version)
            await self._elsewhere(candidate, prune=not self.settings.keep_old_versions)
            self.retire()
            st.state, st.finished_at = "done", time.time()
            log.info("swapped model %s -> %s (%d faces re-embedded)", old.version, candidate.version, st.faces_done)
        except asyncio.CancelledError:
            self.candidate = None
            st.state, st.error, st.finished_at = "failed", "cancelled (the service is shutting down)", time.time()
            raise
        except Exception as exc:  # noqa: BLE001 - the old model keeps serving; the status says why
            self.candidate = None
            st.state, st.error, st.finished_at = "failed", f"{type(exc).__name__}: {exc}", time.time()
            log.exception("model swap failed; still serving %s", self.embedder.version)
            self.retire()
        finally:
            st.history.append(st.public())

    # --- following the others -----------------------------------------------------------------------------
    async def follow(self, interval_s: float = 2.0) -> None:
        """Background task of every process: when another process (worker or replica) has swapped the model,
        load the same checkpoint, embed whatever it lacks, switch too, and retire the old version. It wakes on
        the gallery's change feed (PostgreSQL: LISTEN/NOTIFY; SQLite: every couple of seconds)."""
        failed: set[str] = set()
        token = self.changes.token()
        while True:
            token = await self.changes.wait(token)
            try:
                spec, version = await run_in_threadpool(self.store.serving)
                if not version or version == self.embedder.version or self.swapping or version in failed:
                    continue
                path = resolve_checkpoint(spec, self.settings.checkpoints_dir)
                cur = self.embedder
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
                await self._embed_and_switch(cand)
                await self._elsewhere(cand, prune=False)
                self.retire()
                log.info("followed the gallery's model swap to %s (%s)", spec, version)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep serving the current model; try again later
                log.exception("could not follow the gallery's serving model")
                await asyncio.sleep(10 * interval_s)
