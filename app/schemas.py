"""Request and response models (pydantic), with OpenAPI examples."""
from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from faceid_client.labels import _FORBIDDEN_IN_LABELS, MAX_LABEL_CHARS, normalize_label  # noqa: F401 (the one label rule)

Box = list[float]


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC): every answer carries an explicit UTC offset."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS, examples=["Ada Lovelace"],
                             description="NFC-normalised and stripped; no control or invisible characters"),
                  AfterValidator(normalize_label)]
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def search_text(value: str) -> str:
    """Text to look for in labels, read as labels are stored: NFC, and no character a label cannot hold (a NUL
    would be a 500 on PostgreSQL, which refuses it in any string, and cut the text short on SQLite)."""
    text = unicodedata.normalize("NFC", value)
    bad = next((c for c in text if unicodedata.category(c) in _FORBIDDEN_IN_LABELS), None)
    if bad is not None:
        raise ValueError(f"no label contains the control or invisible character U+{ord(bad):04X}")
    return text


SearchText = Annotated[str, AfterValidator(search_text)]


class ErrorBody(BaseModel):
    code: str = Field(examples=["no_face"])
    message: str = Field(examples=["no face found in image 0"])
    detail: dict | list | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class FaceOut(BaseModel):
    box: Box = Field(description="x1, y1, x2, y2 in image pixels", examples=[[48.2, 61.0, 171.5, 214.3]])
    landmarks: list[list[float]] = Field(description="left eye, right eye, nose, mouth left, mouth right (x, y)")
    detection_score: float = Field(examples=[0.9993])


class EmbeddedFace(FaceOut):
    embedding: list[float] = Field(description="512-d unit vector")


class EmbedResponse(BaseModel):
    model_version: str
    image_width: int
    image_height: int
    faces: list[EmbeddedFace]


class IdentityRef(BaseModel):
    id: int
    label: str


class MatchOut(BaseModel):
    identity_id: int
    label: str
    face_id: int
    score: float = Field(description="cosine similarity, -1..1")


class IdentifiedFace(FaceOut):
    status: Literal["match", "unknown", "low_quality"] = Field(
        description="'match' (score at or above the threshold), 'unknown', or 'low_quality' (the face is too "
        "small or too uncertain to decide on)", examples=["match"])
    identity: IdentityRef | None = Field(description="the best match at or above the threshold; null otherwise")
    score: float | None = Field(description="cosine similarity of the best identity (even when unknown; null "
                                "for an `identify`-scope key unless it is a match)")
    quality_problem: str | None = Field(None, description="why the face is low_quality")
    matches: list[MatchOut] = Field(description="top-k identities, best first (each scored by its template); to "
                                    "an `identify`-scope key only the matched identity (empty when unknown)")
    probe_id: int | None = Field(None, description="this face, kept for FACEID_PROBE_RETENTION_S: POST /feedback "
                                 "with it to report the answer right or wrong (null when probes are not kept)")
    threshold: float | None = Field(None, description="the cosine score this face needed to match: the operating "
                                    "point's, plus this face's own cohort shift where the model normalises searches "
                                    "(a face that resembles many people needs more)")
    unknown_face_id: int | None = Field(None, description="this unknown face, kept (remember_unknown): "
                                        "GET /unknown/faces/{id}/crop; null when not kept or for an `identify` key")
    cluster_id: int | None = Field(None, description="the unknown person (GET /unknown/{cluster_id}) the kept face "
                                   "joined or started")


class OperatingPointOut(BaseModel):
    threshold: float = Field(description="cosine similarity at or above which a face is a match (normalised "
                             "operating point: a typical face's; each face's own is in faces[].threshold)")
    target_fpir: float | None = Field(description="the false-positive identification rate the threshold is "
                                      "derived for (null when a fixed threshold is in force, and in a 1:1 "
                                      "verification: its target is the answer's target_far)")
    compared_identities: int = Field(description="identities a search compares against")
    per_comparison_rate: float | None = Field(description="impostor rate per comparison that gives target_fpir")
    source: Literal["calibrated", "override", "request", "checkpoint"] = Field(
        description="calibrated (from target_fpir and the impostor tails), override (FACEID_MATCH_THRESHOLD), "
        "request (the request's threshold), checkpoint (a fixed threshold of a checkpoint without tail)")
    prior_threshold: float | None = Field(None, description="from the model's calibration alone (normalised "
                                          "units when normalisation is 'cohort')")
    gallery_threshold: float | None = Field(None, description="from the gallery's own impostor pairs (same units)")
    extrapolated: bool = False
    warnings: list[str] = []
    normalisation: Literal["cohort"] | None = Field(None, description="'cohort': searches are decided on the "
                                                    "score less the face's cohort shift (see docs/operating-point.md)")
    normalised_threshold: float | None = Field(None, description="the threshold on normalised scores")
    floor: float | None = Field(None, description="normalised: no face's cosine threshold is below this (1:1 "
                                "verification's)")
    domain_rise: float | None = Field(None, description="verification: how much the gallery's own domain "
                                      "raised the model's 1:1 threshold (0 below 50 identities; bounded)")
    normalisation_check: dict | None = Field(None, description="search: whether this gallery keeps the cohort "
                                             "(`cohort`): its own leave-one-out searches (mean FNIR over FPIR "
                                             "0.01-0.1, plain vs normalised; `decided` false with too few) and how "
                                             "far its plain and normalised pairs depart from their calibrations "
                                             "(`misfit_*`; the cohort is dropped beyond 2x the plain misfit)")


class IdentifyResponse(BaseModel):
    model_version: str
    threshold: float
    target_fpir: float | None = Field(None, description="see operating_point")
    operating_point: OperatingPointOut | None = None  # None only from servers before it existed
    faces: list[IdentifiedFace]


class FaceBrief(BaseModel):
    face_index: int
    box: list[float]
    detection_score: float
    size: float = Field(description="pixels, the shorter side of the box")


class VerifiedFace(BaseModel):
    face_index: int = Field(description="the face compared, an index into `faces`")
    chosen_by: str = Field(description="'request' (face_index / face_box) or 'largest'")
    faces: list[FaceBrief]


class VerifyResponse(BaseModel):
    model_version: str
    same_person: bool
    score: float = Field(ge=-1.0, le=1.0)
    threshold: float
    target_far: float | None = Field(None, description="false-accept rate the threshold is derived for")
    operating_point: OperatingPointOut | None = Field(None, description="where the threshold comes from: the "
                                                      "model's 1:1 tail (prior_threshold) plus domain_rise")
    faces: list[VerifiedFace] = Field(default_factory=list, description="per image (the second one only when "
                                      "two are given): the face compared and every face found")


class FacePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    identity_id: int
    box: Box
    landmarks: list[list[float]] = Field(description="left eye, right eye, nose, mouth left, mouth right (x, y)")
    detection_score: float
    source_sha256: str = Field(description="SHA-256 of the uploaded image the face came from")
    crop_size: int = Field(description="side of the stored aligned crop, pixels")
    crop_margin: int = Field(description="margin around the detected box in the crop, pixels")
    created_at: UtcDatetime


class IdentityPublic(BaseModel):
    id: int
    label: str
    face_count: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    cover_face_id: int | None = Field(None, description="the face its gallery card shows (None: the first)")


class IdentityDetail(IdentityPublic):
    faces: list[FacePublic]


class IdentitiesPage(BaseModel):
    items: list[IdentityPublic]
    total: int
    offset: int
    limit: int


class IdentityUpdate(BaseModel):
    """A new label, a cover face (one of its faces; null: none), or both."""
    model_config = ConfigDict(extra="forbid")
    label: Label | None = None
    cover_face_id: int | None = Field(None, ge=1, le=2**63 - 1, description="one of the identity's face ids; "
                                      "null: none (the card shows the first face)")

    @model_validator(mode="after")
    def _label_or_cover(self) -> IdentityUpdate:
        if not self.model_fields_set or ("label" in self.model_fields_set and self.label is None):
            raise ValueError("give a new label, a cover_face_id, or both")
        return self


class IdentityMerge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_identity_id: int = Field(ge=1, le=2**63 - 1, description="the identity whose faces move; it is deleted",
                                  examples=[7])


class EnrollWarning(BaseModel):
    code: Literal["possible_duplicate"]
    message: str
    identity: IdentityRef = Field(description="the other identity")
    score: float = Field(description="the enrolled faces' mean against that identity (cosine)")


class EnrollResponse(BaseModel):
    model_version: str
    created: bool = Field(description="true when the identity was new")
    identity: IdentityPublic
    faces: list[FacePublic]
    warnings: list[EnrollWarning] = Field([], description="possible_duplicate: the faces score as another "
                                           "identity's person (the enrollment stands; merge them if so)")


class DuplicatePairOut(BaseModel):
    a: IdentityPublic
    b: IdentityPublic
    score: float = Field(description="cosine of the two identities' templates")


class DuplicatesPage(BaseModel):
    items: list[DuplicatePairOut] = Field(description="suspected duplicate pairs, strongest first")
    total: int
    offset: int
    limit: int
    threshold: float | None = Field(description="template score from which a pair is suspected (null: the "
                                    "serving model has no impostor tail to set it from)")
    model_version: str
    stale: bool = Field(False, description="true while a newer list is computed in the background (galleries "
                        "over 5,000 identities, after a change)")


class NotDuplicate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    identity_id: int = Field(ge=1, le=2**63 - 1, description="the other identity: a different person",
                             examples=[7])


class ImageJSON(BaseModel):
    """For clients that cannot send multipart: images as base64 strings."""
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="base64-encoded image bytes", min_length=1)


class EnrollJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label
    images: list[str] = Field(min_length=1, description="base64-encoded images")
    face_index: int | None = Field(None, ge=0)
    face_box: list[float] | None = Field(None, min_length=4, max_length=4)


class VerifyJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(min_length=1, description="base64-encoded image")
    image_b: str | None = Field(None, description="second image (base64); or give identity_id")
    identity_id: int | None = None
    face_index: int | None = Field(None, ge=0, description="the face of `image` to compare (default: its largest)")
    face_box: list[float] | None = Field(None, min_length=4, max_length=4)
    face_index_b: int | None = Field(None, ge=0, description="the face of `image_b` to compare")
    face_box_b: list[float] | None = Field(None, min_length=4, max_length=4)


class Health(BaseModel):
    status: str


class ReadyBrief(BaseModel):
    """/ready without the details (a keyed server, no key, FACEID_PUBLIC_METRICS off)."""
    status: str


class Ready(BaseModel):
    status: str
    model_version: str
    model_name: str
    device: str
    precision: str
    precision_reason: str | None = Field(None, description="why this precision: what FACEID_PRECISION asked "
                                         "for, what the CPU has, the int8 model's gate (None from older servers)")
    detector_backend: str | None = None  # torch | onnxruntime (None from servers before it existed)
    threshold: float = Field(description="the search threshold in force for this gallery (cosine; with cohort "
                             "normalisation a typical face's, see operating_point)")
    operating_point: OperatingPointOut | None = None  # None only from servers before it existed
    identities: int
    faces: int
    indexed_vectors: int
    batching: bool


class FaceWithLabel(FacePublic):
    label: str


class FacesBySource(BaseModel):
    items: list[FaceWithLabel] = Field(description="stored faces whose source image has one of the given hashes")


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, 64 lowercase hex digits")]
Coord = Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)]


class ImportedFace(BaseModel):
    """A stored aligned crop from another gallery (an export archive), with the metadata it was stored with."""
    model_config = ConfigDict(extra="forbid")
    crop: str = Field(min_length=1, description="base64 image (PNG) of the aligned crop, "
                      "image_size x image_size of the serving model's preprocessing")
    source_sha256: Sha256
    box: list[Coord] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in the source image")
    landmarks: list[Annotated[list[Coord], Field(min_length=2, max_length=2)]] = Field(
        min_length=5, max_length=5, description="5 (x, y) points in the source image")
    detection_score: float = Field(ge=0.0, le=1.0)
    crop_margin: int = Field(ge=0, le=10_000)

    @field_validator("box")
    @classmethod
    def _box_has_area(cls, box: list[float]) -> list[float]:
        if not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError("box must be x1, y1, x2, y2 with x1 < x2 and y1 < y2")
        return box


class FacesImport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label
    faces: list[ImportedFace] = Field(min_length=1)


class FaceMove(BaseModel):
    """Where a face goes: an existing identity, or the identity with a label (created if new)."""
    model_config = ConfigDict(extra="forbid")
    identity_id: int | None = Field(None, ge=1, le=2**63 - 1, examples=[7])
    label: Label | None = None


class FaceMoved(BaseModel):
    face: FacePublic
    identity: IdentityPublic = Field(description="the identity the face belongs to now")
    created: bool = Field(description="true when the identity was made for this face")
    deleted_identity_id: int | None = Field(description="the face's former identity, deleted when it was its "
                                            "last face")


FeedbackKind = Literal["is", "is_not", "nobody"]


class FeedbackJSON(BaseModel):
    """A report on a face: of a previous /identify answer (`probe_id`) or of a new upload (`image`)."""
    model_config = ConfigDict(extra="forbid")
    kind: FeedbackKind = Field(description="is: the face is identity_id; is_not: it is not identity_id; "
                               "nobody: it is nobody enrolled")
    identity_id: int | None = Field(None, ge=1, le=2**63 - 1, description="for 'is' and 'is_not'")
    probe_id: int | None = Field(None, ge=1, le=2**63 - 1, description="a face of a previous /identify answer")
    image: str | None = Field(None, min_length=1, description="or a new image (base64)")
    face_index: int | None = Field(None, ge=0)
    face_box: list[float] | None = Field(None, min_length=4, max_length=4)


class FeedbackPublic(BaseModel):
    id: int
    kind: FeedbackKind
    identity: IdentityRef | None = Field(description="who the face is ('is') or is not ('is_not')")
    answered_identity: IdentityRef | None = Field(description="the answer's best match, when the report "
                                                  "pointed at a probe (and the identity still exists)")
    answered_score: float | None
    probe_id: int | None
    model_version: str = Field(description="the model that made the answer (or saw the upload)")
    box: Box
    landmarks: list[list[float]]
    detection_score: float
    source_sha256: str
    crop_size: int
    crop_margin: int
    reported_by: str | None = Field(description="the API key's name (null on a keyless server)")
    created_at: UtcDatetime


class ProbePublic(BaseModel):
    """A face of a recent /identify answer, kept for FACEID_PROBE_RETENTION_S (the crop: GET /probes/{id}/crop)."""
    id: int
    status: str = Field(description="the answer: match | unknown | low_quality")
    top_identity: IdentityRef | None = Field(None, description="the best match, above the threshold or not "
                                             "(None: no match, or deleted since)")
    top_score: float | None = None
    box: Box
    detection_score: float
    source_sha256: str = Field(description="SHA-256 of the image identified (the image itself is not kept)")
    model_version: str
    created_at: UtcDatetime
    expires_at: UtcDatetime


class ProbesPage(BaseModel):
    items: list[ProbePublic]
    total: int
    offset: int
    limit: int


class FeedbackPage(BaseModel):
    items: list[FeedbackPublic]
    total: int
    offset: int
    limit: int


# --- unknown faces kept and clustered ----------------------------------------------------------------------
class UnknownSuggestion(BaseModel):
    identity: IdentityRef
    score: float = Field(description="cosine of the cluster's template and the identity's, at or above the "
                         "operating point in force (the same decision as a match)")


class UnknownClusterOut(BaseModel):
    id: int
    size: int = Field(description="kept faces")
    face_ids: list[int] = Field(description="a few representative faces (GET /unknown/faces/{id}/crop)")
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    dismissed: bool
    suggestion: UnknownSuggestion | None = Field(description="the enrolled identity it resembles, if any")


class UnknownClustersPage(BaseModel):
    items: list[UnknownClusterOut]
    total: int
    offset: int
    limit: int


class UnknownFacePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())
    id: int
    cluster_id: int
    box: Box
    landmarks: list[list[float]]
    detection_score: float
    source_sha256: str = Field(description="SHA-256 of the image the face was seen in")
    crop_size: int
    crop_margin: int
    model_version: str = Field(description="the model that first saw it")
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = Field(description="deleted then (FACEID_UNKNOWN_RETENTION_S); null: kept until "
                                           "deleted")


class UnknownClusterDetail(UnknownClusterOut):
    faces: list[UnknownFacePublic]


class UnknownEnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label | None = Field(None, description="enroll as this identity (created if new)")
    identity_id: int | None = Field(None, ge=1, description="or add the faces to this existing identity")


class UnknownRefineOut(BaseModel):
    faces: int
    clusters: int
    threshold: float = Field(description="the same-person threshold (mean cosine between clusters' faces)")
    seconds: float
    applied: bool = Field(description="false when faces kept meanwhile kept changing it (the next refine will)")


class UnknownPurgeOut(BaseModel):
    deleted_faces: int


# --- admin ---------------------------------------------------------------------------------------------------
class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    checkpoint: str = Field(min_length=1, max_length=255, examples=["finetuned.pt", "casia-webface"],
                            description="registry name, or a file name inside the checkpoints directory")


class ModelState(BaseModel):
    model_config = ConfigDict(protected_namespaces=())
    serving_version: str
    serving_name: str
    previous_version: str | None
    swap: dict
    versions_in_gallery: dict[str, int]
    held_in_memory: list[str] = Field(description="model versions this process keeps searches or tails of")


class CheckpointOut(BaseModel):
    name: str = Field(description="what POST /admin/model takes as `checkpoint`")
    source: str = Field(description="'file' (in FACEID_CHECKPOINTS_DIR) or 'registry' (a pretrained weight set)")
    size_bytes: int | None
    modified_at: float | None = Field(description="Unix time")
    description: str | None
    cached: bool = Field(description="on this machine already (a registry set not cached is fetched at the swap)")


class TrainRequest(BaseModel):
    """A fine-tuning job on the gallery's crops and corrections (`python -m training.main --from-gallery`);
    its checkpoint is swapped in only if it passes the gate (better on held-out identities, LFW kept)."""
    model_config = ConfigDict(extra="forbid")
    max_minutes: float = Field(10.0, gt=0, le=24 * 60, description="training time limit (a cap: the learning "
                               "rate schedule follows the steps)")
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, le=10**7, description="optimiser steps; the learning rate warms up "
                                  "and decays over them (default: the epochs' steps)")
    lr: float = Field(5e-5, gt=0, le=1.0, description="learning rate of the trained blocks (the README's "
                      "measured recipe: 5e-5 from mixed_6a on)")
    batch_size: int = Field(32, ge=4, le=1024, description="P identities x K faces")
    k: int = Field(4, ge=2, le=64)
    val_identities: float = Field(0.3, gt=0, lt=1, description="share of identities held out for the gate")
    lfw_pairs: int | None = Field(None, ge=20, le=6000, description="LFW pairs the gate checks (default all)")
    mining: Literal["batch_all", "batch_hard", "semi_hard"] = "batch_all"
    margin: float = Field(0.2, gt=0, le=2)
    train_from: str | None = Field("mixed_6a", max_length=40, pattern=r"^[a-z0-9_]+$",
                                   description="freeze the layers before this one (null: train them all)")
    validate_every: int | None = Field(None, ge=1, le=10**6, description="evaluate on the held-out identities "
                                       "every N steps (default with keep `best`: a sixth of the steps, 5 at least)")
    keep: Literal["best", "last"] = Field("best", description="best: the evaluated step the gate rates best, "
                                          "stopping early; last: the last step")
    patience: int = Field(3, ge=0, le=1000, description="evaluations without a better one before stopping (0: never)")
    select_lfw_pairs: int = Field(600, ge=0, le=6000, description="LFW pairs checked at each evaluation during "
                                  "training (0 or at least `lfw_pairs`: the gate's own)")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning rate over the steps")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps that warm the learning rate up")
    l2sp: float = Field(0.01, ge=0, le=100, description="L2-SP weight: pull toward the weights training starts from")
    blend: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        [0.5], max_length=4, description="with keep `best`: at each evaluation also offer these blends of the "
        "starting and the trained weights (the trained weights' share; WiSE-FT) and keep whichever the gate "
        "rates best; [] for none")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    start_from: str | None = Field(None, min_length=1, max_length=255, description="registry name or checkpoint "
                                   "file to start from (default: the serving model); the gate still compares "
                                   "with the serving model")
    collection: str | None = Field(None, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                                   description="train on this collection's faces and corrections (default: "
                                   "`default`); the model it publishes serves every collection")


# --- events and webhooks (app/services/events.py, docs/events.md) ---------------------------------------
EventType = Literal["identify.match", "identify.unknown", "enroll", "identity.updated", "identity.deleted",
                    "identity.merged", "model.swapped", "train.finished"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=2000, examples=["https://example.com/faceid"],
                     description="http(s) URL; non-public addresses only when listed in FACEID_WEBHOOK_ALLOWED_HOSTS")
    events: list[EventType | Literal["*"]] = Field(["*"], min_length=1, max_length=20,
                                                   description="event types wanted; `*`: all")
    secret: str | None = Field(None, min_length=16, max_length=200,
                               description="signing secret; generated when not given (shown once, in the answer)")


class WebhookPublic(BaseModel):
    id: int
    url: str
    events: list[str]
    created_at: float = Field(description="unix seconds")
    backlog: int = Field(description="events after the last one handled (not all of them may be wanted)")
    attempts: int = Field(description="failed tries of the next event")
    next_attempt_at: float = Field(description="unix seconds; 0: now")
    last_error: str | None
    dead_letters: int


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="the signing secret: shown this once")


class DeadLetterPublic(BaseModel):
    id: int
    event_id: str
    type: str
    attempts: int
    last_error: str | None
    replay: bool = Field(description="queued again, waiting for delivery")
    created_at: float
    event: dict = Field(description="the event as it would be delivered")


class DeadLettersPage(BaseModel):
    items: list[DeadLetterPublic]
    total: int
    offset: int
    limit: int


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] | None = Field(None, max_length=10_000, description="dead letter ids; omitted: all of them")


class ReplayResult(BaseModel):
    queued: int


class IdentifyEventData(BaseModel):
    face_index: int
    probe_id: int | None = Field(description="POST /feedback may point at it while the probe is kept")
    box: list[float]
    detection_score: float
    decision: Literal["match", "unknown"]
    identity: IdentityRef | None
    score: float | None = Field(description="the best identity's cosine score (for unknown: below the threshold)")
    threshold: float | None
    model_version: str
    image_sha256: str


class Event(BaseModel):
    """What every delivery's body is (the `data` differs by type; docs/events.md). Never an embedding."""
    id: str = Field(description="unique; a receiver seeing it twice has seen a duplicate delivery")
    type: EventType
    created_at: str = Field(description="ISO 8601, UTC")
    collection: str
    data: dict


class IdentifyEvent(Event):
    data: IdentifyEventData


# --- collections ------------------------------------------------------------------------------------------------
class CollectionSettings(BaseModel):
    """A collection's own settings; absent or null: the service's (FACEID_...)."""
    model_config = ConfigDict(extra="forbid")
    target_fpir: float | None = Field(None, gt=0.0, lt=1.0, description="its operating point: the share of "
                                      "searches for people never enrolled that may match (a door 0.001, a photo "
                                      "library 0.05)")
    target_far: float | None = Field(None, gt=0.0, lt=1.0, description="1:1 verification's false-accept rate")
    match_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="a fixed cosine threshold instead")
    gallery_calibration: bool | None = None
    top_k: int | None = Field(None, ge=1, le=100)
    enroll_min_face_size: int | None = Field(None, ge=1)
    enroll_min_detection_score: float | None = Field(None, ge=0.0, le=1.0)
    probe_retention_s: float | None = Field(None, ge=0.0, le=30 * 86400)
    remember_unknown: bool | None = None
    unknown_retention_s: float | None = Field(None, ge=0.0)
    unknown_max_faces: int | None = Field(None, ge=1)


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                      description="a-z, 0-9, '_' and '-'; `default` always exists")
    settings: CollectionSettings = Field(default_factory=CollectionSettings)


class CollectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    settings: CollectionSettings


class CollectionOut(BaseModel):
    name: str
    created_at: UtcDatetime | None = None
    settings: dict
    counts: dict[str, int] | None = None


class CollectionList(BaseModel):
    collections: list[CollectionOut]
    total: int
    offset: int
    limit: int


class CollectionDeleted(BaseModel):
    deleted: str
