"""Client-side bulk work over the API: enroll a folder `DIR/<label>/<images>`, identify many images.

Uploads run on a bounded thread pool sharing one FaceIDClient. Enrollment is resumable: every file is hashed
(SHA-256 of its bytes, as the server records `source_sha256`) and files already enrolled are skipped; files the
server refused are remembered in a state file (`RefusalLog`) and not sent again unless asked. An answer that
concerns one file (a 4xx such as no_face) refuses that file and the run goes on; anything else (unreachable,
401/403, 5xx after retries) stops the run at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from faceid_client.client import FaceIDClient, FaceIDError
from faceid_client.collection_names import DEFAULT_COLLECTION
from faceid_client.models import IdentifyResponse

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"})
# Answers about one input: refuse that file, go on with the others.
PER_FILE_STATUSES = frozenset({400, 413, 415, 422})
# a state file is opened without following a link, and without waiting on a FIFO (flags absent on Windows)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def read_state(path: Path) -> list[str]:
    """The lines of a state file kept in the folder worked on ([] when there is none). The folder may come from
    anyone: a link (to ~/.bashrc) or a FIFO in its place is an OSError, not followed; bytes that are not UTF-8
    make lines that match nothing, as a line cut short by a crash does."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            raise OSError(f"{path} is not a regular file (a link is not followed)")
    except FileNotFoundError:
        return []
    return path.read_bytes().decode("utf-8", "replace").splitlines()


def append_state(path: Path):
    """`path` opened to append to, as `read_state` reads it: never through a link, never waiting on a FIFO."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o666)
    f = open(fd, "a")
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # made a FIFO since it was read
        f.close()
        raise OSError(f"{path} is not a regular file")
    return f


def is_per_file(exc: FaceIDError) -> bool:
    return exc.status in PER_FILE_STATUSES


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_files(paths: list[Path]) -> list[Path]:
    """Files as given, and the image files under directories (recursively, sorted); hidden ones skipped."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class EnrollItem:
    path: Path
    label: str
    sha256: str


@dataclass
class EnrollReport:
    enrolled: list[tuple[EnrollItem, int]] = field(default_factory=list)        # (item, face id)
    skipped: list[tuple[EnrollItem, str]] = field(default_factory=list)         # (item, why)
    refused: list[tuple[EnrollItem, str, str]] = field(default_factory=list)    # (item, code, message)
    refused_before: list[tuple[EnrollItem, str, str]] = field(default_factory=list)  # in the RefusalLog: not sent
    not_attempted: list[EnrollItem] = field(default_factory=list)               # beyond --max-files
    # (label, other identity's label, score): the server's possible_duplicate warnings, one per label pair
    possible_duplicates: dict[tuple[str, str], float] = field(default_factory=dict)

    def refused_by_code(self) -> dict[str, list[tuple[EnrollItem, str]]]:
        out: dict[str, list[tuple[EnrollItem, str]]] = {}
        for item, code, message in self.refused:
            out.setdefault(code, []).append((item, message))
        return dict(sorted(out.items()))


def folder_label(name: str, underscores_as_spaces: bool = False) -> str:
    """A folder's name as a label, by the server's rule (NFC, stripped: a decomposed "José" folder from macOS must
    match what it stores); `underscores_as_spaces`: face_recognition's and LFW's `George_W_Bush` convention."""
    label = unicodedata.normalize("NFC", name)
    return (" ".join(label.replace("_", " ").split()) if underscores_as_spaces else label).strip()


def scan_folder(root: Path, label: str | None = None, underscores_as_spaces: bool = False) -> list[EnrollItem]:
    """`root/<label>/**/<image>`, sorted by label then path; files directly in `root` are not enrolled. With
    `label`: every image under `root` is that one person."""
    if label is not None:
        return [EnrollItem(f, label, file_sha256(f)) for f in image_files([root])]
    items = []
    for label_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        name = folder_label(label_dir.name, underscores_as_spaces)
        for f in image_files([label_dir]):
            items.append(EnrollItem(f, name, file_sha256(f)))
    return items


def loose_images(root: Path) -> list[Path]:
    """The images directly in `root`, which `scan_folder` does not enroll without a label."""
    return [f for f in image_files([root]) if f.parent == root]


class RefusalLog:
    """The files a server refused to enroll, by content: one JSON line per refusal (`sha256`, `url`,
    `collection`, `code`, `message`), appended at once so an interrupted run keeps what it learnt. A refusal
    counts for the server (URL) and collection that answered it only (a line without `collection`, from before
    collections, is `default`'s); an edited file has a new hash and is tried again. A state file that cannot be
    written is not fatal: `error` says why, and the run goes on without remembering."""

    def __init__(self, path: Path, url: str, collection: str = DEFAULT_COLLECTION):
        self.path, self.url, self.collection, self.error = path, url, collection, None
        self.entries: dict[str, tuple[str, str]] = {}  # sha256 -> (code, message)
        try:
            lines = read_state(path)
        except OSError as exc:
            lines, self.error = [], f"cannot read {path}: {exc.strerror or exc}"
        for line in lines:
            try:
                e = json.loads(line)
                if e["url"] == url and e.get("collection", DEFAULT_COLLECTION) == collection:
                    self.entries[e["sha256"]] = (e["code"], e["message"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: that refusal is simply asked again

    def add(self, item: EnrollItem, code: str, message: str) -> None:
        self.entries[item.sha256] = (code, message)
        if self.error:
            return
        try:
            with append_state(self.path) as f:
                f.write(json.dumps({"sha256": item.sha256, "url": self.url, "collection": self.collection,
                                    "code": code, "message": message}) + "\n")
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"


def plan_enrollment(client: FaceIDClient, items: list[EnrollItem], report: EnrollReport,
                    refused_before: dict[str, tuple[str, str]] | None = None) -> list[EnrollItem]:
    """The items still to upload; the others go to `report` (already enrolled, duplicates, or refused by an
    earlier run: `refused_before`, sha256 -> (code, message))."""
    enrolled_as: dict[str, set[str]] = {}
    for face in client.faces_by_source(i.sha256 for i in items):
        enrolled_as.setdefault(face.source_sha256, set()).add(face.label)
    first_seen: dict[str, EnrollItem] = {}
    todo = []
    for item in items:
        labels = enrolled_as.get(item.sha256, set())
        seen = first_seen.setdefault(item.sha256, item)
        if item.label in labels:
            report.skipped.append((item, "already enrolled"))
        elif labels:
            report.refused.append((item, "enrolled_as_other",
                                   f"the same image is already enrolled as {sorted(labels)[0]!r}"))
        elif seen is not item and seen.label == item.label:
            report.skipped.append((item, f"same content as {seen.path.name}"))
        elif seen is not item:
            report.refused.append((item, "duplicate_image", f"the same image is in {seen.label!r} ({seen.path})"))
        elif refused_before and item.sha256 in refused_before:
            report.refused_before.append((item, *refused_before[item.sha256]))
        else:
            todo.append(item)
    return todo


def enroll_items(client: FaceIDClient, items: list[EnrollItem], concurrency: int = 4, max_files: int | None = None,
                 refusals: RefusalLog | None = None, retry_refused: bool = False,
                 on_plan: Callable[[int], None] | None = None,
                 on_done: Callable[[EnrollItem, str], None] | None = None) -> EnrollReport:
    """Enroll every item not enrolled yet (nor refused before, in `refusals`, unless `retry_refused`), one image
    per request, `concurrency` at a time; new refusals go to `refusals`. `max_files` uploads only the first N
    pending files (the rest are reported as not attempted): a deterministic interruption. `on_plan(n)` is told
    how many uploads there will be, `on_done(item, outcome)` as each one finishes (progress)."""
    report = EnrollReport()
    todo = plan_enrollment(client, items, report,
                           None if refusals is None or retry_refused else refusals.entries)
    if max_files is not None:
        todo, report.not_attempted = todo[:max_files], todo[max_files:]
    if on_plan:
        on_plan(len(todo))

    def upload(item: EnrollItem):
        r = client.enroll(item.label, [item.path.read_bytes()])
        return r.faces[0].id, [(w.identity.label, w.score) for w in r.warnings if w.code == "possible_duplicate"]

    for item, result in _run_pool(upload, todo, concurrency):
        if isinstance(result, FaceIDError):
            report.refused.append((item, result.code, result.message))
            if refusals is not None:
                refusals.add(item, result.code, result.message)
            outcome = "refused"
        else:
            face_id, warnings = result
            report.enrolled.append((item, face_id))
            for other, score in warnings:
                key = (item.label, other)
                report.possible_duplicates[key] = max(score, report.possible_duplicates.get(key, -1.0))
            outcome = "enrolled"
        if on_done:
            on_done(item, outcome)
    return report


def identify_files(client: FaceIDClient, files: list[Path], concurrency: int = 4, top_k: int | None = None,
                   threshold: float | None = None) -> Iterator[tuple[Path, IdentifyResponse | FaceIDError]]:
    """(path, answer or per-file error) for each file, in completion order."""
    def one(path: Path) -> IdentifyResponse:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FaceIDError(400, "unreadable_file", f"{path}: {exc.strerror or exc}") from exc
        return client.identify(data, top_k=top_k, threshold=threshold)

    yield from _run_pool(one, files, concurrency)


def _run_pool(fn, items, concurrency: int):
    """Run fn over items with at most `concurrency` in flight; yield (item, result or per-file FaceIDError).
    Any other error cancels what has not started and is raised."""
    pending: dict[Future, object] = {}
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="faceid")
    interrupted = False
    try:
        while True:
            while len(pending) < max(1, concurrency):  # bounded: never more queued than workers
                item = next(it, _END)
                if item is _END:
                    break
                pending[pool.submit(fn, item)] = item
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                try:
                    yield item, fut.result()
                except FaceIDError as exc:
                    if not is_per_file(exc):
                        raise
                    yield item, exc
    except (KeyboardInterrupt, GeneratorExit):
        interrupted = True
        raise
    finally:
        # Ctrl-C: the caller closes its progress bar and says how to resume now, not after the uploads in
        # flight (they finish on their own; the interpreter waits for them at exit)
        pool.shutdown(wait=not interrupted, cancel_futures=True)


_END = object()


@dataclass
class ScanReport:
    scanned: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)       # scanned by an earlier run (in the state file)
    errors: list[tuple[Path, FaceIDError]] = field(default_factory=list)
    unknown_faces: int = 0                                 # faces the server kept as unknown
    matched_faces: int = 0


def scan_files(client: FaceIDClient, files: list[Path], state: Path, concurrency: int = 4,
               on_plan=None, on_done=None) -> ScanReport:
    """Identify every file with remember_unknown (the server keeps and clusters the unknown faces) in the client's
    collection. Resumable: each file identified is appended to `state` at once (its SHA-256, one per line, then
    the collection's name unless it is `default`), and files already there for this collection are skipped, so
    an interrupted scan goes on where it stopped and a rescan sends only new photos."""
    report = ScanReport()
    done = _scanned(read_state(state), client.collection_name)
    tag = "" if client.collection_name == DEFAULT_COLLECTION else f" {client.collection_name}"
    todo: list[tuple[Path, str]] = []
    for path in files:
        try:
            digest = file_sha256(path)
        except OSError as exc:
            report.errors.append((path, FaceIDError(400, "unreadable_file", f"{path}: {exc.strerror or exc}")))
            continue
        (report.skipped.append(path) if digest in done else todo.append((path, digest)))
    if on_plan is not None:
        on_plan(len(todo))

    def one(item: tuple[Path, str]):
        return client.identify(item[0].read_bytes(), remember_unknown=True)

    state.parent.mkdir(parents=True, exist_ok=True)
    with append_state(state) as log:
        for (path, digest), result in _run_pool(one, todo, concurrency):
            if isinstance(result, FaceIDError):
                report.errors.append((path, result))
            else:
                report.scanned.append(path)
                report.unknown_faces += sum(1 for f in result.faces if getattr(f, "unknown_face_id", None))
                report.matched_faces += sum(1 for f in result.faces if f.status == "match")
                log.write(digest + tag + "\n")
                log.flush()
            if on_done is not None:
                on_done(path, result)
    return report


def _scanned(lines: list[str], collection: str) -> set[str]:
    """The SHA-256 recorded as scanned into `collection`: `<sha256>` lines are `default`'s (as before
    collections), `<sha256> <collection>` lines that collection's."""
    done = set()
    for line in lines:
        words = line.split()
        if words and (words[1:] or [DEFAULT_COLLECTION])[0] == collection:
            done.add(words[0])
    return done
