"""The `faceid` command as a new user meets it, against one real keyed server (issue 31, item 10 and the CLI part
of item 3): a missing or wrong key, a flat folder, refusals remembered, folder labels with underscores, faces
numbered from 1, enrolling one face of a group photo, `verify --identity NAME`, Ctrl-C, `identify --known`."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faceid_client
from app.core.security import hash_key
from faceid_client.cli import app
from harness import running, zero_png

pytestmark = [pytest.mark.faces, pytest.mark.slow]

KEY = "test-cli-users-key-0123456789"
CLIENT_DIR = Path(faceid_client.__file__).resolve().parents[1]  # the client under test, for subprocesses too


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-users")
    keys = json.dumps([{"name": "admin", "sha256": hash_key(KEY), "scopes": ["admin"]}])
    with running(tmp / "g.db", env={"FACEID_API_KEYS": keys}) as s:
        yield s


def faceid(url: str, *args, key: str | None = KEY):
    env = {"FACEID_URL": url, "FACEID_API_KEY": key or "", "FACEID_RETRIES": "0"}
    result = CliRunner(env=env).invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def link(src: Path, dst: Path) -> Path:
    """The shared photo at `dst` (a symlink: face data is read from the shared folder, never copied)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


def one_error_line(r, *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output and all(n in lines[0] for n in needles), r.stderr


def test_no_key_wrong_key_and_a_server_down_are_one_clear_line(server, faces):
    for key, why in ((None, "no API key was given"), ("not-a-key", "not accepted")):
        r = faceid(server.url, "status", key=key)
        assert r.exit_code == 1
        one_error_line(r, "unauthorized (401)", why, "--api-key", "FACEID_API_KEY")
        r = faceid(server.url, "identify", faces / "multi" / "couple.jpg", key=key)
        assert r.exit_code == 1
        one_error_line(r, "unauthorized (401)", "--api-key", "FACEID_API_KEY")
    r = faceid(server.url, "status")
    assert r.exit_code == 0 and "ready" in r.stdout, r.output
    down = faceid("http://127.0.0.1:9", "status")  # nothing listens on the discard port
    assert down.exit_code == 1
    one_error_line(down, "unreachable", "is the server running?", "--url / FACEID_URL")


def test_a_flat_folder_is_explained_and_label_enrolls_it(server, faces, tmp_path):
    flat = tmp_path / "flat"
    link(faces / "photos" / "Jeff_Bezos" / "img20.jpg", flat / "img20.jpg")
    r = faceid(server.url, "enroll", flat)
    assert r.exit_code == 2
    one_error_line(r, "no_label_folders", f"{flat}/<label>/*.jpg", f"faceid enroll {flat} --label NAME")
    r = faceid(server.url, "enroll", flat, "--label", "Jeff Bezos", "--json")
    assert r.exit_code == 0, r.output
    assert [(e["label"], Path(e["path"]).name) for e in json.loads(r.stdout)["enrollments"]] == \
        [("Jeff Bezos", "img20.jpg")]


def test_refusals_are_remembered_and_underscores_can_be_spaces(server, faces, tmp_path):
    people = tmp_path / "people"
    link(faces / "photos" / "Elon_Musk" / "img18.jpg", people / "Elon_Musk" / "img18.jpg")
    link(faces / "multi" / "couple.jpg", people / "Elon_Musk" / "couple.jpg")  # two faces: refused

    first = faceid(server.url, "enroll", people, "--underscores-as-spaces")
    assert first.exit_code == 3, first.output
    assert "labels: 'Elon_Musk' -> 'Elon Musk'" in first.stderr
    assert first.stdout.startswith("enrolled 1, skipped 0 (already enrolled), refused 1\n"), first.stdout
    assert "faceid enroll-face PHOTO --label LABEL --face N" in first.stdout and "image 0" not in first.stdout
    assert (people / ".faceid-enroll").is_file()

    again = faceid(server.url, "enroll", people, "--underscores-as-spaces")
    assert again.exit_code == 0, again.output  # nothing new was refused
    assert ("enrolled 0, skipped 1 (already enrolled), refused 0, skipped 1 refused before "
            "(--retry-refused to try them again)") in again.stdout, again.stdout
    retried = faceid(server.url, "enroll", people, "--underscores-as-spaces", "--retry-refused", "--json")
    assert retried.exit_code == 3
    s = json.loads(retried.stdout)
    assert (s["refused"], s["refused_before"], s["refusals"][0]["code"]) == (1, 0, "ambiguous_face")

    kept = faceid(server.url, "enroll", people, "--state", tmp_path / "other-state", "--json")
    assert "--underscores-as-spaces would enroll 'Elon Musk'" in kept.stderr
    # the photo is Elon Musk's already; under 'Elon_Musk' it would be a second identity: refused, not uploaded
    assert [r["code"] for r in json.loads(kept.stdout)["refusals"]] == ["enrolled_as_other", "ambiguous_face"]
    said = faceid(server.url, "enroll", people, "--state", tmp_path / "other-state", "--keep-underscores")
    assert "underscores" not in said.stderr and "skipped 1 refused before" in said.stdout, said.output


def test_faces_are_numbered_from_1_and_one_face_of_a_group_photo_can_be_enrolled(server, faces, tmp_path):
    couple = faces / "multi" / "couple.jpg"
    r = faceid(server.url, "identify", couple)
    assert r.exit_code == 0 and "face 1: " in r.stdout and "face 2: " in r.stdout and "face 0" not in r.stdout
    out = tmp_path / "out.csv"
    assert faceid(server.url, "identify", couple, "--csv", out).exit_code == 0
    assert [row["face"] for row in csv.DictReader(out.open())] == ["1", "2"]

    r = faceid(server.url, "enroll-face", couple, "--label", "Second Face", "--face", 2)
    assert r.exit_code == 0 and r.stdout.startswith(f"enrolled face 2 of {couple} as 'Second Face'"), r.output
    r = faceid(server.url, "identify", couple)
    assert re.search(r"face 2: Second Face \(", r.stdout) and "face 1: Second Face" not in r.stdout, r.stdout
    r = faceid(server.url, "enroll-face", couple, "--label", "Second Face", "--face", 3)
    assert r.exit_code == 1
    one_error_line(r, "face_index_out_of_range", f"{couple} has fewer than 3 faces")


def test_verify_takes_an_identity_by_name(server, faces, tmp_path):
    jb = faces / "photos" / "Jeff_Bezos"
    link(jb / "img20.jpg", tmp_path / "jeff" / "img20.jpg")
    assert faceid(server.url, "enroll", tmp_path / "jeff", "--label", "Jeff Bezos").exit_code == 0
    for name in ("Jeff Bezos", "jeff_bezos"):  # exact, or alike ignoring case and underscores
        r = faceid(server.url, "verify", jb / "img21.jpg", "--identity", name)
        assert r.exit_code == 0 and r.stdout.startswith("same person"), r.output
    r = faceid(server.url, "enroll-face", faces / "multi" / "couple.jpg", "--label", "JEFF BEZOS", "--face", 1)
    assert r.exit_code == 0, r.output
    r = faceid(server.url, "verify", jb / "img21.jpg", "--identity", "jeff bezos")
    assert r.exit_code == 2
    one_error_line(r, "ambiguous_identity", "'Jeff Bezos'", "'JEFF BEZOS'", "give the id")
    assert len(re.findall(r"\d+ 'J(?:eff Bezos|EFF BEZOS)'", r.stderr)) == 2, r.stderr
    r = faceid(server.url, "verify", jb / "img21.jpg", "--identity", "Nobody Here")
    assert r.exit_code == 1
    one_error_line(r, "unknown_identity", "'Nobody Here'")


def test_identify_known_unknown_in_one_step(server, faces, tmp_path):
    gc, md = faces / "photos" / "George_Clooney", faces / "photos" / "Matt_Damon"
    link(gc / "img38.jpg", tmp_path / "known" / "George_Clooney.jpg")  # face_recognition's layout
    link(gc / "img39.jpg", tmp_path / "unknown" / "a.jpg")
    link(md / "img29.jpg", tmp_path / "unknown" / "b.jpg")
    (tmp_path / "unknown" / "c.png").write_bytes(zero_png(64, 64))
    r = faceid(server.url, "identify", "--known", tmp_path / "known", "--underscores-as-spaces", tmp_path / "unknown")
    assert r.exit_code == 0, r.output
    assert "enrolled 1" in r.stderr
    u = tmp_path / "unknown"
    assert list(csv.reader(io.StringIO(r.stdout))) == [[f"{u}/a.jpg", "George Clooney"], [f"{u}/b.jpg", "unknown_person"],
                                                       [f"{u}/c.png", "no_persons_found"]]
    again = faceid(server.url, "identify", "--known", tmp_path / "known", "--underscores-as-spaces", u / "a.jpg")
    assert "enrolled 0, skipped 1" in again.stderr and again.stdout == f"{u}/a.jpg,George Clooney\n"


def test_ctrl_c_closes_the_bar_and_says_how_to_resume(server, faces, tmp_path):
    photos = sorted((faces / "photos").glob("*/*.jpg"))  # all of them, one at a time: the run lasts long enough
    for f in photos:                                      # that a starved test process still interrupts it
        link(f, tmp_path / "p" / f.parent.name / f.name)
    env = {**os.environ, "FACEID_URL": server.url, "FACEID_API_KEY": KEY, "PYTHONPATH": str(CLIENT_DIR)}
    # a run started in the background (nohup, `&` in a script) inherits SIGINT ignored: the CLI would never see it
    proc = subprocess.Popen([sys.executable, "-m", "faceid_client.cli", "enroll", tmp_path / "p", "--progress",
                             "--concurrency", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = b""
    deadline = time.monotonic() + 300
    while not re.search(rb"\| *[1-9]\d*/\d+ ", err):  # the bar counts a first upload done: the run is under way
        assert time.monotonic() < deadline and proc.poll() is None, err
        ready, _, _ = select.select([proc.stderr], [], [], 5)
        if ready:
            err += os.read(proc.stderr.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=300)
    err += rest
    assert proc.returncode == 130, (proc.returncode, err)
    text = err.decode()
    assert text.endswith("\ninterrupted; rerun the same command to resume\n"), text  # the bar ended its line
    assert "Traceback" not in text and "Aborted" not in text and out == b""
