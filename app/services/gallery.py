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


def rename(store: GalleryStore, identity_id: int, label: str, cover: bool = False,
           cover_face_id: int | None = None) -> Identity:
    """409 label_taken when another identity has the label; 404 when this one does not exist; with `cover`, the
    cover set in the same transaction (`set_cover`'s errors, and then nothing changes)."""
    try:
        ident = store.rename(identity_id, label, cover, cover_face_id)
    except IntegrityError:
        raise AppError(409, "label_taken", f"another identity is already labelled {label!r}") from None
    except NotFound:
        raise _cover_missing(store, identity_id, cover_face_id) from None
    if ident is None:
        raise missing("identity", identity_id)
    return ident


def cover_of(store: GalleryStore, identity_id: int, face_id: int) -> Face:
    """The face, when it is one of the identity's: 404 for a missing identity or face, 422 for another's face."""
    f = store.get_face(face_id) if face_id <= MAX_ID else None
    if f is None or f.identity_id != identity_id:
        if store.get_identity(identity_id, False) is None:
            raise missing("identity", identity_id)
        if f is None:
            raise missing("face", face_id)
        raise AppError(422, "face_not_in_identity", f"face {face_id} is a face of identity {f.identity_id}, "
                       f"not of {identity_id}: a cover is one of the identity's own faces")
    return f


def set_cover(store: GalleryStore, identity_id: int, face_id: int | None) -> Identity:
    """`GalleryStore.set_cover` with `cover_of`'s errors (a face moved or deleted meanwhile: 404 / 422)."""
    try:
        return store.set_cover(identity_id, face_id)
    except NotFound:
        raise _cover_missing(store, identity_id, face_id) from None


def _cover_missing(store: GalleryStore, identity_id: int, face_id: int | None) -> AppError:
    """Why a cover was not set: `cover_of`'s 404 or 422."""
    if face_id is None:
        return missing("identity", identity_id)
    try:
        cover_of(store, identity_id, face_id)
    except AppError as exc:
        return exc
    return missing("face", face_id)


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
