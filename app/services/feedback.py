"""Corrections from the people who read the answers: probes kept from /identify answers, and reports on them
("this face is X", "this is not X", "this is nobody enrolled"), stored with the crop and the model version."""
from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.errors import AppError
from app.gallery.feedback import FaceCrop, FeedbackStore, probe_face
from app.gallery.models import MAX_ID, Feedback
from app.gallery.store import NotFound

log = logging.getLogger(__name__)


class FeedbackService:
    def __init__(self, settings: Settings, store: FeedbackStore):
        self.settings = settings
        self.store = store

    async def keep_probes(self, result, decisions) -> list[int | None]:
        """Keep the faces of one /identify answer for FACEID_PROBE_RETENTION_S; their ids, or None each when
        retention is off or the write failed (an answer is never lost to its probes: the failure is logged)."""
        if self.settings.probe_retention_s <= 0 or not result.faces:
            return [None] * len(result.faces)
        margin, version = result.embedder.preprocessing.margin, result.embedder.version
        rows = [(FaceCrop.of(f, margin, result.image_sha256, version), d.status,
                 d.matches[0].identity_id if d.matches else None, d.score)
                for f, d in zip(result.faces, decisions)]
        try:
            return await run_in_threadpool(self.store.keep_probes, rows, self.settings.probe_retention_s)
        except SQLAlchemyError as exc:
            log.warning("probes not kept (the answer goes out without probe ids): %s", str(exc)[:200])
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
                     face=None, result=None, reported_by: str | None = None) -> Feedback:
        """Store a report on a kept probe (`probe_id`) or on `face` of an uploaded image (`result`)."""
        self.check(kind, identity_id)
        answered, answered_score = None, None
        if probe_id is not None:
            probe = await run_in_threadpool(self.store.get_probe, probe_id) if 1 <= probe_id <= MAX_ID else None
            if probe is None:
                raise AppError(404, "unknown_probe", f"probe {probe_id} does not exist or has expired (probes are "
                               f"kept {self.settings.probe_retention_s:g} s); report with the image instead")
            crop = probe_face(probe)
            if probe.status == "match":  # the identity the answer named (a report against it marks a mistake)
                answered, answered_score = probe.top_identity_id, probe.top_score
        else:
            crop = FaceCrop.of(face, result.embedder.preprocessing.margin, result.image_sha256,
                               result.embedder.version)
        try:
            return await run_in_threadpool(
                lambda: self.store.add(kind, crop, identity_id, answered_identity_id=answered,
                                       answered_score=answered_score, probe_id=probe_id, reported_by=reported_by))
        except NotFound as exc:
            raise AppError(404, f"unknown_{exc.kind}", str(exc)) from None
