"""The `faceid` command: script the API (enroll folders, identify, verify, export/import), and serve it.

Human output by default, `--json` for scripts. Exit codes: 0 done; 1 error (the API's error code and message
are printed; server unreachable; unusable archive); 2 usage error; 3 done, but not a full yes (some inputs
were refused, or verify found two different people); 130 interrupted (Ctrl-C). `--url`/`FACEID_URL` and
`--api-key`/`FACEID_API_KEY` say which server and key; `--collection`/`FACEID_COLLECTION` which collection (an
isolated gallery) the gallery commands work in, before the command (`faceid --collection doors identify ...`)
or after it (`faceid identify ... --collection doors`). Faces are numbered from 1, as in the web UI (the API's
`face_index` is that number minus 1).

This package imports nothing of the server (tests/test_imports.py): `serve` and `weights` run the server's
own modules (`python -m app.serve`, `python -m model.weights`) in their process, and say so where the server
package (`faceid`) is not installed.
"""
from __future__ import annotations

import csv
import importlib.machinery
import json
import os
import subprocess
import sys
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from faceid_client.client import DEFAULT_URL, FaceIDClient, FaceIDError
from faceid_client.collection_names import check_collection_name
from faceid_client.labels import _FORBIDDEN_IN_LABELS

EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 1, 2, 3, 130

app = typer.Typer(name="faceid", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Face identification service: serve it, and script it from the shell.\n\n"
                       "Exit codes: 0 done, 1 error, 2 usage, 3 done but some inputs refused (or verify: "
                       "different people), 130 interrupted.")
weights_app = typer.Typer(no_args_is_help=True, help="Model weights in $TORCH_HOME/checkpoints.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys for FACEID_API_KEYS.")
collections_app = typer.Typer(no_args_is_help=True, help="Collections: isolated galleries (an admin key).")
app.add_typer(weights_app, name="weights")
app.add_typer(keys_app, name="keys")
app.add_typer(collections_app, name="collections")


def _printable(text: str) -> str:
    """`text` with its control and invisible characters written out (\\x1b, \\u202e), line breaks and tabs kept:
    labels and messages come from the server, and an escape sequence in one must not reach the terminal (OSC 52
    sets the clipboard; others move the cursor, rewrite the screen or reverse the text). No honest label has one."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in _FORBIDDEN_IN_LABELS
                   else c.encode("unicode_escape").decode() for c in text)


def _echo(text: str, err: bool = False) -> None:
    """typer.echo of what may come from the server (`_printable`)."""
    typer.echo(_printable(text), err=err)

Url = Annotated[str, typer.Option("--url", envvar="FACEID_URL", help="server URL", show_default=True)]
ApiKey = Annotated[Optional[str], typer.Option("--api-key", envvar="FACEID_API_KEY", show_default=False,
                                               help="API key (X-API-Key)")]
Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="seconds per request")]
Json = Annotated[bool, typer.Option("--json", help="JSON on stdout for scripts")]
Concurrency = Annotated[int, typer.Option("--concurrency", "-c", min=1, max=64, help="requests in flight")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar on stderr (default: on a terminal)")]


def _collection_name(value: str | None) -> str | None:
    """A --collection value or NAME argument checked before any request (it goes into the URL path)."""
    if value is None:
        return None
    try:
        return check_collection_name(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


Collection = Annotated[Optional[str], typer.Option("--collection", metavar="NAME", callback=_collection_name,
                                                   show_default=False,
                                                   help="collection to work in  [default: `faceid --collection "
                                                        "NAME`, else FACEID_COLLECTION, else default]")]


@app.callback()
def _global_options(ctx: typer.Context, collection: Annotated[Optional[str], typer.Option(
        "--collection", metavar="NAME", envvar="FACEID_COLLECTION", callback=_collection_name, show_default=False,
        help="collection (an isolated gallery) every gallery command works in  [default: default]")] = None) -> None:
    """Options before the command name (`faceid --collection doors identify ...`): this one becomes the default
    of the command's own --collection (click's default_map), which wins when given too."""
    if collection is not None:
        ctx.default_map = {**(ctx.default_map or {}),
                           **{name: {"collection": collection} for name in ctx.command.commands}}


def _client(url: str, api_key: str | None, timeout_s: float, collection: str | None = None) -> FaceIDClient:
    """FACEID_RETRIES (default 3): extra attempts on 503/429 and on connection failures. `collection`: the
    command's --collection (None: default)."""
    try:
        retries = max(0, int(os.environ.get("FACEID_RETRIES") or 3))
    except ValueError:
        raise typer.BadParameter("FACEID_RETRIES must be an integer") from None
    return FaceIDClient(url, api_key=api_key or None, timeout_s=timeout_s, retries=retries,
                        collection=collection)


def _emit(data, as_json: bool, human: str | None = None) -> None:
    if as_json:
        _echo(json.dumps(data, indent=None, default=str))
    elif human is not None:
        _echo(human)


def _fail(code: str, message: str, as_json: bool, status: int = 0, exit_code: int = EXIT_ERROR):
    """One line on stderr (`error: code: message`), the same as JSON on stdout with --json; exit."""
    _echo(f"error: {code}" + (f" ({status})" if status else "") + f": {message}", err=True)
    if as_json:
        _emit({"error": {"status": status, "code": code, "message": message}}, True)
    raise typer.Exit(exit_code)


COLLECTION_HINTS = {
    "collection_forbidden": " (this key is bound to other collections: name one of them with --collection NAME or "
                            "FACEID_COLLECTION; service-wide commands need a key bound to none)",
    "unknown_collection": " (`faceid collections list` lists them; an admin key makes one: "
                          "`faceid collections create NAME`)"}


@contextmanager
def _errors(as_json: bool, resumable: bool = False):
    """API errors -> their code and message on stderr (and as JSON on stdout with --json), exit 1; Ctrl-C ->
    one line (how to resume, for a `resumable` command), exit 130. Progress bars opened inside are closed first."""
    from pydantic import ValidationError

    from faceid_client.archive import ArchiveError

    try:
        yield
    except FaceIDError as exc:
        hint = COLLECTION_HINTS.get(exc.code) or {
            401: " (give a valid key: --api-key KEY or FACEID_API_KEY)",
            403: " (this key's scopes do not allow it: use a key with more scopes, --api-key / FACEID_API_KEY)",
            0: " (is the server running? --url / FACEID_URL)"}.get(exc.status, "")
        _fail(exc.code, exc.message + hint, as_json, exc.status)
    except (ArchiveError, OSError) as exc:  # an unusable archive; a file that cannot be read or written
        _fail("invalid_archive" if isinstance(exc, ArchiveError) else "file_error", str(exc), as_json)
    except ValidationError as exc:  # an answer this client cannot read: one line, not pydantic's listing
        _fail("unexpected_answer", f"the server's answer is not what this client expects (another version?): "
                                   f"{exc.error_count()} problems, first: {exc.errors()[0]['msg']}", as_json)
    except json.JSONDecodeError:  # a 200 that is not JSON: a proxy's page, another service at --url
        _fail("unexpected_answer", "the server's answer is not JSON (is --url / FACEID_URL a faceid server?)",
              as_json)
    except KeyboardInterrupt:
        _echo("interrupted; rerun the same command to resume" if resumable else "interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


class _Bar:
    """A tqdm progress bar on stderr (on a terminal, unless --progress/--no-progress says otherwise) that
    appears once its total is known (`start`)."""

    def __init__(self, enabled: bool | None, unit: str, desc: str, total: int | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.unit, self.desc, self.bar = unit, desc, None
        if total is not None:
            self.start(total)

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=self.unit, desc=self.desc, file=sys.stderr, dynamic_ncols=True,
                        disable=not self.enabled)

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


# --- serve ---------------------------------------------------------------------------------------------
SERVER_MISSING = ("this command runs the faceid server, which is not installed here: install faceid (the server) "
                  "for this, e.g. `pip install ./client .` in a checkout of the repository")


def _server_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` of the server package, after checking that the child will find it (installed, or
    in the current directory as `python -m` sees it), without importing it: the client never imports the server."""
    where = [os.getcwd(), *sys.path]
    if any(importlib.machinery.PathFinder.find_spec(pkg, where) is None for pkg in ("app", "model")):
        _echo(f"error: server_not_installed: {SERVER_MISSING}", err=True)
        raise typer.Exit(EXIT_ERROR)
    return [sys.executable, "-m", module, *args]


@app.command()
def serve(host: Annotated[str, typer.Option(envvar="FACEID_HOST", help="bind address")] = "127.0.0.1",
          port: Annotated[int, typer.Option(envvar="FACEID_PORT", min=1, max=65535)] = 8000,
          workers: Annotated[int, typer.Option(envvar="FACEID_WORKERS", min=1)] = 1,
          fetch_weights: Annotated[bool, typer.Option("--fetch-weights/--no-fetch-weights",
                                                      help="fetch or convert the weights first")] = True) -> None:
    """Run the REST API (what `make run` and the container run: python -m app.serve). Needs the server package.

    Settings come from FACEID_* variables (app/core/config.py); FACEID_UVICORN_ARGS adds uvicorn options.

    \b
    Example: faceid serve --port 8000
    """
    argv = _server_argv("app.serve", "--host", host, "--port", str(port), "--workers", str(workers),
                        "--fetch-weights" if fetch_weights else "--no-fetch-weights")
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # the server (then uvicorn) becomes this process: signals reach it directly


# --- status --------------------------------------------------------------------------------------------
@app.command()
def status(url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 30.0, as_json: Json = False) -> None:
    """Show the server's model and gallery size (GET /ready)."""
    with _errors(as_json), _client(url, api_key, timeout) as c:
        r = c.ready()
        _emit(r.model_dump(mode="json"), as_json,
              f"{url}: {r.status}, model {r.model_name} ({r.model_version}) on {r.device}, threshold "
              f"{r.threshold:.3f}; {r.identities} identities, {r.faces} faces")


# --- enroll --------------------------------------------------------------------------------------------
LabelOpt = Annotated[Optional[str], typer.Option("--label", help="enroll every image under DIR (a flat folder) as "
                                                 "this one person, instead of DIR/<label>/ folders")]
Underscores = Annotated[Optional[bool], typer.Option("--underscores-as-spaces/--keep-underscores",
                                                     help="folder George_W_Bush is label 'George W Bush' "
                                                          "(face_recognition's and LFW's convention), or kept as it "
                                                          "is  [default: kept, with a note]")]
State = Annotated[Optional[Path], typer.Option("--state", dir_okay=False, help="file of the photos the server "
                                               "refused (default: .faceid-enroll in DIR)")]
RetryRefused = Annotated[bool, typer.Option("--retry-refused", help="send again the photos refused by an earlier "
                                            "run (they are skipped otherwise)")]
# what to do about a refusal, in the CLI's words (the API's message names its own parameters)
REFUSAL_HINTS = {"ambiguous_face": "several faces: `faceid identify PHOTO` numbers them, then "
                                   "`faceid enroll-face PHOTO --label LABEL --face N` enrolls one",
                 "face_not_usable": "no face large or clear enough to enroll",
                 "no_face": "no face found"}


def _cli_words(message: str) -> str:
    """An enroll refusal in the CLI's words: each request carries one photo (the API's "image 0" is the file
    named on the line), and the face is picked with enroll-face (REFUSAL_HINTS), not the API's parameters."""
    return message.replace("image 0", "the photo").replace(", or say which with face_index or face_box", "")


def _enroll_plan(folder: Path, label: str | None, underscores: bool | None, as_json: bool, known: bool = False):
    """The items to enroll from `folder`, after saying on stderr what was made of its layout: a flat folder is an
    error (unless `known`: face_recognition's known/<Name>.jpg, the file name is the label); images left out
    and labels whose underscores were or could be spaces are noted."""
    from faceid_client.bulk import EnrollItem, file_sha256, folder_label, loose_images, scan_folder
    from faceid_client.labels import normalize_label

    if label is not None:
        try:
            return scan_folder(folder, label=normalize_label(label))  # as the server stores it: resume compares
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--label") from None
    items, loose = scan_folder(folder, underscores_as_spaces=bool(underscores)), loose_images(folder)
    if known:
        items += [EnrollItem(f, folder_label(f.stem, bool(underscores)), file_sha256(f)) for f in loose]
        loose = []
    if not items:
        _fail("no_label_folders", (f"{folder} has {len(loose)} images directly in it but no <label> folders: "
                                   f"enroll expects {folder}/<label>/*.jpg, one folder per person; to enroll these "
                                   f"as one person: faceid enroll {folder} --label NAME") if loose else
              f"no images in {folder}/<label>/ folders (enroll expects DIR/<label>/*.jpg, one folder per person)",
              as_json, exit_code=EXIT_USAGE)
    if loose:
        _echo(f"note: {len(loose)} images directly in {folder} were left out: only {folder}/<label>/ folders "
                   "are enrolled (--label NAME enrolls a flat folder as one person)", err=True)
    parts = [i.path.relative_to(folder).parts for i in items]  # <label>/.../<file>, or <Name>.jpg (known)
    renamed = {src: i.label for i, p in zip(items, parts) if "_" in (src := p[0] if len(p) > 1 else i.path.stem)}
    if renamed and underscores:
        shown = sorted(renamed.items())
        _echo("labels: " + ", ".join(f"{a!r} -> {b!r}" for a, b in shown[:5])
                   + (f" and {len(shown) - 5} more" if len(shown) > 5 else "") + " (--underscores-as-spaces)",
                   err=True)
    elif renamed and underscores is None:  # not asked either way: say that it could be done
        name = min(renamed)
        _echo(f"note: {len(renamed)} labels keep their underscores (e.g. {name!r}); --underscores-as-spaces "
                   f"would enroll {' '.join(name.replace('_', ' ').split())!r}", err=True)
    return items


def _enroll_run(c, folder: Path, items, state: Path | None, retry_refused: bool, concurrency: int,
                max_files: int | None, progress: bool | None):
    """Enroll `items` with a progress bar, remembering refusals in `state`; (summary for --json, human lines)."""
    from faceid_client.bulk import RefusalLog, enroll_items

    refusals = RefusalLog(state or folder / ".faceid-enroll", c.url, c.collection_name)
    with _Bar(progress, "img", "enroll") as bar:
        report = enroll_items(c, items, concurrency, max_files, refusals, retry_refused, on_plan=bar.start,
                              on_done=lambda _item, _outcome: bar.update())
    if refusals.error:
        _echo(f"warning: {refusals.error}: refusals are not remembered (--state FILE to keep them)", err=True)
    summary = {"enrolled": len(report.enrolled), "skipped": len(report.skipped), "refused": len(report.refused),
               "refused_before": len(report.refused_before), "not_attempted": len(report.not_attempted),
               "refusals": [{"path": str(i.path), "label": i.label, "code": code, "message": msg}
                            for i, code, msg in report.refused],
               "refusals_before": [{"path": str(i.path), "label": i.label, "code": code, "message": msg}
                                   for i, code, msg in report.refused_before],
               "skips": [{"path": str(i.path), "label": i.label, "why": why} for i, why in report.skipped],
               "enrollments": [{"path": str(i.path), "label": i.label, "face_id": fid} for i, fid in report.enrolled],
               "possible_duplicates": [{"label": a, "other_label": b, "score": sc}
                                       for (a, b), sc in sorted(report.possible_duplicates.items())],
               "state": str(refusals.path)}
    lines = [f"enrolled {summary['enrolled']}, skipped {summary['skipped']} (already enrolled), "
             f"refused {summary['refused']}"
             + (f", skipped {len(report.refused_before)} refused before (--retry-refused to try them again)"
                if report.refused_before else "")
             + (f", not attempted {summary['not_attempted']} (--max-files)" if report.not_attempted else "")]
    for code, refused in report.refused_by_code().items():
        lines.append(f"  {code}: {len(refused)}" + (f" ({REFUSAL_HINTS[code]})" if code in REFUSAL_HINTS else ""))
        lines.extend(f"    {item.path}: {_cli_words(msg)}" for item, msg in refused)
    if report.possible_duplicates:
        lines.append("possible duplicates (the same person under two labels? see `faceid duplicates`):")
        lines.extend(f"  {a!r} looks like {b!r} (score {sc:.3f})"
                     for (a, b), sc in sorted(report.possible_duplicates.items()))
    return report, summary, lines


@app.command()
def enroll(folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, metavar="DIR", help="DIR/<label>/<images>")],
           label: LabelOpt = None, underscores_as_spaces: Underscores = None, state: State = None,
           retry_refused: RetryRefused = False,
           collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
           concurrency: Concurrency = 4,
           max_files: Annotated[Optional[int], typer.Option(min=0, help="upload at most N files, then stop "
                                                            "(a later run resumes)")] = None,
           progress: Progress = None, as_json: Json = False) -> None:
    """Enroll every image under DIR/<label>/ as that label (or every image of DIR as --label NAME); files already
    enrolled are skipped.

    Resumable: each file's SHA-256 is looked up first, so a rerun uploads only what is missing; photos the server
    refused are remembered (DIR/.faceid-enroll) and not sent again unless --retry-refused (exit 3 only for new
    refusals). Folder names are labels as they are, underscores included, unless --underscores-as-spaces.

    \b
    Example: faceid enroll photos/ --concurrency 4
    Example: faceid enroll lfw/ --underscores-as-spaces   # lfw/George_W_Bush/ is 'George W Bush'
    Example: faceid enroll ada/ --label "Ada Lovelace"    # a flat folder of one person
    """
    with _errors(as_json, resumable=True), _client(url, api_key, timeout, collection) as c:
        items = _enroll_plan(folder, label, underscores_as_spaces, as_json)
        report, summary, lines = _enroll_run(c, folder, items, state, retry_refused, concurrency, max_files, progress)
    _emit(summary, as_json, "\n".join(lines))
    if report.refused:
        raise typer.Exit(EXIT_PARTIAL)


@app.command("enroll-face")
def enroll_face(photo: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                label: Annotated[str, typer.Option("--label", help="who it is (created if new)")],
                face: Annotated[int, typer.Option("--face", min=1, help="the face's number as `faceid identify "
                                                  "PHOTO` prints it (from 1; the API's face_index is N-1)")],
                collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None,
                timeout: Timeout = 120.0, as_json: Json = False) -> None:
    """Enroll one face of a photo with several faces: `faceid identify PHOTO` numbers them (face 1, face 2, ...).

    \b
    Example: faceid identify group.jpg            # group.jpg: face 1: unknown, face 2: Ada Lovelace (0.810)
    Example: faceid enroll-face group.jpg --label "Charles Babbage" --face 1
    """
    with _errors(as_json), _client(url, api_key, timeout, collection) as c:
        try:
            r = c.enroll(label, [photo.read_bytes()], face_index=face - 1)
        except FaceIDError as exc:
            if exc.code != "face_index_out_of_range":
                raise FaceIDError(exc.status, exc.code, exc.message.replace("image 0", str(photo)),
                                  exc.detail) from None
            raise FaceIDError(exc.status, exc.code, f"{photo} has fewer than {face} faces (`faceid identify {photo}` "
                                                    "numbers them)", exc.detail) from None
    _emit(r.model_dump(mode="json"), as_json,
          f"enrolled face {face} of {photo} as {r.identity.label!r} (identity {r.identity.id}, "
          f"{r.identity.face_count} faces)")


# --- identify ------------------------------------------------------------------------------------------
CSV_FIELDS = ["path", "face", "status", "label", "identity_id", "score", "threshold", "x1", "y1", "x2", "y2",
              "detection_score", "error_code", "error_message"]


def _identify_rows(path: Path, result) -> list[dict]:
    """CSV rows for one image: one per face; one `no_face` row for an image without faces; one `error` row."""
    if isinstance(result, FaceIDError):
        return [{"path": str(path), "status": "error", "error_code": result.code, "error_message": result.message}]
    if not result.faces:
        return [{"path": str(path), "status": "no_face", "threshold": result.threshold}]
    return [{"path": str(path), "face": n, "status": f.status, "label": f.identity.label if f.identity else "",
             "identity_id": f.identity.id if f.identity else "",
             "score": "" if f.score is None else round(f.score, 6),
             "threshold": round(result.threshold if f.threshold is None else f.threshold, 6),
             **dict(zip(("x1", "y1", "x2", "y2"), (round(x, 1) for x in f.box))),
             "detection_score": round(f.detection_score, 6)} for n, f in enumerate(result.faces, 1)]


def _identify_human(path: Path, result) -> str:
    if isinstance(result, FaceIDError):
        return f"{path}: error {result.code}: {result.message}"
    if not result.faces:
        return f"{path}: no face"
    parts = [(f"{f.identity.label} ({f.score:.3f})" if f.identity else
              "unknown" + (f" (best {f.matches[0].label} {f.score:.3f})" if f.matches else ""))
             for f in result.faces]
    return f"{path}: " + (parts[0] if len(parts) == 1 else ", ".join(f"face {i}: {p}" for i, p in enumerate(parts, 1)))


def _face_recognition_rows(path: Path, result) -> list[list[str]]:
    """face_recognition's output for one image: `path,label` per face, `unknown_person`, `no_persons_found`."""
    if not result.faces:
        return [[str(path), "no_persons_found"]]
    return [[_printable(str(path)), _printable(f.identity.label) if f.identity else "unknown_person"]
            for f in result.faces]


@app.command()
def identify(paths: Annotated[list[Path], typer.Argument(exists=True, help="images, or folders of images")],
             known: Annotated[Optional[Path], typer.Option("--known", exists=True, file_okay=False, help="enroll this "
                                                           "folder first (as `faceid enroll`, resumable; "
                                                           "known/<Name>.jpg files too), then print path,label "
                                                           "lines as face_recognition does")] = None,
             underscores_as_spaces: Underscores = None, state: State = None, retry_refused: RetryRefused = False,
             csv_file: Annotated[Optional[Path], typer.Option("--csv", dir_okay=False,
                                                              help="write one row per face to this CSV file")] = None,
             top_k: Annotated[Optional[int], typer.Option(min=1, max=100)] = None,
             threshold: Annotated[Optional[float], typer.Option(min=-1.0, max=1.0,
                                                                help="cosine threshold (default: the server's)")] = None,
             collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
             concurrency: Concurrency = 4, progress: Progress = None, as_json: Json = False) -> None:
    """Identify every face in images (folders are searched recursively). Faces are numbered from 1 (face 1,
    face 2, ...: the numbers `faceid enroll-face --face` takes; the CSV's `face` column), as in the web UI.

    With --known DIR (face_recognition's `face_recognition known/ unknown/` in one step): DIR is enrolled first,
    as `faceid enroll` does (DIR/<label>/ folders, and DIR/<Name>.jpg files named after the person; resumable),
    its summary on stderr; then one `path,label` line per face, `path,unknown_person` for a face not recognised
    and `path,no_persons_found` for an image without one.

    \b
    Example: faceid identify photos/ --csv results.csv
    Example: faceid --collection doors identify camera/   # the collection `doors`, not `default`
    Example: faceid identify --known known/ unknown/
    """
    from faceid_client.bulk import identify_files, image_files

    if csv_file is not None and as_json:
        raise typer.BadParameter("give --csv or --json, not both")
    files = image_files(paths)
    results: dict[Path, object] = {}
    known_refused = 0  # --known photos the server refused this run: exit 3 as for `faceid enroll`
    with _errors(as_json, resumable=known is not None), _client(url, api_key, timeout, collection) as c:
        if known is not None:
            items = _enroll_plan(known, None, underscores_as_spaces, as_json, known=True)
            report, _, lines = _enroll_run(c, known, items, state, retry_refused, concurrency, None, progress)
            known_refused = len(report.refused)
            _echo(f"{known}: " + "\n".join(lines), err=True)
        with _Bar(progress, "img", "identify", len(files)) as bar:
            for path, result in identify_files(c, files, concurrency, top_k, threshold):
                results[path] = result
                bar.update(1)
    ordered = [(p, results[p]) for p in files]  # input order, whatever order the answers came in
    errors = sum(isinstance(r, FaceIDError) for _, r in ordered)
    if csv_file is not None:
        tmp = csv_file.with_name(f".{csv_file.name}.tmp")
        with _errors(as_json), open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for path, result in ordered:
                w.writerows(_identify_rows(path, result))
        os.replace(tmp, csv_file)  # whole or not at all
        n_faces = sum(len(r.faces) for _, r in ordered if not isinstance(r, FaceIDError))
        _echo(f"{len(files)} images, {n_faces} faces, {errors} errors -> {csv_file}")
    elif as_json:
        _emit([{"path": str(p), "error": {"status": r.status, "code": r.code, "message": r.message}}
               if isinstance(r, FaceIDError) else {"path": str(p), **r.model_dump(mode="json")}
               for p, r in ordered], True)
    elif known is not None:
        out = csv.writer(sys.stdout, lineterminator="\n")
        for path, result in ordered:
            if isinstance(result, FaceIDError):
                _echo(_identify_human(path, result), err=True)
            else:
                out.writerows(_face_recognition_rows(path, result))
    else:
        for path, result in ordered:
            _echo(_identify_human(path, result))
    if errors or known_refused:
        raise typer.Exit(EXIT_PARTIAL)


# --- scan: unknown people ------------------------------------------------------------------------------
def _person_line(c: dict) -> str:
    hint = (f", looks like {c['suggestion']['identity']['label']!r} ({c['suggestion']['score']:.3f})"
            if c.get("suggestion") else "")
    return f"  person #{c['id']}: {c['size']} faces, last seen {str(c['last_seen'])[:19]}{hint}"


@app.command()
def scan(paths: Annotated[list[Path], typer.Argument(exists=True, help="images, or folders of images")],
         state: Annotated[Optional[Path], typer.Option(dir_okay=False, help="file of the SHA-256 of the images "
                                                       "scanned (default: .faceid-scan in the first folder)")] = None,
         top: Annotated[int, typer.Option(min=0, max=500, help="largest unnamed people to print")] = 10,
         collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
         concurrency: Concurrency = 4, progress: Progress = None, as_json: Json = False) -> None:
    """Identify every photo, keeping the unknown faces on the server (remember_unknown, a write key), then print
    the largest unnamed people: name them in the web UI's "Unknown people" page or with POST /unknown/{id}/enroll.

    Resumable: the photos scanned are recorded in the state file, so a rerun sends only the new ones.

    \b
    Example: faceid scan photos/ --top 20
    """
    from faceid_client.bulk import image_files, scan_files

    files = image_files(paths)
    if state is None:
        first = next((p for p in paths if p.is_dir()), None)
        state = (first / ".faceid-scan") if first is not None else Path(".faceid-scan")
    with _errors(as_json, resumable=True), _client(url, api_key, timeout, collection) as c, \
            _Bar(progress, "img", "scan") as bar:
        report = scan_files(c, files, state, concurrency, on_plan=bar.start, on_done=lambda _p, _r: bar.update())
        refined = c.refine_unknown() if report.scanned else None
        people = c.unknown_people(limit=top) if top else {"items": [], "total": 0}
    summary = {"scanned": len(report.scanned), "skipped": len(report.skipped), "errors": len(report.errors),
               "unknown_faces": report.unknown_faces, "matched_faces": report.matched_faces,
               "refined": refined, "state": str(state), "unnamed_people": people["total"],
               "largest": people["items"],
               "refusals": [{"path": str(p), "code": e.code, "message": e.message} for p, e in report.errors]}
    lines = [f"scanned {summary['scanned']} images ({summary['skipped']} already scanned, {summary['errors']} errors):"
             f" {report.matched_faces} faces recognised, {report.unknown_faces} unknown faces kept",
             f"{people['total']} unnamed people" + (f"; the largest {len(people['items'])}:" if people["items"] else "")]
    lines += [_person_line(p) for p in people["items"]]
    lines += [f"  {p}: {e.code}: {e.message}" for p, e in report.errors]
    if people["items"]:
        lines.append("name them in the web UI (Unknown people) or: curl -H 'content-type: application/json' "
                     f"-d '{{\"label\": \"NAME\"}}' {c.url}{c.gallery_path('/unknown/ID/enroll')}")
    _emit(summary, as_json, "\n".join(lines))
    if report.errors:
        raise typer.Exit(EXIT_PARTIAL)


# --- verify --------------------------------------------------------------------------------------------
@app.command()
def verify(image: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
           other: Annotated[Optional[Path], typer.Argument(exists=True, dir_okay=False,
                                                           help="second image (or give --identity)")] = None,
           identity: Annotated[Optional[str], typer.Option("--identity", help="compare with this enrolled "
                                                           "identity: its id, or its name")] = None,
           threshold: Annotated[Optional[float], typer.Option(min=-1.0, max=1.0)] = None,
           collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
           as_json: Json = False) -> None:
    """Are two images (or an image and an enrolled identity) the same person? Exit 0 if yes, 3 if not.

    --identity takes an id or a name: the exact label, else the one label equal to it ignoring case and
    underscores (several: an error listing their ids).

    \b
    Example: faceid verify a.jpg b.jpg
    Example: faceid verify a.jpg --identity "Ada Lovelace"
    """
    if (other is None) == (identity is None):
        raise typer.BadParameter("give a second image or --identity ID (one of them)")
    with _errors(as_json), _client(url, api_key, timeout, collection) as c:
        identity_id = _identity_id(c, identity, as_json) if identity is not None else None
        r = c.verify(image.read_bytes(), other.read_bytes() if other else None, identity_id, threshold)
    _emit(r.model_dump(mode="json"), as_json,
          f"{'same person' if r.same_person else 'different people'}: score {r.score:.3f} "
          f"{'>=' if r.same_person else '<'} threshold {r.threshold:.3f}")
    if not r.same_person:
        raise typer.Exit(EXIT_PARTIAL)


def _folded(label: str) -> str:
    return "".join(label.replace("_", " ").casefold().split())


def _identity_id(c, ref: str, as_json: bool) -> int:
    """An identity given by id or by name (the exact label; else the only one equal ignoring case, spaces and
    underscores)."""
    from faceid_client.labels import normalize_label

    if ref.strip().isdecimal():  # not isdigit: '²' is a digit that int() refuses
        return int(ref)
    try:
        name = normalize_label(ref)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--identity") from None
    exact = c.find_identity(name)
    if exact is not None:
        return exact.id
    alike = [i for i in c.identities() if _folded(i.label) == _folded(name)]
    if len(alike) == 1:
        return alike[0].id
    if not alike:
        _fail("unknown_identity", f"no identity is named {name!r} (`faceid duplicates` and the web UI's Gallery "
                                  "list them; or give its id)", as_json, 404)
    _fail("ambiguous_identity", f"{name!r} could be any of " + ", ".join(f"{i.id} {i.label!r}" for i in alike)
          + f": give the id, e.g. --identity {alike[0].id}", as_json, exit_code=EXIT_USAGE)


# --- duplicates ----------------------------------------------------------------------------------------
@app.command()
def duplicates(collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None,
               timeout: Timeout = 120.0, as_json: Json = False,
               merge: Annotated[bool, typer.Option("--merge", help="merge every listed pair: the identity with fewer "
                                                   "faces moves into the other (asks first unless --yes)")] = False,
               yes: Annotated[bool, typer.Option("--yes", help="with --merge: do not ask")] = False) -> None:
    """List identities that are probably one person under two labels (strongest first).

    Merge one pair with `faceid merge INTO FROM`; say two are different people with
    `faceid not-duplicate A B` (no longer suggested).

    \b
    Example: faceid duplicates
    """
    if merge and not yes and not sys.stdin.isatty():
        raise typer.BadParameter("--merge without a terminal to confirm on needs --yes")
    with _errors(as_json), _client(url, api_key, timeout, collection) as c:
        pairs = list(c.duplicates())
        if merge and pairs and not yes and not typer.confirm(f"merge {len(pairs)} pairs?", err=True):
            raise typer.Exit(EXIT_PARTIAL)
        merged = _merge_pairs(c, pairs) if merge else []
    rows = [{"a": p.a.model_dump(mode="json"), "b": p.b.model_dump(mode="json"), "score": p.score} for p in pairs]
    human = "\n".join([f"{p.score:.3f}  {p.a.id} {p.a.label!r} ({p.a.face_count} faces)  ~  "
                       f"{p.b.id} {p.b.label!r} ({p.b.face_count} faces)" for p in pairs]
                      or ["no suspected duplicates"])
    if merge:
        human += f"\nmerged {len(merged)} pairs" + "".join(f"\n  {f} into {i}" for i, f in merged)
    _emit({"pairs": rows, "merged": merged}, as_json, human)


def _merge_pairs(c, pairs) -> list[list[int]]:
    """Merge every listed pair, the identity with more faces keeping its label (as the UI does). One person under
    three labels gives three pairs: an identity merged away is followed to where its faces went."""
    into_of: dict[int, int] = {}
    count = {i.id: i.face_count for p in pairs for i in (p.a, p.b)}

    def root(i: int) -> int:
        while i in into_of:
            i = into_of[i]
        return i

    done = []
    for p in pairs:
        a, b = root(p.a.id), root(p.b.id)
        if a == b:
            continue
        into, from_ = (a, b) if count[a] >= count[b] else (b, a)
        r = c.merge(into, from_)
        into_of[from_], count[into] = into, r.face_count
        done.append([into, from_])
    return done


@app.command("merge")
def merge_(into: Annotated[int, typer.Argument(min=1, help="identity that keeps its label")],
           from_: Annotated[int, typer.Argument(min=1, metavar="FROM", help="identity whose faces move (deleted)")],
           collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
           as_json: Json = False) -> None:
    """Merge identity FROM into INTO: its faces move, FROM is deleted.

    \b
    Example: faceid merge 3 9
    """
    with _errors(as_json), _client(url, api_key, timeout, collection) as c:
        r = c.merge(into, from_)
    _emit(r.model_dump(mode="json"), as_json, f"merged into {r.id} {r.label!r}: {r.face_count} faces")


@app.command("not-duplicate")
def not_duplicate(a: Annotated[int, typer.Argument(min=1)], b: Annotated[int, typer.Argument(min=1)],
                  collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None,
                  timeout: Timeout = 120.0, as_json: Json = False) -> None:
    """Say that identities A and B are different people: they are no longer suggested as duplicates.

    \b
    Example: faceid not-duplicate 3 9
    """
    with _errors(as_json), _client(url, api_key, timeout, collection) as c:
        c.not_duplicate(a, b)
    _emit({"a": a, "b": b, "distinct": True}, as_json, f"{a} and {b}: different people (no longer suggested)")


# --- export / import -----------------------------------------------------------------------------------
@app.command("export")
def export_(file: Annotated[Path, typer.Argument(dir_okay=False, help="archive to write (.zip)")],
            collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
            concurrency: Concurrency = 4, progress: Progress = None, as_json: Json = False) -> None:
    """Write the gallery (identities, labels, stored aligned crops and their metadata) to one archive.

    \b
    Example: faceid export gallery.zip
    Example: faceid --collection doors export doors.zip
    """
    from faceid_client.archive import export_gallery

    if not file.parent.is_dir():  # before a long export, not after it
        raise typer.BadParameter(f"directory {file.parent} does not exist", param_hint="FILE")
    with _errors(as_json), _client(url, api_key, timeout, collection) as c:
        with _Bar(progress, "face", "export") as bar:
            r = export_gallery(c, file, concurrency, on_face=bar.update, on_plan=bar.start)
    _emit({"path": str(r.path), "identities": r.identities, "faces": r.faces, "skipped_faces": r.skipped_faces},
          as_json, f"exported {r.identities} identities, {r.faces} faces to {r.path}")


@app.command("import")
def import_(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="archive from faceid export")],
            collection: Collection = None, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 120.0,
            concurrency: Concurrency = 4,
            batch_size: Annotated[int, typer.Option(min=1, max=100, help="faces per request")] = 10,
            progress: Progress = None, as_json: Json = False) -> None:
    """Add an archive's identities and faces to the gallery (empty or not), embedded by the serving model.

    Idempotent: faces already there are skipped; afterwards every archived face is checked to be present.

    \b
    Example: faceid import gallery.zip --url http://new-host:8000
    """
    from faceid_client.archive import import_gallery

    with _errors(as_json, resumable=True), _client(url, api_key, timeout, collection) as c, \
            _Bar(progress, "face", "import") as bar:
        r = import_gallery(c, file, batch_size, concurrency, on_plan=bar.start, on_faces=bar.update)
    _emit({"identities": r.identities, "identities_created": r.identities_created, "faces": r.faces,
           "faces_added": r.faces_added, "faces_present": r.faces_present, "verified": r.verified,
           "problems": r.problems}, as_json,
          f"imported {r.identities} identities ({r.identities_created} new), {r.faces} faces: {r.faces_added} added, "
          f"{r.faces_present} already there; " + ("verified: every archived face is present" if r.verified
                                                  else "NOT verified: " + "; ".join(r.problems)))
    if not r.verified:
        raise typer.Exit(EXIT_ERROR)


# --- weights, keys -------------------------------------------------------------------------------------
@weights_app.command("fetch")
def weights_fetch(names: Annotated[Optional[list[str]], typer.Argument(help="weight sets (default: casia-webface mtcnn)")] = None,
                  source: Annotated[str, typer.Option(help="auto | download | convert")] = "auto") -> None:
    """Fetch (or convert offline) weight sets into $TORCH_HOME/checkpoints (python -m model.weights fetch).
    Needs the server package."""
    argv = _server_argv("model.weights", "fetch", *(names or []), "--source", source)
    raise typer.Exit(subprocess.run(argv).returncode)


@weights_app.command("list")
def weights_list() -> None:
    """Show the registry of weight sets (python -m model.weights list). Needs the server package."""
    raise typer.Exit(subprocess.run(_server_argv("model.weights", "list")).returncode)


@keys_app.command("new")
def keys_new(name: Annotated[str, typer.Option(help="who holds the key (logged, never the key)")],
             scopes: Annotated[str, typer.Option(help="comma-separated: identify, read, write, admin")] = "read",
             collections: Annotated[Optional[str], typer.Option(
                 help="comma-separated: bind the key to these collections (refused on the others and on "
                      "service-wide routes)  [default: every collection]", show_default=False)] = None,
             as_json: Json = False) -> None:
    """Make a random API key: print it once, and its settings entry (its SHA-256) for FACEID_API_KEYS.

    \b
    Example: faceid keys new --name door-1 --scopes identify --collections doors,lobby
    """
    from faceid_client.keys import new_key

    bound = [c.strip() for c in (collections or "").split(",") if c.strip()]
    if collections is not None and not bound:
        raise typer.BadParameter("give at least one collection name", param_hint="--collections")
    try:
        bound = [check_collection_name(c) for c in bound]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--collections") from None
    try:
        key, entry = new_key(name, [s for s in scopes.split(",") if s], bound)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scopes") from None
    _emit({"key": key, "entry": entry}, as_json,
          f"key (shown once, give it to the client): {key}\n"
          f"settings entry (add to the FACEID_API_KEYS JSON list):\n{json.dumps(entry)}")


# --- collections ---------------------------------------------------------------------------------------
CollectionName = Annotated[str, typer.Argument(metavar="NAME", callback=_collection_name,
                                               help="a-z, 0-9, _ and -, at most 63 characters")]
TargetFpir = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="share of searches for people never "
                                                     "enrolled that may match someone (sets the threshold)")]
MatchThreshold = Annotated[Optional[float], typer.Option(min=-1.0, max=1.0, help="cosine threshold (instead of "
                                                         "--target-fpir's)")]
RememberUnknown = Annotated[Optional[bool], typer.Option("--remember-unknown/--no-remember-unknown",
                                                         help="keep the faces /identify answers unknown")]
UnknownRetention = Annotated[Optional[float], typer.Option("--unknown-retention-s", min=0.0,
                                                           help="delete kept unknown faces this long after")]
ProbeRetention = Annotated[Optional[float], typer.Option("--probe-retention-s", min=0.0,
                                                         help="keep each /identify answer's faces this long")]
COLLECTION_SETTINGS = ("target_fpir", "match_threshold", "remember_unknown", "unknown_retention_s",
                       "probe_retention_s")


def _given(**settings) -> dict:
    return {k: v for k, v in settings.items() if v is not None}


def _collection_line(col) -> str:
    own = ", ".join(f"{k} {json.dumps(v)}" for k, v in col.settings.items() if v is not None) or "the service's"
    counts = col.counts or {}
    made = f", created {col.created_at:%Y-%m-%d %H:%M}" if col.created_at else ""
    return (f"{col.name}: {counts.get('identities', '?')} identities, {counts.get('faces', '?')} faces{made}; "
            f"settings: {own}")


@collections_app.command("list")
def collections_list(url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 30.0,
                     as_json: Json = False) -> None:
    """List the collections (`default` included), their counts and own settings.

    \b
    Example: faceid collections list
    """
    with _errors(as_json), _client(url, api_key, timeout) as c:
        cols = c.collections()
    _emit({"collections": [col.model_dump(mode="json") for col in cols]}, as_json,
          "\n".join(_collection_line(col) for col in cols) or "no collections")


@collections_app.command("create")
def collections_create(name: CollectionName, target_fpir: TargetFpir = None, match_threshold: MatchThreshold = None,
                       remember_unknown: RememberUnknown = None, unknown_retention_s: UnknownRetention = None,
                       probe_retention_s: ProbeRetention = None, url: Url = DEFAULT_URL, api_key: ApiKey = None,
                       timeout: Timeout = 30.0, as_json: Json = False) -> None:
    """Make a collection: an empty gallery of its own. Settings not given are the service's.

    \b
    Example: faceid collections create doors --target-fpir 0.001 --remember-unknown
    Example: faceid --collection doors enroll staff/
    """
    settings = _given(target_fpir=target_fpir, match_threshold=match_threshold, remember_unknown=remember_unknown,
                      unknown_retention_s=unknown_retention_s, probe_retention_s=probe_retention_s)
    with _errors(as_json), _client(url, api_key, timeout) as c:
        col = c.create_collection(name, **settings)
    _emit(col.model_dump(mode="json"), as_json, "created " + _collection_line(col))


@collections_app.command("show")
def collections_show(name: CollectionName, url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 30.0,
                     as_json: Json = False) -> None:
    """Show a collection's counts and settings.

    \b
    Example: faceid collections show doors
    """
    with _errors(as_json), _client(url, api_key, timeout) as c:
        col = c.collection(name)
    _emit(col.model_dump(mode="json"), as_json, _collection_line(col))


@collections_app.command("update")
def collections_update(name: CollectionName, target_fpir: TargetFpir = None, match_threshold: MatchThreshold = None,
                       remember_unknown: RememberUnknown = None, unknown_retention_s: UnknownRetention = None,
                       probe_retention_s: ProbeRetention = None,
                       unset: Annotated[Optional[list[str]], typer.Option(
                           "--unset", metavar="SETTING", help="back to the service's setting (repeatable): "
                           + ", ".join(COLLECTION_SETTINGS))] = None,
                       url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 30.0,
                       as_json: Json = False) -> None:
    """Change a collection's settings: only those given change.

    \b
    Example: faceid collections update doors --match-threshold 0.55 --unset target_fpir
    """
    settings = _given(target_fpir=target_fpir, match_threshold=match_threshold, remember_unknown=remember_unknown,
                      unknown_retention_s=unknown_retention_s, probe_retention_s=probe_retention_s)
    for setting in unset or []:
        key = setting.replace("-", "_")
        if key not in COLLECTION_SETTINGS:
            raise typer.BadParameter(f"{setting!r} is not among {', '.join(COLLECTION_SETTINGS)}", param_hint="--unset")
        if key in settings:
            raise typer.BadParameter(f"{key} is both set and unset", param_hint="--unset")
        settings[key] = None
    if not settings:
        raise typer.BadParameter("nothing to change: give a setting, or --unset SETTING")
    with _errors(as_json), _client(url, api_key, timeout) as c:
        col = c.update_collection(name, **settings)
    _emit(col.model_dump(mode="json"), as_json, "updated " + _collection_line(col))


@collections_app.command("delete")
def collections_delete(name: CollectionName,
                       yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
                       url: Url = DEFAULT_URL, api_key: ApiKey = None, timeout: Timeout = 30.0,
                       as_json: Json = False) -> None:
    """Delete a collection with its identities, faces and kept unknown faces (asks first unless --yes).
    `default` cannot be deleted.

    \b
    Example: faceid collections delete doors --yes
    """
    if not yes and not sys.stdin.isatty():
        raise typer.BadParameter("without a terminal to confirm on, delete needs --yes")
    with _errors(as_json), _client(url, api_key, timeout) as c:
        if not yes:
            col = c.collection(name)  # 404 before asking about a collection that is not there
            counts = col.counts or {}
            if not typer.confirm(f"delete collection {name!r}: {counts.get('identities', '?')} identities, "
                                 f"{counts.get('faces', '?')} faces?", err=True):
                _echo("not deleted", err=True)
                raise typer.Exit(EXIT_PARTIAL)
        c.delete_collection(name)
    _emit({"deleted": name}, as_json, f"deleted collection {name!r}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
