"""Corrections from the people who read the answers: probes kept from /identify answers, and reports on them
("this face is X", "this is not X", "this is nobody enrolled"), stored with the crop and the model version."""
from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import AppError, is_disk_full
from app.gallery.feedback import FeedbackStore, QuotaExceeded, probe_face
from app.gallery.models import MAX_ID, Feedback
from app.gallery.store import NotFound

log = logging.getLogger(__name__)


class FeedbackService:
    def __init__(self, settings: Settings, store: FeedbackStore):
        self.settings = settings
        self.store = store

    def keep_probes(self, result, decisions, owner: str, also=None) -> list[int | None]:
        """Keep the faces of one /identify answer for FACEID_PROBE_RETENTION_S, for `owner` (who got the
        answer; only they may report on them), within FACEID_PROBE_MAX_ROWS(_PER_KEY); their ids, or None each
        when retention is off or the write failed (an answer is never lost to its probes: the failure is
        logged). `also(session, ids)` writes in the same transaction (`FeedbackStore.keep_probes`); it is not
        called when nothing is kept. Blocking (PNG encoding, about 0.75 ms a face, and the write): call it off
        the event loop."""
        cfg = self.settings
        if cfg.probe_retention_s <= 0 or not result.faces or min(cfg.probe_max_rows, cfg.probe_max_rows_per_key) <= 0:
            return [None] * len(result.faces)
        rows = [(result.stored(f), d.status,
                 d.matches[0].identity_id if d.matches else None, d.score)
                for f, d in zip(result.faces, decisions)]
        try:
            return self.store.keep_probes(rows, cfg.probe_retention_s, owner, cfg.probe_max_rows,
                                          cfg.probe_max_rows_per_key, also)
        except SQLAlchemyError as exc:
            log.warning("probes not kept (the answer goes out without probe ids): %s", str(exc)[:200])
            if is_disk_full(exc):  # probes are the first to go: the gallery's own writes need the room
                try:
                    n = self.store.evict_probes()
                    log.warning("disk full: evicted the oldest %d probes", n)
                except SQLAlchemyError as again:
                    log.warning("could not evict probes on a full disk: %s", str(again)[:200])
            return [None] * len(result.faces)

    @staticmethod
    def check(kind: str, identity_id: int | None) -> None:
        """A report names an identity exactly when it is an 'is' or 'is_not' report (422 otherwise)."""
        if kind == "nobody" and identity_id is not None:
            raise AppError(422, "invalid_request", "a 'nobody' report names no identity_id")
        if kind in ("is", "is_not") and identity_id is None:
            raise AppError(422, "invalid_request", f"an '{kind}' report needs the identity_id it is about")
        if identity_id is not None and not 1 <= identity_id <= MAX_ID:
            raise AppError(404, "unknown_identity", f"identity {identity_id} does not exist")

    async def report(self, kind: str, identity_id: int | None, *, probe_id: int | None = None,
                     face=None, result=None, reported_by: str | None = None, owner: str | None = None) -> Feedback:
        """Store a report on a kept probe (`probe_id`, one of `owner`'s: None for any, an admin's view) or on
        `face` of an uploaded image (`result`). One report per (probe, reporter): a later one replaces it;
        at most FACEID_FEEDBACK_MAX_PER_KEY per reporter (409 past it)."""
        self.check(kind, identity_id)
        answered, answered_score = None, None
        if probe_id is not None:
            probe = await run_in_threadpool(self.store.get_probe, probe_id, owner) if 1 <= probe_id <= MAX_ID else None
            if probe is None:  # someone else's probe is not found either: no way to tell the two apart
                raise AppError(404, "unknown_probe", f"probe {probe_id} does not exist, has expired or was evicted "
                               f"(probes are kept {self.settings.probe_retention_s:g} s, the newest "
                               f"{self.settings.probe_max_rows_per_key} per key), or was another key's answer; "
                               "report with the image instead")
            stored = probe_face(probe)
            if probe.status == "match":  # the identity the answer named (a report against it marks a mistake)
                answered, answered_score = probe.top_identity_id, probe.top_score
        else:
            stored = None

        def add():  # an uploaded face's crop is PNG-encoded here, off the event loop
            crop = stored if stored is not None else result.stored(face)
            return self.store.add(kind, crop, identity_id, answered_identity_id=answered,
                                  answered_score=answered_score, probe_id=probe_id, reported_by=reported_by,
                                  quota=self.settings.feedback_max_per_key)
        try:
            return await run_in_threadpool(add)
        except NotFound as exc:
            raise AppError(404, f"unknown_{exc.kind}", str(exc)) from None
        except QuotaExceeded as exc:
            raise AppError(409, "feedback_quota_exceeded", f"{exc}; delete some (DELETE /feedback/{{id}}) or raise "
                           "FACEID_FEEDBACK_MAX_PER_KEY") from None

    # --- reads and deletes (off the event loop) ---------------------------------------------------------
    async def probes(self, offset: int, limit: int):
        """(probes not yet expired, total), newest first, without crops."""
        return await run_in_threadpool(self.store.list_probes, offset, limit)

    async def probe(self, probe_id: int):
        """One probe not yet expired, any key's; 404 unknown_probe."""
        row = await run_in_threadpool(self.store.get_probe, probe_id) if probe_id <= MAX_ID else None
        if row is None:
            raise AppError(404, "unknown_probe", f"probe {probe_id} does not exist or has expired (probes are kept "
                           f"{self.settings.probe_retention_s:g} s)")
        return row

    async def labels(self, identity_ids) -> dict[int, str]:
        return await run_in_threadpool(self.store.labels, identity_ids)

    async def list(self, offset: int, limit: int, kind: str | None, identity_id: int | None):
        """(reports, total), oldest first."""
        return await run_in_threadpool(self.store.list, offset, limit, kind, identity_id)

    async def get(self, feedback_id: int) -> Feedback:
        """One report; 404 unknown_feedback."""
        row = await run_in_threadpool(self.store.get, feedback_id)
        if row is None:
            raise AppError(404, "unknown_feedback", f"feedback {feedback_id} does not exist")
        return row

    async def delete(self, feedback_id: int) -> None:
        """404 unknown_feedback when there is no such report."""
        if not await run_in_threadpool(self.store.delete, feedback_id):
            raise AppError(404, "unknown_feedback", f"feedback {feedback_id} does not exist")

