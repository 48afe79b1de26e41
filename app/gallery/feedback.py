"""Probes (faces of recent /identify answers, kept for a bounded time) and feedback (reports on faces, kept
until deleted): storage on the gallery's database, beside the gallery tables but not part of the index.

Neither bumps the gallery generation: nothing here changes what a search finds.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from app.gallery.models import KINDS, Feedback, Identity, Probe, utcnow
from app.gallery.store import GalleryStore, NotFound, crop_to_png


@dataclass
class FaceCrop:
    """A face as stored with a probe or a report: crop, where it was found, the model that saw it."""
    crop_png: bytes
    crop_size: int
    crop_margin: int
    source_sha256: str
    box: list
    landmarks: list
    detection_score: float
    model_version: str

    @classmethod
    def of(cls, face, margin: int, source_sha256: str, model_version: str) -> "FaceCrop":
        """From a `model.pipeline.Face` (crop, box, landmarks, score)."""
        return cls(crop_to_png(face.crop), int(face.crop.shape[0]), int(margin), source_sha256,
                   [float(x) for x in face.box], face.landmarks.tolist(), float(face.score), model_version)

    def columns(self) -> dict:
        return dict(self.__dict__)


def _face_columns(row) -> FaceCrop:
    return FaceCrop(row.crop_png, row.crop_size, row.crop_margin, row.source_sha256, row.box, row.landmarks,
                    row.detection_score, row.model_version)


class FeedbackStore:
    def __init__(self, store: GalleryStore, prune_every_s: float = 60.0):
        self.sessions = store.sessions
        self.gallery = store  # its `reserve` lets deletes and evictions run on a full disk
        self.prune_every_s = prune_every_s
        self._pruned_at = float("-inf")
        self._since_check: dict[str | None, int] = {}  # rows stored since each cap's last check (keep_probes)
        self._lock = threading.Lock()

    # --- probes --------------------------------------------------------------------------------------
    def keep_probes(self, faces: list[tuple[FaceCrop, str, int | None, float | None]], retention_s: float,
                    owner: str | None = None, max_rows: int | None = None,
                    max_rows_per_owner: int | None = None,
                    also: Callable[[Session, list[int]], None] | None = None) -> list[int]:
        """Store (face, status, best identity id, its score) of one answer for `owner` (who got it), in one
        transaction, kept for `retention_s`; returns their ids. Past `max_rows_per_owner` of this owner's
        probes or `max_rows` in all, the oldest are evicted in the same transaction (a flood of many-face
        images costs its sender its own older probes first). Finding the oldest reads past the newest `cap`
        rows, so a cap is checked once per `cap // 32` rows stored (each store for a cap under 64): a table
        may exceed its cap by 1/32 (3 %) between checks, and no answer pays that read. Expired probes are
        deleted here, at most every `prune_every_s`. `also(session, ids)` writes what rides on the same
        transaction (identify's events: one commit, one wait for the disk, per answer)."""
        if not faces:
            return []
        now = utcnow()
        expires = now + timedelta(seconds=retention_s)
        evict_all = max_rows is not None and self._check_due(None, len(faces), max_rows)
        evict_own = max_rows_per_owner is not None and self._check_due(owner or "", len(faces), max_rows_per_owner)
        with self.sessions() as s, s.begin():
            if self._due():
                s.execute(delete(Probe).where(Probe.expires_at < now))
            rows = [Probe(**fc.columns(), status=status, top_identity_id=top, top_score=score, created_at=now,
                          expires_at=expires, owner=owner) for fc, status, top, score in faces]
            s.add_all(rows)
            s.flush()
            if evict_own:
                _evict_oldest(s, max_rows_per_owner, Probe.owner.is_(None) if owner is None else Probe.owner == owner)
            if evict_all:
                _evict_oldest(s, max_rows)
            ids = [r.id for r in rows]
            if also is not None:
                also(s, ids)
            return ids

    def _check_due(self, who: str | None, added: int, cap: int) -> bool:
        """Whether this store checks `who`'s cap (None: the whole table's): once `cap // 32` rows have been
        stored since its last check. The counts are per process, for at most 4,096 owners (past that they
        start again: more checks, never fewer)."""
        with self._lock:
            if len(self._since_check) >= 4096:
                self._since_check.clear()
            n = self._since_check.get(who, 0) + added
            due = n >= max(1, cap // 32)
            self._since_check[who] = 0 if due else n
            return due

    def _due(self) -> bool:
        with self._lock:
            t = time.monotonic()
            if t - self._pruned_at < self.prune_every_s:
                return False
            self._pruned_at = t
            return True

    def get_probe(self, probe_id: int, owner: str | None = None) -> Probe | None:
        """The probe, unless it has expired (expired rows may linger until the next prune) or, when `owner` is
        given, belongs to someone else (None: any owner's)."""
        q = select(Probe).where(Probe.id == probe_id, Probe.expires_at >= utcnow())
        if owner is not None:
            q = q.where(Probe.owner == owner)
        with self.sessions() as s:
            return s.scalar(q)

    def list_probes(self, offset: int, limit: int) -> tuple[list[Probe], int]:
        """(probes, total) not yet expired, newest first, without their crops."""
        live = Probe.expires_at >= utcnow()
        with self.sessions() as s:
            rows = s.scalars(select(Probe).where(live).options(defer(Probe.crop_png))
                             .order_by(Probe.id.desc()).offset(offset).limit(limit)).all()
            return list(rows), s.scalar(select(func.count(Probe.id)).where(live)) or 0

    # --- feedback ------------------------------------------------------------------------------------
    def add(self, kind: str, face: FaceCrop, identity_id: int | None, *, answered_identity_id: int | None = None,
            answered_score: float | None = None, probe_id: int | None = None,
            reported_by: str | None = None, quota: int | None = None) -> Feedback:
        """Store one report. One per (probe, reporter): a later report on the same probe replaces the earlier
        one. Raises NotFound('identity') when `identity_id` does not exist, QuotaExceeded when `reported_by`
        already has `quota` reports (nothing stored either way); an answered identity deleted since the answer
        is forgotten (None)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if (identity_id is None) != (kind == "nobody"):
            raise ValueError("'is' and 'is_not' name an identity; 'nobody' names none")
        try:
            with self.sessions() as s, s.begin():
                if identity_id is not None and s.get(Identity, identity_id) is None:
                    raise NotFound("identity", identity_id)
                if answered_identity_id is not None and s.get(Identity, answered_identity_id) is None:
                    answered_identity_id, answered_score = None, None
                by = Feedback.reported_by.is_(None) if reported_by is None else Feedback.reported_by == reported_by
                if probe_id is not None:  # a write first: SQLite takes the write lock before the count below
                    s.execute(delete(Feedback).where(Feedback.probe_id == probe_id, by))
                if quota is not None and (s.scalar(select(func.count(Feedback.id)).where(by)) or 0) >= quota:
                    raise QuotaExceeded(quota)
                row = Feedback(kind=kind, identity_id=identity_id, answered_identity_id=answered_identity_id,
                               answered_score=answered_score, probe_id=probe_id, reported_by=reported_by,
                               **face.columns())
                s.add(row)
                s.flush()
                return row
        except IntegrityError:  # the identity was deleted between the check and the insert
            raise NotFound("identity", identity_id) from None

    def get(self, feedback_id: int) -> Feedback | None:
        with self.sessions() as s:
            return s.get(Feedback, feedback_id)

    def delete(self, feedback_id: int) -> bool:
        def run():
            with self.sessions() as s, s.begin():
                return s.execute(delete(Feedback).where(Feedback.id == feedback_id)).rowcount > 0
        return self.gallery.reserve.freeing(run)

    def evict_probes(self, share: float = 0.5) -> int:
        """Delete the oldest `share` of the probes (and every expired one), e.g. when the disk is full; how
        many. Runs on the storage reserve if it must."""
        def run():
            with self.sessions() as s, s.begin():
                n = s.execute(delete(Probe).where(Probe.expires_at < utcnow())).rowcount
                left = s.scalar(select(func.count(Probe.id))) or 0
                keep = int(left * (1 - share))
                cutoff = s.scalar(select(Probe.id).order_by(Probe.id.desc()).offset(keep).limit(1))
                if cutoff is not None:
                    n += s.execute(delete(Probe).where(Probe.id <= cutoff)).rowcount
                return n
        return self.gallery.reserve.freeing(run)

    def list(self, offset: int, limit: int, kind: str | None = None, identity_id: int | None = None):
        """(rows, total), oldest first; optionally of one kind and/or naming one identity."""
        with self.sessions() as s:
            q = select(Feedback)
            cq = select(func.count(Feedback.id))
            if kind is not None:
                q, cq = q.where(Feedback.kind == kind), cq.where(Feedback.kind == kind)
            if identity_id is not None:
                q, cq = q.where(Feedback.identity_id == identity_id), cq.where(Feedback.identity_id == identity_id)
            return list(s.scalars(q.order_by(Feedback.id).offset(offset).limit(limit))), s.scalar(cq) or 0

    def labels(self, ids) -> dict[int, str]:
        """{identity id: label} of the given ids that exist."""
        ids = sorted({int(i) for i in ids if i is not None})
        if not ids:
            return {}
        with self.sessions() as s:
            return dict(s.execute(select(Identity.id, Identity.label).where(Identity.id.in_(ids))).all())

    def all(self) -> list[Feedback]:
        """Every report, oldest first (training reads them all)."""
        with self.sessions() as s:
            return list(s.scalars(select(Feedback).order_by(Feedback.id)))


class QuotaExceeded(Exception):
    """The reporter already has as many reports as it may keep."""

    def __init__(self, quota: int):
        super().__init__(f"at most {quota} reports per API key")
        self.quota = quota


def _evict_oldest(s, keep: int, *where) -> None:
    """Delete the probes (matching `where`) older than the newest `keep`."""
    cutoff = s.scalar(select(Probe.id).where(*where).order_by(Probe.id.desc()).offset(keep).limit(1))
    if cutoff is not None:
        s.execute(delete(Probe).where(Probe.id <= cutoff, *where))


def probe_face(probe: Probe) -> FaceCrop:
    return _face_columns(probe)
