"""Training data straight from a gallery database: the stored aligned crops (no detection again), labelled
by their identities, plus the corrections reported through POST /feedback.

- a face stored under identity X: a sample of class X;
- an "is X" report: a sample of class X; when the answer had named Y, also a hard negative for Y;
- an "is_not X" report: a sample of its own class, a hard negative for X;
- a "nobody" report: a sample of its own class, a hard negative for the identity the answer named (if any).

This is the one module of `training/` that reads the service's database (through `app.gallery`'s models).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from app.gallery.models import Face, Feedback, Identity
from app.gallery.store import make_engine, png_to_crop


@dataclass
class GalleryData:
    """`labels[i]`: class of crop i (an identity's index in `classes`, or a class of its own for a reported
    face that is nobody enrolled or not X); `not_labels[i]`: the class crop i was reported not to be (-1: none)."""
    crops: np.ndarray
    labels: np.ndarray
    not_labels: np.ndarray
    classes: list[str]
    is_identity: np.ndarray          # per class: an enrolled identity (True) or a reported face's own class
    counts: dict = field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> "GalleryData":
        return GalleryData(self.crops[keep], self.labels[keep], self.not_labels[keep], self.classes,
                           self.is_identity, self.counts)


def load_gallery(database_url: str, image_size: int) -> GalleryData:
    """Every stored face and report of `database_url` whose crop is `image_size` pixels (others are counted in
    `counts['skipped_size']`: a crop of another size was made for another model's input)."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            identities = conn.execute(select(Identity.id, Identity.label).order_by(Identity.id)).all()
            faces = conn.execute(select(Face.identity_id, Face.crop_png, Face.crop_size).order_by(Face.id)).all()
            reports = conn.execute(select(Feedback.id, Feedback.kind, Feedback.identity_id,
                                          Feedback.answered_identity_id, Feedback.crop_png, Feedback.crop_size)
                                   .order_by(Feedback.id)).all()
    finally:
        engine.dispose()
    classes = [label for _, label in identities]
    cls = {iid: i for i, (iid, _) in enumerate(identities)}
    crops, labels, not_labels = [], [], []
    skipped = 0

    def add(png, size, label, not_label=-1):
        nonlocal skipped
        if size != image_size:
            skipped += 1
            return
        crops.append(png_to_crop(png))
        labels.append(label)
        not_labels.append(not_label)

    for iid, png, size in faces:
        add(png, size, cls[iid])
    own = 0
    for fid, kind, iid, answered, png, size in reports:
        negative_of = cls.get(answered, -1) if answered is not None else -1
        if kind == "is":
            add(png, size, cls[iid], negative_of if answered != iid else -1)
            continue
        classes.append(f"feedback:{fid}")  # a class of its own: this face is nobody of the gallery (or not X)
        own += 1
        add(png, size, len(classes) - 1, cls[iid] if kind == "is_not" else negative_of)
    is_identity = np.array([True] * len(identities) + [False] * own)
    counts = {"identities": len(identities), "faces": len(faces), "reports": len(reports),
              "reports_by_kind": {k: sum(r[1] == k for r in reports) for k in ("is", "is_not", "nobody")},
              "skipped_size": skipped}
    size = (0, image_size, image_size, 3)
    return GalleryData(np.stack(crops) if crops else np.zeros(size, np.uint8), np.array(labels, np.int64),
                       np.array(not_labels, np.int64), classes, is_identity, counts)


def split_identities(data: GalleryData, val_share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, validation mask) over crops: a `val_share` of the identities with 2+ crops is held out
    with all their crops and the reports against them; reported faces against training identities train."""
    n_per_class = np.bincount(data.labels, minlength=len(data.classes))
    eligible = np.nonzero(data.is_identity & (n_per_class >= 2))[0]
    rng = np.random.default_rng(seed)
    n_val = int(round(len(eligible) * val_share))
    val_classes = set(rng.choice(eligible, n_val, replace=False).tolist()) if n_val else set()
    is_val = np.array([lab in val_classes or nl in val_classes for lab, nl in zip(data.labels, data.not_labels)],
                      bool)
    return ~is_val, is_val
