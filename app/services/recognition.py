"""Face operations behind the routes: detect + embed (micro-batched), enroll, identify, verify.

Model work runs on one dedicated thread (torch uses all cores inside it); the event loop only schedules.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import nullcontext
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import AppError
from app.core.timing import stage
from app.gallery.duplicates import DistinctPairs
from app.gallery.events import EventStore, add_events, new_event
from app.gallery.feedback import FaceCrop, FeedbackStore
from app.gallery.models import MAX_ID
from app.gallery.search import Match, VersionSearch, cosine, make_search
from app.gallery.store import GalleryStore, NewFace, sha256_bytes
from app.gallery.unknown import UnknownStore
from app.services.batching import QueueFull, batch
from app.services.budget import ByteSemaphore, DecodeBudget, TooLargeToDecode
from app.services.duplicates import Duplicates
from app.services.events import CollectionEvents, Events, identify_events, wants
from app.services.feedback import FeedbackService
from app.services.training_job import TrainingJobs
from app.services.unknown import UnknownService
from app.services.operating_point import OperatingPoints
from app.services.serving import Serving, Snapshot
from model.align import box_iou
from model.decode import ImageError, decode_cost
from model.mtcnn import Detections
from model.pipeline import Embedder, Face, FacePipeline

log = logging.getLogger(__name__)


@dataclass
class ImageFaces:
    image_sha256: str
    width: int
    height: int
    faces: list[Face]
    embedder: Embedder
    _stored: dict[int, FaceCrop] = field(default_factory=dict, init=False, repr=False, compare=False)

    def stored(self, face: Face) -> FaceCrop:
        """`face` (one of `faces`) as the gallery stores it for a probe, a report or a kept unknown face: its
        crop PNG-encoded once (about 0.75 ms), however many of them keep it. Blocking: call it off the event loop."""
        crop = self._stored.get(id(face))
        if crop is None:
            crop = self._stored[id(face)] = FaceCrop.of(face, self.embedder.preprocessing.margin, self.image_sha256,
                                                       self.embedder.version)
        return crop


@dataclass
class Decision:
    """One searched face: `match` (identity set), `unknown`, or `low_quality` (too poor to decide)."""
    status: str
    identity: Match | None
    score: float | None
    matches: list[Match]
    quality_problem: str | None = None
    threshold: float | None = None   # the cosine score this face needed (normalised: its own)


class FaceService:
    """One collection's gallery and the face operations on it. The default collection's FaceService also owns what
    every collection shares (`shared` None): the model thread, the batchers, the decode budget, the events and the
    training jobs; the others (`shared`: the default's) use those, and follow its model (app/services/collections.py)."""

    def __init__(self, settings: Settings, pipeline: FacePipeline, embedder: Embedder, store: GalleryStore,
                 shared: "FaceService | None" = None, collection: str = "default"):
        self.settings = settings
        self.pipeline = pipeline
        self.store = store
        self.collection, self.shared = collection, shared
        self._hub = None  # the default's: the collections' shared PostgreSQL listener (notify_hub)
        self.search, self.changes = make_search(settings, store, shared.notify_hub() if shared is not None else None)
        self.feedback = FeedbackService(settings, FeedbackStore(store))
        if shared is None:
            self.training = TrainingJobs(settings)
            self.training.on_published = self._swap_to_published
            self.training.on_finished = self._training_finished
            # its MQTT connection is made by the delivery worker (Events.run), in this process or its own
            self.events = Events(settings, EventStore(store.engine, _worker_engine(store, settings)))
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        else:
            self.training, self.executor = shared.training, shared.executor
            self.events = CollectionEvents(collection, shared.events, store)
        distinct = DistinctPairs(store)
        self.operating = OperatingPoints(settings.target_fpir, settings.target_far, settings.match_threshold,
                                         settings.default_threshold, settings.gallery_calibration, distinct.all,
                                         norms=shared.operating.norms if shared is not None else None)
        self.serving = Serving(settings, embedder, self.search, self.changes, self.operating, store, self.executor,
                               self.probe_crops, leader=shared.serving if shared is not None else None)
        self.duplicates = Duplicates(store, self.operating, distinct, self.search_of)
        unknown_store = UnknownStore(store)
        self.unknown = UnknownService(settings, unknown_store, self.serving)
        self.serving.also_embedded.append(unknown_store)
        self.serving.also_retire.append(self.duplicates.forget)
        if shared is not None:
            self.decode_budget, self.detect_batch, self.embed_batch = (shared.decode_budget, shared.detect_batch,
                                                                       shared.embed_batch)
            return
        self.decode_budget = DecodeBudget(settings.max_decode_bytes, settings.max_decode_bytes_per_request,
                                          settings.decode_wait_s)
        s = settings
        from app.core.observability import BATCH_SIZE

        self.detect_batch = batch(self._detect_many, max_batch_size=max(1, s.max_batch_size // 4),
                                  batch_wait_timeout_s=s.batch_wait_timeout_s, max_queue_size=s.max_queue_size,
                                  executor=self.executor, on_batch=BATCH_SIZE.labels("detect").observe)
        self.embed_batch = batch(self._embed_many, max_batch_size=s.max_batch_size,
                                 batch_wait_timeout_s=s.batch_wait_timeout_s, max_queue_size=s.max_queue_size,
                                 executor=self.executor, key=lambda item: id(item[0]), size=lambda item: len(item[1]),
                                 on_batch=BATCH_SIZE.labels("embed").observe)

    def notify_hub(self):
        """The default's: one LISTEN connection for every collection's changes (PostgreSQL; None on SQLite)."""
        if self._hub is None and self.store.is_postgres:
            from app.gallery.notify import NotifyHub

            self._hub = NotifyHub(self.store.engine)
        return self._hub

    async def _swap_to_published(self, name: str) -> dict:
        """A training job published `name` (it passed the gate): hot-swap to it."""
        return (await self.serving.swap(name)).public()

    def _training_finished(self, job: dict) -> None:
        """A training job ended (called on the thread that reaped it): the `train.finished` event."""
        keep = ("id", "returncode", "finished_at", "swap")
        self.events.record([new_event("train.finished", {k: job.get(k) for k in keep})])

    async def aclose(self) -> None:
        """At shutdown: the swap and the batchers' tasks are cancelled, then everything is released."""
        await self.serving.close()
        if self.shared is None:
            await self.detect_batch.close()
            await self.embed_batch.close()
        self.close()

    def close(self) -> None:
        if self.shared is not None:  # a collection: its own search and database only
            self.search.close()
            self.changes.close()
            if self.store.owns_engine:
                self.store.engine.dispose()
            return
        self.training.close()
        if self.events.mqtt is not None:
            self.events.mqtt.close()
        if self.events.store.work.kw["bind"] is not self.store.engine:
            self.events.store.work.kw["bind"].dispose()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.search.close()
        self.changes.close()
        if self._hub is not None:
            self._hub.close()

    def queue_depths(self) -> dict[str, int]:
        """Requests waiting for the model thread, per batcher (for /metrics)."""
        return {"detect": self.detect_batch.queue.depth(), "embed": self.embed_batch.queue.depth()}

    # --- model work (runs on the model thread) ------------------------------------------------------
    def _detect_many(self, items: list[tuple[Image.Image, float]]) -> list[Detections]:
        """(image, smallest usable face) pairs: each image's pyramid starts at its request's gate."""
        return self.pipeline.detect([im for im, _ in items], [px for _, px in items])

    @staticmethod
    def _embed_many(items: list[tuple[Embedder, np.ndarray]]) -> list[np.ndarray]:
        embedder = items[0][0]
        sizes = [len(c) for _, c in items]
        vectors = embedder.embed(np.concatenate([c for _, c in items]))
        return np.split(vectors, np.cumsum(sizes)[:-1])

    async def _run(self, fn, item, ticket=None):
        if self.settings.batching:
            return await fn.submit(item, ticket)
        return (await asyncio.get_running_loop().run_in_executor(self.executor, fn, [item]))[0]

    async def embed_crops(self, embedder: Embedder, crops: np.ndarray, ticket=None) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, embedder.preprocessing.embedding_size), np.float32)
        return await self._run(self.embed_batch, (embedder, crops), ticket)

    # --- request-level operations -------------------------------------------------------------------
    async def analyse(self, data: bytes, embedder: Embedder | None = None,
                      budget: ByteSemaphore | None = None) -> ImageFaces:
        """Decode, detect, crop and embed every face of one image. Decoded pixels hold their estimated bytes
        of the decode budget (the request's `budget` and the process's) until the faces are cropped.
        Detection looks for faces down to `detection_floor` (full-resolution pixels)."""
        embedder = embedder or self.serving.embedder
        to_embed = None
        try:
            with self.detect_batch.coming() as to_detect:  # a detect batch that starts meanwhile waits for this one
                try:
                    with stage("decode"):
                        cost = await run_in_threadpool(decode_cost, data, self.settings.max_image_pixels)  # header only
                except ImageError as exc:
                    raise AppError(exc.status, exc.code, exc.message) from exc
                if self.settings.batching and self.detect_batch.queue.depth() >= self.settings.max_queue_size:
                    raise QueueFull(self.detect_batch.queue.depth())  # before allocating anything
                try:
                    async with self.decode_budget.hold(cost, budget):
                        try:  # the library's decode: a large JPEG at reduced scale, as FacePipeline.process does
                            with stage("decode"):
                                image = await _to_the_end(self.pipeline.decode, data, self.settings.max_image_pixels)
                        except ImageError as exc:
                            raise AppError(exc.status, exc.code, exc.message) from exc
                        with stage("detect"):
                            det = await self._run(self.detect_batch, (image, self.detection_floor), to_detect)
                        to_embed = self.embed_batch.queue.announce()  # an embed batch starting meanwhile waits for it
                        if len(det) > self.settings.max_faces_per_image:
                            order = np.argsort(-det.scores)[: self.settings.max_faces_per_image]
                            det = Detections(det.boxes[order], det.scores[order], det.landmarks[order])
                        with stage("align"):
                            faces = await run_in_threadpool(self.pipeline.faces, image, det, embedder)
                        width, height = image.size
                        del image
                except TooLargeToDecode as exc:
                    raise AppError(413, "image_too_large_to_decode", str(exc)) from exc
            with stage("embed"):
                vectors = await self.embed_crops(
                    embedder, np.stack([f.crop for f in faces]) if faces else np.zeros(0), to_embed)
        finally:
            if to_embed is not None:
                to_embed.withdraw()
        for f, v in zip(faces, vectors):
            f.embedding = v
        return ImageFaces(sha256_bytes(data), width, height, faces, embedder)

    async def analyse_many(self, images: list[bytes], embedder: Embedder | None = None) -> list[ImageFaces]:
        """All images of one request under one request budget; the first failure cancels the others."""
        embedder = embedder or self.serving.embedder
        budget = self.decode_budget.for_request()
        tasks: list[asyncio.Task] = []
        try:
            async with asyncio.TaskGroup() as group:
                tasks += [group.create_task(self.analyse(d, embedder, budget)) for d in images]
        except BaseExceptionGroup:  # answer with the first image's error, as one request error
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception() from None
            raise
        return [t.result() for t in tasks]

    async def report_on_image(self, kind: str, identity_id: int | None, data: bytes, face_index: int | None,
                              face_box: list[float] | None, reported_by: str | None):
        """A feedback report on a face of an uploaded image: the face picked as for enrollment (by face_index,
        face_box, or the only one usable for a search), then stored by the feedback service."""
        self.feedback.check(kind, identity_id)  # before the image is analysed
        r = await self.analyse(data)
        face = self.pick_enroll_face(r, 0, face_index, face_box, quality=self.search_quality_problem,
                                     purpose="feedback")
        return await self.feedback.report(kind, identity_id, face=face, result=r, reported_by=reported_by)

    @property
    def detection_floor(self) -> float:
        """The smallest face detection looks for, in the image's pixels: the search gate (a smaller face can
        only come back `low_quality`, and PNet's work grows with the square of 12 / this), unless
        FACEID_DETECT_BELOW_GATE asks for those faces too (down to FACEID_DETECTOR_MIN_FACE_SIZE). One floor for
        every route, so that a face_index means the same face in /embed, /identify, /enroll and /feedback."""
        s = self.settings
        return 0.0 if s.detect_below_gate else float(s.search_min_face_size)

    def quality_problem(self, face: Face) -> str | None:
        s = self.settings
        return _gate(face, s.enroll_min_face_size, s.enroll_min_detection_score, "enrollment")

    def pick_enroll_face(self, result: ImageFaces, image_no: int, face_index: int | None,
                         face_box: list[float] | None, quality=None, purpose: str = "enrollment") -> Face:
        """The face an upload means: by face_index, by face_box, else its only usable face. `quality(face)`
        says why a face is unusable (default: the enrollment gate)."""
        quality = quality or self.quality_problem
        faces = result.faces
        if not faces:
            raise AppError(422, "no_face", f"no face found in image {image_no}")
        if face_index is not None:
            if not 0 <= face_index < len(faces):
                raise AppError(422, "face_index_out_of_range",
                               f"image {image_no} has {len(faces)} faces; face_index {face_index} is out of range")
            face = faces[face_index]
        elif face_box is not None:
            face = max(faces, key=lambda f: box_iou(f.box, face_box))
            if box_iou(face.box, face_box) < 0.3:
                raise AppError(422, "face_box_no_match", f"no face in image {image_no} overlaps the given face_box")
        else:
            usable = [f for f in faces if quality(f) is None]
            if len(usable) != 1:
                why = "" if usable else f": {quality(max(faces, key=lambda f: f.size))}"  # e.g. the face is too small
                raise AppError(422, "ambiguous_face" if len(usable) > 1 else "face_not_usable",
                               f"image {image_no} has {len(usable)} usable faces ({len(faces)} detected){why}; "
                               f"{purpose} needs exactly one, or say which with face_index or face_box",
                               {"faces": [{**_face_brief(i, f), "problem": quality(f)} for i, f in enumerate(faces)]})
            face = usable[0]
        problem = quality(face)
        if problem:
            raise AppError(422, "face_quality", f"image {image_no}: {problem}")
        return face

    async def enroll(self, label: str, images: list[bytes], face_index: int | None, face_box: list[float] | None):
        embedder = self.serving.embedder
        results = await self.analyse_many(images, embedder)
        chosen = [(r, self.pick_enroll_face(r, i, face_index, face_box)) for i, r in enumerate(results)]
        new_faces = []
        for r, f in chosen:
            embeddings = {embedder.version: f.embedding}
            new_faces.append(NewFace(crop=f.crop, crop_margin=embedder.preprocessing.margin,
                                     source_sha256=r.image_sha256, box=[float(x) for x in f.box],
                                     landmarks=f.landmarks.tolist(), detection_score=f.score,
                                     embeddings=embeddings))
        extra = await self.extra_embeddings(new_faces, embedder)
        for nf, more in zip(new_faces, extra):
            nf.embeddings.update(more)
        ident, rows, created = await run_in_threadpool(self.store.enroll, label, new_faces)
        self.events.poke()  # its `enroll` event committed with it
        return ident, rows, created, embedder, [f for _, f in chosen]

    async def possible_duplicates(self, embedder: Embedder, identity_id: int, faces: list[Face]) -> list[dict]:
        """The enrollment's `possible_duplicate` warnings: other identities that faces just enrolled as
        `identity_id` score as the same person (the enrollment stands). A failure here never fails the
        enrollment: it is logged."""
        try:
            def check():
                dups = self.duplicates.of_faces(embedder, self.search_of(embedder), identity_id,
                                                np.stack([f.embedding for f in faces]))
                return dups, (self.store.labels([d.b for d in dups]) if dups else {})

            dups, labels = await run_in_threadpool(check)
        except Exception:  # noqa: BLE001 - the faces are stored; a missing warning is not worth a 500
            log.warning("possible-duplicate check after enrolling identity %s failed", identity_id, exc_info=True)
            return []
        return [{"code": "possible_duplicate", "identity": {"id": d.b, "label": labels[d.b]}, "score": d.score,
                 "message": f"these faces score {d.score:.3f} against {labels[d.b]!r} (identity {d.b}): probably "
                 "the same person; merge them if so (GET /identities/duplicates)"} for d in dups if d.b in labels]

    async def extra_embeddings(self, new_faces: list[NewFace], embedder: Embedder) -> list[dict]:
        """During a hot swap, new faces are embedded by the candidate (and the serving model) too."""
        others = [m for m in (self.serving.candidate, self.serving.embedder)
                  if m is not None and m.version != embedder.version]
        out = [{} for _ in new_faces]
        for other in {m.version: m for m in others}.values():
            vectors = await self.embed_crops(other, np.stack([nf.crop for nf in new_faces]))
            for d, v in zip(out, vectors):
                d[other.version] = v
        return out

    def probe_crops(self, embedder: Embedder, n: int = 8) -> np.ndarray:
        """Crops to test a candidate model on: stored faces where there are some, else random pixels."""
        size = embedder.preprocessing.image_size
        crops = [c for c in self.store.some_crops(n) if c.shape[:2] == (size, size)]  # never mix sizes
        rng = np.random.default_rng(0)
        while len(crops) < 2:
            crops.append(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        return np.stack(crops)

    def search_of(self, embedder: Embedder) -> VersionSearch:
        """`embedder`'s version's search (the serving one's is `serving.current.search`), synced."""
        return self.search.version(embedder.version, embedder.preprocessing.embedding_size)

    def search_quality_problem(self, face: Face) -> str | None:
        """Why a search face is too poor to decide on (then its status is `low_quality`)."""
        s = self.settings
        return _gate(face, s.search_min_face_size, s.search_min_detection_score, "a search")

    def _search_and_decide(self, snap: Snapshot, faces: list[Face], top_k: int, threshold: float | None):
        embedder, index = snap.embedder, snap.search
        index.sync()
        op = snap.for_search(threshold)
        vectors = np.stack([f.embedding for f in faces]) if faces else np.zeros((0, 512), np.float32)
        matches = index.search(vectors, top_k) if len(vectors) else []
        norm = self.operating.normalisation(embedder) if op.normalised else None
        shifts = norm.cohort.shift(vectors) if norm is not None else np.zeros(len(vectors), np.float32)
        decisions = []
        for f, ms, shift in zip(faces, matches, shifts, strict=True):
            best = ms[0] if ms else None
            problem = self.search_quality_problem(f)
            thr = op.threshold_for(float(shift))
            status = "low_quality" if problem else (
                "match" if best is not None and best.score >= thr else "unknown")
            decisions.append(Decision(status, best if status == "match" else None, best.score if best else None,
                                      ms, problem, thr))
        return decisions, op

    async def identify(self, data: bytes, top_k: int, threshold: float | None, owner: str | None,
                       remember: bool = False):
        """Every face of the image: its top-k identities and the decision at the operating point in force; the
        faces kept as probes for `owner` (their ids), the `identify.*` events some subscription wants, and with
        `remember` its unknown faces kept (app/services/unknown.py). What follows the embedding (search, probes,
        events, unknown faces) is one trip off the event loop and one commit. Returns (result, decisions, op,
        probe ids, kept unknown faces: None when they could not ride on the probes' commit, see UnknownService.keep)."""
        snap = self.serving.current
        result = await self.analyse(data, snap.embedder)
        wanted = await self.events.wanted_types()  # cached

        def search_and_keep():
            with stage("search"):
                decisions, op = self._search_and_decide(snap, result.faces, top_k, threshold)

            def events_of(probe_ids):
                return [e for e in identify_events(snap.embedder.version, result.image_sha256, result.faces,
                                                   decisions, probe_ids) if wants(wanted, e["type"])]

            riding: list[dict] = []
            # (another collection's probes are in its own database; the outbox is the default's)
            ride = wanted and self.shared is None
            # unknown faces: in the probes' database (None: not asked for, or no face is unknown)
            with stage("probes"), (self.unknown.riding(result, decisions) if remember else nullcontext()) as unknown:
                def with_probes(s, probe_ids):  # events and unknown faces ride on the probes' transaction
                    if ride:
                        riding.extend(events_of(probe_ids))
                        add_events(s, riding)
                    if unknown is not None:
                        unknown.keep(s)

                probe_ids = self.feedback.keep_probes(result, decisions, owner,
                                                      with_probes if ride or unknown is not None else None)
                committed = any(pid is not None for pid in probe_ids)
                if unknown is not None:
                    unknown.committed = committed
            kept = None
            if unknown is not None and committed and unknown.out is not None:
                kept = self.unknown.kept(decisions, unknown.picked, unknown.out)
            if ride and committed:  # committed, with the events
                events = riding
            else:  # no probes kept (retention off, or their write failed): the events alone, before the answer
                events = events_of(probe_ids)
                if events:
                    with stage("events"):
                        self.events.record(events)
            return decisions, op, probe_ids, bool(events), kept

        decisions, op, probe_ids, evented, kept = await run_in_threadpool(search_and_keep)
        if evented:
            self.events.poke()
        return result, decisions, op, probe_ids, kept

    async def verify_images(self, a: bytes, b: bytes, threshold: float | None, pick_a=(None, None),
                            pick_b=(None, None)):
        """(score, op, embedder, used): `pick_*` is (face_index, face_box) choosing a face of an image with several;
        without one, its largest face. `used` says, per image, which face was compared and which were found."""
        snap = self.serving.current
        embedder = snap.embedder
        ra, rb = await self.analyse_many([a, b], embedder)
        (fa, ua), (fb, ub) = (self._verify_face(r, no, *pick) for no, (r, pick) in enumerate(((ra, pick_a), (rb, pick_b))))
        op = await run_in_threadpool(snap.for_verify, threshold)
        return cosine(fa.embedding @ fb.embedding), op, embedder, [ua, ub]

    async def verify_identity(self, data: bytes, identity_id: int, threshold: float | None, pick=(None, None)):
        snap = self.serving.current
        embedder = snap.embedder
        r = await self.analyse(data, embedder)
        face, used = self._verify_face(r, 0, *pick)
        if not 1 <= identity_id <= MAX_ID:  # cannot exist (and PostgreSQL would refuse the comparison)
            raise AppError(404, "unknown_identity", f"identity {identity_id} does not exist")

        def score_and_point():  # database work (a pgvector query, the gallery's tail): off the event loop
            snap.search.sync()
            return snap.search.scores_for_identity(face.embedding, identity_id), snap.for_verify(threshold)

        score, op = await run_in_threadpool(score_and_point)
        if score is None:
            raise AppError(404, "unknown_identity", f"identity {identity_id} does not exist")
        return cosine(score), op, embedder, [used]

    def _verify_face(self, r: ImageFaces, image_no: int, face_index: int | None, face_box: list[float] | None):
        """The face of one verify image (the one asked for, else the largest) and what the answer says of it."""
        if not r.faces:
            raise AppError(422, "no_face", f"no face found in image {image_no}")
        if face_index is None and face_box is None:
            face = max(r.faces, key=lambda f: f.size)
        else:  # no quality gate: a verification compares the face it is shown
            face = self.pick_enroll_face(r, image_no, face_index, face_box, quality=lambda f: None)
        return face, {"face_index": next(i for i, f in enumerate(r.faces) if f is face),
                      "chosen_by": "largest" if face_index is None and face_box is None else "request",
                      "faces": [_face_brief(i, f) for i, f in enumerate(r.faces)]}


def _worker_engine(store: GalleryStore, settings: Settings):
    """The event worker's own engine, its commits not waiting for the disk (`app.gallery.events.relax`)."""
    from app.gallery.events import relax
    from app.gallery.store import make_engine

    url = store.engine.url.render_as_string(hide_password=False)
    if ":memory:" in url:
        return store.engine
    return relax(make_engine(url, settings.db_busy_timeout_s))


async def _to_the_end(fn, *args):
    """run_in_threadpool, but a cancelled caller still waits for the thread (whose memory it accounts for)."""
    fut = asyncio.ensure_future(run_in_threadpool(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise


def _gate(face: Face, min_size: float, min_score: float, purpose: str) -> str | None:
    """Why `face` is below a quality gate (None when it passes)."""
    if face.size < min_size:
        return f"face is {face.size:.0f} px, {purpose} needs at least {min_size} px"
    if face.score < min_score:
        return f"detection score {face.score:.3f} is below {min_score}"
    return None


def _face_brief(i: int, f: Face) -> dict:
    return {"face_index": i, "box": [round(float(x), 1) for x in f.box], "detection_score": round(f.score, 4),
            "size": round(f.size, 1)}
