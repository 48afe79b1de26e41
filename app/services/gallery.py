"""Gallery edits for the routes: the store's outcomes (a missing row, a label taken meanwhile) as `AppError`s, so
routes need neither the store's exceptions nor the database's."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from app.core.errors import AppError
from app.gallery.models import MAX_ID, Face, Identity
from app.gallery.store import GalleryStore, NotFound


def missing(kind: str, id_: int) -> AppError:
    return AppError(404, f"unknown_{kind}", f"{kind} {id_} does not exist")


def face_count(store: GalleryStore, identity_id: int) -> int:
    return store.face_count(identity_id)


def rename(store: GalleryStore, identity_id: int, label: str) -> Identity:
    """409 label_taken when another identity has the label; 404 when this one does not exist."""
    try:
        ident = store.rename(identity_id, label)
    except IntegrityError:
        raise AppError(409, "label_taken", f"another identity is already labelled {label!r}") from None
    if ident is None:
        raise missing("identity", identity_id)
    return ident


def move_face(store: GalleryStore, face_id: int, to_identity_id: int | None, to_label: str | None):
    """`GalleryStore.move_face`: (face, identity, created, emptied identity id or None); 404 for a missing face or
    identity, 409 when another request created the label at the same moment."""
    if to_identity_id is not None and to_identity_id > MAX_ID:
        raise missing("identity", to_identity_id)
    try:
        return store.move_face(face_id, to_identity_id=to_identity_id, to_label=to_label)
    except NotFound as exc:
        raise missing(exc.kind, exc.id) from None
    except IntegrityError:
        raise AppError(409, "label_taken", f"identity {to_label!r} was created meanwhile; retry") from None


def mark_distinct(duplicates, a: int, b: int) -> bool:
    """`Duplicates.mark_distinct`, 404 when either identity does not exist."""
    if b > MAX_ID:
        raise missing("identity", b)
    try:
        return duplicates.mark_distinct(a, b)
    except NotFound as exc:
        raise missing(exc.kind, exc.id) from None


def face(store: GalleryStore, face_id: int) -> Face:
    got = store.get_face(face_id)
    if got is None:
        raise missing("face", face_id)
    return got
