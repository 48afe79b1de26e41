"""A portable gallery archive, and export/import through the API.

The archive is a zip: `manifest.json` (format, version, source server, collection and model, counts, per identity
its label and faces with their metadata) and `crops/<n>.png`, each face's stored aligned crop (the pixels
the embedder saw, lossless), with its SHA-256 in the manifest. Importing embeds the crops with the target's
serving model (`POST /faces/import`), so no original photo is needed.

Import is idempotent: a face counts as present when its identity (by label) already has a face with the same
source image hash and box; only the missing ones are sent (as a multiset: a photo enrolled twice stays
twice). Afterwards every archived face is checked to be present.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from faceid_client.client import FaceIDClient, FaceIDError
from faceid_client.labels import normalize_label

FORMAT, VERSION = "faceid-gallery", 1
MANIFEST = "manifest.json"
# What a member may declare before it is read (a zip bomb inflates a small member to gigabytes): an aligned
# crop is a PNG of at most 1024 x 1024 RGB (about 3 MiB uncompressed); a manifest lists every face's metadata.
MAX_CROP_BYTES = 8 * 2**20
MAX_MANIFEST_BYTES = 256 * 2**20
_PNG = b"\x89PNG\r\n\x1a\n"


class ArchiveError(Exception):
    """The file is not a usable gallery archive (nothing was changed on the server)."""


def face_key(source_sha256: str, box) -> tuple:
    """What identifies a stored face across galleries: its source image and where in it the face was."""
    return source_sha256, tuple(round(float(x), 2) for x in box)


@dataclass
class ExportReport:
    path: Path
    identities: int
    faces: int
    skipped_faces: int = 0   # deleted on the server while exporting


def export_gallery(client: FaceIDClient, path: Path, concurrency: int = 4,
                   on_face: Callable[[], None] | None = None,
                   on_plan: Callable[[int], None] | None = None) -> ExportReport:
    """Write every identity of the client's collection, its faces' metadata and crops to `path` (atomically: temp
    file, then rename). `on_plan(n)` is told how many faces there are to export, `on_face()` as each is done."""
    source = _source(client)
    identities, n_faces, skipped = [], 0, 0
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf, \
                ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            listed = list(client.identities())
            if on_plan:
                on_plan(sum(i.face_count for i in listed))
            for ident in listed:
                try:
                    detail = client.identity(ident.id)
                except FaceIDError as exc:
                    if exc.status == 404:  # deleted meanwhile
                        continue
                    raise
                crops = list(pool.map(lambda f: _crop_or_none(client, f.id), detail.faces))
                faces = []
                for f, crop in zip(detail.faces, crops):
                    if on_face:
                        on_face()
                    if crop is None:
                        skipped += 1
                        continue
                    n_faces += 1
                    name = f"crops/{n_faces:07d}.png"
                    zf.writestr(name, crop)
                    faces.append({"crop": name, "crop_sha256": hashlib.sha256(crop).hexdigest(),
                                  "source_sha256": f.source_sha256, "box": f.box, "landmarks": f.landmarks,
                                  "detection_score": f.detection_score, "crop_size": f.crop_size,
                                  "crop_margin": f.crop_margin, "created_at": f.created_at.isoformat()})
                if faces:
                    identities.append({"label": detail.label, "faces": faces})
            manifest = {"format": FORMAT, "version": VERSION,
                        "created_at": datetime.now(timezone.utc).isoformat(),
                        "source": source,
                        "counts": {"identities": len(identities), "faces": n_faces},
                        "identities": identities}
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ExportReport(path, len(identities), n_faces, skipped)


def _source(client: FaceIDClient) -> dict:
    """Where an archive comes from: server, collection, serving model. A key bound to collections may not read the
    service-wide /ready (403 collection_forbidden): the model is then not recorded (an import does not need it)."""
    try:
        ready = client.ready()
        model = {"model_name": ready.model_name, "model_version": ready.model_version}
    except FaceIDError as exc:
        if exc.code != "collection_forbidden":
            raise
        model = {"model_name": None, "model_version": None}
    return {"url": client.url, "collection": client.collection_name, **model}


def _crop_or_none(client: FaceIDClient, face_id: int) -> bytes | None:
    try:
        return client.face_crop(face_id)
    except FaceIDError as exc:
        if exc.status == 404:
            return None
        raise


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's bytes, refused from its declared size before reading (zipfile stops at the declared size,
    so a member cannot inflate past it)."""
    size = zf.getinfo(name).file_size
    if size > limit:
        raise ArchiveError(f"{name} declares {size} bytes; at most {limit} are read (not a faceid archive?)")
    return zf.read(name)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, None when the data is not a PNG."""
    if len(data) < 24 or not data.startswith(_PNG) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def read_archive(path: Path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, crops by name), every crop's declared size, hash and pixel size and the counts checked, and
    every label normalised as the server does (so an import compares labels as the server stores them);
    ArchiveError when anything is off. Nothing is sent to a server before all of it has been checked."""
    try:
        with zipfile.ZipFile(path) as zf:
            manifest = json.loads(_read_member(zf, MANIFEST, MAX_MANIFEST_BYTES))
            if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
                raise ArchiveError(f"not a {FORMAT} v{VERSION} archive "
                                   f"(format {manifest.get('format')!r}, version {manifest.get('version')!r})")
            crops, sizes = {}, set()
            for ident in manifest["identities"]:
                try:
                    ident["label"] = normalize_label(ident["label"])
                except ValueError as exc:
                    raise ArchiveError(f"label {str(ident['label'])[:50]!r}: {exc}") from None
                for face in ident["faces"]:
                    data = _read_member(zf, face["crop"], MAX_CROP_BYTES)
                    if hashlib.sha256(data).hexdigest() != face["crop_sha256"]:
                        raise ArchiveError(f"{face['crop']} does not match its SHA-256 (corrupted archive)")
                    size = _png_size(data)
                    if size is None or size != (face["crop_size"], face["crop_size"]):
                        raise ArchiveError(f"{face['crop']} is {'not a PNG' if size is None else '%dx%d px' % size}"
                                           f"; the manifest says {face['crop_size']} px square")
                    sizes.add(size)
                    crops[face["crop"]] = data
            if len(sizes) > 1:  # one server embeds one crop size: the import would stop part way
                raise ArchiveError(f"the crops have different sizes {sorted(sizes)}; a gallery's crops share one")
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    counts = manifest.get("counts", {})
    n_faces = sum(len(i["faces"]) for i in manifest["identities"])
    if counts != {"identities": len(manifest["identities"]), "faces": n_faces}:
        raise ArchiveError(f"manifest counts {counts} do not match its contents "
                           f"({len(manifest['identities'])} identities, {n_faces} faces)")
    merged: dict[str, dict] = {}  # "Zoë" composed and decomposed are one identity on the server
    for ident in manifest["identities"]:
        merged.setdefault(ident["label"], {"label": ident["label"], "faces": []})["faces"] += ident["faces"]
    manifest["identities"] = list(merged.values())
    return manifest, crops


@dataclass
class ImportReport:
    identities: int = 0           # in the archive
    identities_created: int = 0
    faces: int = 0                # in the archive
    faces_added: int = 0
    faces_present: int = 0        # already there (idempotence)
    verified: bool = False
    problems: list[str] = field(default_factory=list)


def import_gallery(client: FaceIDClient, path: Path, batch_size: int = 10, concurrency: int = 4,
                   on_plan: Callable[[int], None] | None = None,
                   on_faces: Callable[[int], None] | None = None) -> ImportReport:
    """Add the archive's identities and faces that the server lacks; then check that all are there."""
    manifest, crops = read_archive(path)
    report = ImportReport(identities=len(manifest["identities"]),
                          faces=sum(len(i["faces"]) for i in manifest["identities"]))
    existing = {i.label: i.id for i in client.identities()}
    batches = []
    for ident in manifest["identities"]:
        have = _keys(client, existing.get(ident["label"]))
        missing = []
        for face in ident["faces"]:
            key = face_key(face["source_sha256"], face["box"])
            if have[key] > 0:
                have[key] -= 1
                report.faces_present += 1
            else:
                missing.append(face)
        for i in range(0, len(missing), batch_size):
            batches.append((ident["label"], missing[i:i + batch_size]))

    if on_plan:
        on_plan(sum(len(faces) for _, faces in batches))

    def send(batch) -> tuple[bool, int]:
        label, faces = batch
        body = [{"crop": crops[f["crop"]], "source_sha256": f["source_sha256"], "box": f["box"],
                 "landmarks": f["landmarks"], "detection_score": f["detection_score"],
                 "crop_margin": f["crop_margin"]} for f in faces]
        result = client.import_faces(label, body)
        if on_faces:
            on_faces(len(faces))
        return result.created, len(result.faces)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for created, added in pool.map(send, batches):
            report.identities_created += created
            report.faces_added += added
    _verify(client, manifest, report)
    return report


def _keys(client: FaceIDClient, identity_id: int | None) -> Counter:
    if identity_id is None:
        return Counter()
    return Counter(face_key(f.source_sha256, f.box) for f in client.identity(identity_id).faces)


def _verify(client: FaceIDClient, manifest: dict, report: ImportReport) -> None:
    """Every archived face is on the server, under its label (multiset inclusion)."""
    now = {i.label: i.id for i in client.identities()}
    for ident in manifest["identities"]:
        want = Counter(face_key(f["source_sha256"], f["box"]) for f in ident["faces"])
        have = _keys(client, now.get(ident["label"]))
        short = sum((want - have).values())
        if short:
            report.problems.append(f"{ident['label']!r}: {short} of {sum(want.values())} faces missing")
    report.verified = not report.problems
