"""The API's answers as the client reads them (pydantic).

Each model declares the fields this package uses, typed as the server's schema types them
(`tests/cli/test_client_models.py` checks that against `app.schemas`); every other field of the answer is kept
as it came (`extra="allow"`: plain JSON values, in `model_dump()` and as attributes), so the `--json` output is
the server's answer and a newer server's additions pass through an older client.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class IdentityRef(Answer):
    id: int
    label: str


class MatchOut(Answer):
    identity_id: int
    label: str
    face_id: int
    score: float


class IdentifiedFace(Answer):
    box: list[float]
    detection_score: float
    status: Literal["match", "unknown", "low_quality"]
    identity: IdentityRef | None
    score: float | None
    matches: list[MatchOut]
    threshold: float | None = None
    unknown_face_id: int | None = None
    cluster_id: int | None = None


class IdentifyResponse(Answer):
    model_version: str
    threshold: float
    faces: list[IdentifiedFace]


class VerifyResponse(Answer):
    model_version: str
    same_person: bool
    score: float
    threshold: float


class FacePublic(Answer):
    id: int
    identity_id: int
    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    source_sha256: str
    crop_size: int
    crop_margin: int
    created_at: UtcDatetime


class FaceWithLabel(FacePublic):
    label: str


class FacesBySource(Answer):
    items: list[FaceWithLabel]


class IdentityPublic(Answer):
    id: int
    label: str
    face_count: int
    created_at: UtcDatetime
    updated_at: UtcDatetime


class IdentityDetail(IdentityPublic):
    faces: list[FacePublic]


class EnrollWarning(Answer):
    code: Literal["possible_duplicate"]
    message: str
    identity: IdentityRef
    score: float


class EnrollResponse(Answer):
    model_version: str
    created: bool
    identity: IdentityPublic
    faces: list[FacePublic]
    warnings: list[EnrollWarning] = []


class DuplicatePairOut(Answer):
    a: IdentityPublic
    b: IdentityPublic
    score: float


class Ready(Answer):
    status: str
    model_version: str
    model_name: str
    device: str
    threshold: float
    identities: int
    faces: int



class CollectionOut(Answer):
    """A collection as GET /collections/{name} answers: `settings` its own (the others are the service's),
    `counts` {"identities", "faces"}; `created_at` None for `default`, which was never made."""
    name: str
    created_at: UtcDatetime | None = None
    settings: dict
    counts: dict[str, int] | None = None
