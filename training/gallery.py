"""Training data straight from a gallery database: the stored aligned crops (no detection again), labelled
by their identities, plus the corrections reported through POST /feedback.

- a face stored under identity X: a sample of class X;
- an "is X" report: a sample of class X; when the answer had named Y, also a hard negative for Y;
- an "is_not X" report: a sample of its own class, a hard negative for X;
- a "nobody" report: a sample of its own class, a hard negative for the identity the answer named (if any).

`training/` imports nothing from `app/`: the database is read as data, through its tables as the Alembic
migrations (app/gallery/migrations) define them, reflected at run time; the settings are the service's of
the same names (FACEID_ prefix, .env), read here by a settings class of their own.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import MetaData, create_engine, inspect, select


class GallerySettings(BaseSettings):
    """The service settings training needs (the same names and defaults as app/core/config.py's Settings)."""
    model_config = SettingsConfigDict(env_prefix="FACEID_", env_file=".env", extra="ignore")
    database_url: str = "sqlite:///./data/faceid.db"
    checkpoints_dir: Path = Path("./checkpoints")
    weights: str = "casia-webface"
    target_fpir: float = 0.01


def _tables(engine, names: list[str]) -> dict:
    md = MetaData()
    md.reflect(engine, only=names)
    return md.tables


def _png_to_crop(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)


def collection_url(database_url: str, name: str | None) -> str:
    """The database URL of collection `name` of the service whose default gallery is `database_url` (the same
    layout as app/services/collections.py: SQLite, `<db>.collections/c<id>.db`; PostgreSQL, the schema
    `faceid_c<id>` through the connection's search_path). `default` or None: `database_url` itself."""
    from sqlalchemy.engine import make_url

    if not name or name == "default":
        return database_url
    engine = create_engine(database_url)
    try:
        if not inspect(engine).has_table("collections"):
            raise SystemExit(f"the gallery at {make_url(database_url).render_as_string()} has no collections "
                             "(a release before them)")
        t = _tables(engine, ["collections"])["collections"]
        with engine.connect() as conn:
            cid = conn.scalar(select(t.c.id).where(t.c.name == name, t.c.state == "active"))
    finally:
        engine.dispose()
    if cid is None:
        raise SystemExit(f"collection {name!r} does not exist")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return url.set(database=str(Path(f"{url.database}.collections") / f"c{cid}.db")).render_as_string(False)
    return url.update_query_dict({"options": f"-csearch_path=faceid_c{cid},public"}).render_as_string(False)


def serving_model(database_url: str) -> str | None:
    """The checkpoint a hot swap recorded for the gallery's servers (None: FACEID_WEIGHTS serves)."""
    engine = create_engine(database_url)
    try:
        t = _tables(engine, ["gallery_state"])["gallery_state"]
        with engine.connect() as conn:
            return conn.scalar(select(t.c.serving_model).where(t.c.id == 1))
    finally:
        engine.dispose()


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
    engine = create_engine(database_url)
    try:
        t = _tables(engine, ["identities", "faces", "feedback"])
        ident, face, fb = t["identities"], t["faces"], t["feedback"]
        with engine.connect() as conn:
            identities = conn.execute(select(ident.c.id, ident.c.label).order_by(ident.c.id)).all()
            faces = conn.execute(select(face.c.identity_id, face.c.crop_png, face.c.crop_size)
                                 .order_by(face.c.id)).all()
            reports = conn.execute(select(fb.c.id, fb.c.kind, fb.c.identity_id, fb.c.answered_identity_id,
                                          fb.c.crop_png, fb.c.crop_size).order_by(fb.c.id)).all()
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
        crops.append(_png_to_crop(png))
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
