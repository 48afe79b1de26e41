"""The `faceid` command's argument handling, exit codes and offline commands (Typer's CliRunner, no faceid server; a
hostile stub server on loopback for what the CLI prints of an answer)."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile

import pytest
from typer.testing import CliRunner

from faceid_client.cli import app
from faceid_client.client import FaceIDClient, FaceIDError
from faceid_client.keys import hash_key

# Nothing listens on port 9 of loopback (discard); one attempt, no waiting.
OFFLINE = {"FACEID_URL": "http://127.0.0.1:9", "FACEID_API_KEY": "", "FACEID_RETRIES": "0"}


@pytest.fixture
def run():
    runner = CliRunner(env=OFFLINE)
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_help_lists_every_command(run):
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("serve", "status", "enroll", "identify", "verify", "export", "import", "weights", "keys"):
        assert cmd in r.stdout
    enroll = run("enroll", "--help").stdout
    assert "FACEID_URL" in enroll and "FACEID_API_KEY" in enroll and "--max-files" in enroll


def test_usage_errors_exit_2(run, tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(b"x")
    assert run("verify", img).exit_code == 2                          # neither a second image nor --identity
    assert run("verify", img, img, "--identity", 1).exit_code == 2    # both
    assert run("identify", img, "--csv", tmp_path / "o.csv", "--json").exit_code == 2
    assert run("enroll", tmp_path / "missing").exit_code == 2
    assert run("keys", "new", "--name", "x", "--scopes", "root", "--json").exit_code == 2


def test_keys_new_prints_a_key_and_its_settings_entry(run):
    r = run("keys", "new", "--name", "door-1", "--scopes", "read,write", "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["entry"] == {"name": "door-1", "sha256": hash_key(out["key"]), "scopes": ["read", "write"]}
    human = run("keys", "new", "--name", "door-2")
    assert human.exit_code == 0 and "FACEID_API_KEYS" in human.stdout


def test_unreachable_server_is_a_clear_error_exit_1(run):
    r = run("status", "--json")
    assert r.exit_code == 1
    assert "error: unreachable" in r.stderr and "--url / FACEID_URL" in r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "unreachable"


def _archive(path, crop=b"\x89PNG fake", tamper=False, counts=None):
    face = {"crop": "crops/0000001.png", "crop_sha256": hashlib.sha256(crop).hexdigest(), "source_sha256": "0" * 64,
            "box": [1, 2, 3, 4], "landmarks": [[1, 2]] * 5, "detection_score": 0.99, "crop_size": 160,
            "crop_margin": 14, "created_at": "2026-01-01T00:00:00+00:00"}
    manifest = {"format": "faceid-gallery", "version": 1, "counts": counts or {"identities": 1, "faces": 1},
                "identities": [{"label": "a", "faces": [face]}]}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("crops/0000001.png", crop + (b"!" if tamper else b""))
    return path


@pytest.mark.parametrize("kind", ["not_zip", "tampered", "bad_counts", "no_manifest"])
def test_a_bad_archive_is_refused_before_any_request(run, tmp_path, kind):
    path = tmp_path / "g.zip"
    if kind == "not_zip":
        path.write_bytes(b"plain text")
    elif kind == "tampered":
        _archive(path, tamper=True)
    elif kind == "bad_counts":
        _archive(path, counts={"identities": 1, "faces": 2})
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("other.json", "{}")
    r = run("import", path)  # the URL points nowhere: an attempted request would say "unreachable"
    assert r.exit_code == 1 and "error: invalid_archive" in r.stderr, r.stderr


def test_export_into_a_missing_directory_is_refused_before_contacting_the_server(run, tmp_path):
    r = run("export", tmp_path / "no" / "such" / "dir" / "g.zip")
    assert r.exit_code == 2 and "does not exist" in r.stderr and "unreachable" not in r.stderr


def test_duplicates_merge_follows_identities_merged_away():
    """One person under three labels is three pairs: after B goes into A, the pair (B, C) means (A, C). The
    identity with more faces keeps its label, as in the UI."""
    from types import SimpleNamespace as NS

    from faceid_client.cli import _merge_pairs

    class Server:  # what the merge route does to face counts
        def __init__(self, faces):
            self.faces, self.calls = dict(faces), []

        def merge(self, into, from_):
            assert into in self.faces and from_ in self.faces, (into, from_)
            self.calls.append((into, from_))
            self.faces[into] += self.faces.pop(from_)
            return NS(id=into, face_count=self.faces[into])

    ident = lambda i, n: NS(id=i, face_count=n)  # noqa: E731
    a, b, c = ident(1, 1), ident(2, 3), ident(3, 2)
    server = Server({1: 1, 2: 3, 3: 2})
    done = _merge_pairs(server, [NS(a=a, b=b), NS(a=a, b=c), NS(a=b, b=c)])
    assert done == [[2, 1], [2, 3]] and server.calls == [(2, 1), (2, 3)]
    assert server.faces == {2: 6}


def test_duplicates_merge_without_a_terminal_needs_yes(run):
    r = run("duplicates", "--merge")
    assert r.exit_code == 2 and "--yes" in r.output


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A server that answers every request with terminal escapes in its labels and messages."""
    ESC = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\u202e"  # set the clipboard, clear the screen, reverse the text

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        face = {"box": [0, 0, 9, 9], "detection_score": 1.0, "status": "match", "score": 0.9, "matches": [],
                "identity": {"id": 1, "label": "Ada" + self.ESC}}
        self._answer(200, {"model_version": "v", "threshold": 0.5, "faces": [face]})

    def do_GET(self):
        if self.path.startswith("/huge/"):  # says 1 TiB is coming; sends a little of it
            self.send_response(200)
            self.send_header("content-length", str(2**40))
            self.end_headers()
            self._drip(lambda: b"{" * 65536, count=16)
        elif self.path.startswith("/endless/"):  # no length: chunks until the client hangs up
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self._drip(lambda: b"10000\r\n" + b" " * 65536 + b"\r\n", count=10_000)
        elif self.path.startswith("/html/"):  # a proxy's or another service's page, 200 OK
            page = b"<html>not faceid</html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        else:
            self._answer(503 if self.path == "/ready" else 404,
                         {"error": {"code": "x" + self.ESC, "message": self.ESC}})

    def _drip(self, chunk, count: int):
        try:
            for _ in range(count):
                self.wfile.write(chunk())
        except OSError:  # the client hung up, as it should
            pass

    def _answer(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_what_a_server_says_reaches_the_terminal_without_its_control_characters(tmp_path, hostile_url):
    """Labels, codes and messages come from the server: an escape sequence in one is printed as text (\\x1b),
    never sent to the terminal (OSC 52 sets the clipboard, others move the cursor or rewrite the screen)."""
    image = tmp_path / "a.jpg"
    image.write_bytes(b"not looked at")
    runner = CliRunner(env={**OFFLINE, "FACEID_RETRIES": "0"})
    out = runner.invoke(app, ["identify", str(image), "--url", hostile_url])
    assert out.exit_code == 0, out.output
    assert "Ada\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b[2J\\u202e (0.900)" in out.output
    status = runner.invoke(app, ["status", "--url", hostile_url])
    assert status.exit_code != 0 and "\\x1b]52" in status.output
    for result in (out, status):
        assert not any(c in result.output for c in "\x1b\x07\u202e"), result.output


def test_an_answer_larger_than_any_the_api_gives_is_refused_unread(hostile_url):
    """A server (or whatever answers at --url) could send gigabytes: an answer declared or grown past
    max_answer_bytes (256 MiB by default) is an error, read no further, not the client's memory filled."""
    runner = CliRunner(env={**OFFLINE, "FACEID_RETRIES": "0"})
    out = runner.invoke(app, ["status", "--url", f"{hostile_url}/huge"])
    assert out.exit_code == 1 and "error: answer_too_large" in out.output, out.output
    with FaceIDClient(f"{hostile_url}/endless", retries=0, max_answer_bytes=1_000_000) as c:
        with pytest.raises(FaceIDError) as err:
            c.request("GET", "/identities")
    assert err.value.code == "answer_too_large"


def test_an_answer_that_is_not_json_is_one_line_not_a_traceback(hostile_url):
    out = CliRunner(env={**OFFLINE, "FACEID_RETRIES": "0"}).invoke(app, ["status", "--url", f"{hostile_url}/html"])
    assert out.exit_code == 1 and "error: unexpected_answer" in out.output, out.output


def test_verify_identity_digits_that_are_not_a_number_are_a_name(run, tmp_path):
    """'²' is a digit to str.isdigit but no int: it was a traceback; now a name, looked up on the server."""
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    out = run("verify", image, "--identity", "²")
    assert out.exit_code == 1 and "error: unreachable" in out.output, (out.output, out.exception)
