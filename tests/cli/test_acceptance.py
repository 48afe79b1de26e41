"""The `faceid` command against real servers (uvicorn on 127.0.0.1, real weights, real photos): enroll a folder,
resume an interrupted enrollment, identify into a CSV, export, import into a fresh server, wrong keys."""
from __future__ import annotations

import csv
import json
import zipfile

import pytest
from typer.testing import CliRunner

from app.core.security import hash_key
from faceid_client.bulk import file_sha256, image_files
from faceid_client.cli import app
from faceid_client.client import FaceIDClient
from harness import running

pytestmark = [pytest.mark.faces, pytest.mark.slow]

WRITE_KEY, READ_KEY = "test-write-key-0123456789", "test-read-key-0123456789"
KEYS = json.dumps([{"name": "writer", "sha256": hash_key(WRITE_KEY), "scopes": ["write"]},
                   {"name": "reader", "sha256": hash_key(READ_KEY), "scopes": ["read"]}])


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    env = {"FACEID_API_KEYS": KEYS}
    with running(tmp / "a.db", env=env) as a, running(tmp / "b.db", env=env) as b:
        yield a, b


def faceid(url: str, *args, key: str = WRITE_KEY):
    result = CliRunner(env={"FACEID_URL": url, "FACEID_API_KEY": key}).invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def gallery(url: str) -> list[tuple[str, int]]:
    with FaceIDClient(url, api_key=READ_KEY) as c:
        return sorted((i.label, i.face_count) for i in c.identities())


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def biggest_face_labels(rows: list[dict]) -> dict[str, str]:
    """path -> label of the largest face (the person the photo is of; others may be in the background)."""
    out: dict[str, tuple[float, str]] = {}
    for r in rows:
        if r["status"] in ("match", "unknown"):
            area = (float(r["x2"]) - float(r["x1"])) * (float(r["y2"]) - float(r["y1"]))
            if area > out.get(r["path"], (-1.0, ""))[0]:
                out[r["path"]] = (area, r["label"])
    return {p: label for p, (_, label) in out.items()}


def test_wrong_or_weak_key_is_a_clear_error_and_changes_nothing(servers, faces):
    a, _ = servers
    r = faceid(a.url, "enroll", faces / "photos", key="not-a-key")
    assert r.exit_code == 1
    assert "error: unauthorized (401)" in r.stderr and "FACEID_API_KEY" in r.stderr, r.stderr
    r = faceid(a.url, "enroll", faces / "photos", "--json", key=READ_KEY)
    assert r.exit_code == 1 and "error: forbidden (403)" in r.stderr, r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "forbidden"
    assert gallery(a.url) == []


def test_enroll_resume_identify_export_import(servers, faces, tmp_path):
    a, b = servers
    photos = faces / "photos"
    files = image_files([photos])
    state = ("--state", tmp_path / "refused")  # not in the shared photos folder

    # an interrupted enrollment (stopped after 20 uploads), then the whole folder: nothing twice
    first = faceid(a.url, "enroll", photos, "--max-files", 20, "--json", *state)
    assert first.exit_code in (0, 3), first.stderr
    s1 = json.loads(first.stdout)
    assert s1["enrolled"] + s1["refused"] == 20 and s1["not_attempted"] == len(files) - 20
    second = faceid(a.url, "enroll", photos, "--json", *state)
    assert second.exit_code in (0, 3), second.stderr
    s2 = json.loads(second.stdout)
    assert s2["skipped"] == s1["enrolled"] and s2["not_attempted"] == 0
    assert s2["refused_before"] == s1["refused"]  # remembered, not sent again
    assert s2["enrolled"] + s2["skipped"] + s2["refused"] + s2["refused_before"] == len(files)
    assert s2["enrolled"] > 0 and s2["refused"] + s2["refused_before"] <= 5
    enrolled = {e["path"] for e in s1["enrollments"] + s2["enrollments"]}
    refused = {e["path"] for e in s2["refusals"] + s2["refusals_before"]}
    assert not enrolled & refused and len(enrolled) + len(refused) == len(files)
    with FaceIDClient(a.url, api_key=READ_KEY) as c:
        stored = c.faces_by_source(file_sha256(f) for f in files)
        assert c.ready().faces == len(enrolled) == len(stored)
    assert len({f.source_sha256 for f in stored}) == len(stored)  # no duplicate
    assert all(f.label == p.parent.name for f in stored for p in files if file_sha256(p) == f.source_sha256)
    third = faceid(a.url, "enroll", photos, "--json", *state)
    assert json.loads(third.stdout)["enrolled"] == 0

    # identify the same folder into a CSV: every photo's main face gets its folder's label
    csv_a = tmp_path / "a.csv"
    r = faceid(a.url, "identify", photos, "--csv", csv_a, key=READ_KEY)
    assert r.exit_code == 0, r.stderr
    labels = biggest_face_labels(read_csv(csv_a))
    assert set(labels) == {str(f) for f in files}
    wrong = {p: got for p, got in labels.items() if got != p.split("/")[-2]}
    assert not wrong, wrong

    # export, import into a fresh server: the same identities, face counts and identify results
    archive = tmp_path / "gallery.zip"
    r = faceid(a.url, "export", archive, "--json", key=READ_KEY)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == len(enrolled)
    with zipfile.ZipFile(archive) as zf:
        assert json.loads(zf.read("manifest.json"))["counts"] == {"identities": len(gallery(a.url)),
                                                                 "faces": len(enrolled)}
    r = faceid(b.url, "import", archive, "--json")
    assert r.exit_code == 0, r.stderr
    imported = json.loads(r.stdout)
    assert imported["verified"] and imported["faces_added"] == len(enrolled) and imported["faces_present"] == 0
    assert gallery(b.url) == gallery(a.url)
    again = json.loads(faceid(b.url, "import", archive, "--json").stdout)  # idempotent
    assert again["verified"] and again["faces_added"] == 0 and again["faces_present"] == len(enrolled)
    assert gallery(b.url) == gallery(a.url)

    csv_b = tmp_path / "b.csv"
    assert faceid(b.url, "identify", photos, "--csv", csv_b, key=READ_KEY).exit_code == 0
    rows_a, rows_b = read_csv(csv_a), read_csv(csv_b)
    key = ("path", "face", "status", "label", "x1", "y1", "x2", "y2")
    assert [tuple(r[k] for k in key) for r in rows_b] == [tuple(r[k] for k in key) for r in rows_a]
    assert max(abs(float(x["score"]) - float(y["score"])) for x, y in zip(rows_a, rows_b) if x["score"]) < 1e-3


def test_verify_answers_with_its_exit_code(servers, faces):
    a, _ = servers
    aj = sorted((faces / "photos" / "Angelina_Jolie").glob("*.jpg"))
    em = sorted((faces / "photos" / "Elon_Musk").glob("*.jpg"))
    same = faceid(a.url, "verify", aj[0], aj[1], "--json", key=READ_KEY)
    assert same.exit_code == 0, same.stderr
    assert json.loads(same.stdout)["same_person"] is True
    different = faceid(a.url, "verify", aj[0], em[0], key=READ_KEY)
    assert different.exit_code == 3 and different.stdout.startswith("different people"), different.stdout
    none = faceid(a.url, "verify", aj[0], "--identity", 999_999, key=READ_KEY)
    assert none.exit_code == 1 and "error: unknown_identity (404)" in none.stderr, none.stderr
