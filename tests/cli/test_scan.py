"""`faceid scan` against a real server (uvicorn, real weights, real photos): every photo identified with
remember_unknown, the largest unnamed people printed, a rerun resumes (sends nothing already scanned), a key
without the write scope is refused."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.core.security import hash_key
from faceid_client.cli import app
from harness import running

pytestmark = [pytest.mark.faces, pytest.mark.slow]

WRITE_KEY, READ_KEY = "scan-write-key-0123456789", "scan-read-key-0123456789"
KEYS = json.dumps([{"name": "writer", "sha256": hash_key(WRITE_KEY), "scopes": ["write"]},
                   {"name": "reader", "sha256": hash_key(READ_KEY), "scopes": ["read"]}])


def faceid(url: str, *args, key: str = WRITE_KEY):
    result = CliRunner(env={"FACEID_URL": url, "FACEID_API_KEY": key}).invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_scan_keeps_unknown_faces_prints_the_largest_people_and_resumes(tmp_path, faces):
    folders = [faces / "photos" / "Matt_Damon", faces / "photos" / "Jack_Dorsey"]
    n_files = sum(len(list(f.glob("*.jpg"))) for f in folders)
    state = tmp_path / "scan-state"
    with running(tmp_path / "g.db", env={"FACEID_API_KEYS": KEYS}) as srv:
        r = faceid(srv.url, "scan", *folders, "--state", state, "--json", "--no-progress")
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["scanned"] == n_files and out["skipped"] == 0 and out["unknown_faces"] >= n_files
        assert out["refined"]["applied"] and out["unnamed_people"] >= 2
        sizes = [p["size"] for p in out["largest"]]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] >= 3
        assert len(state.read_text().split()) == n_files

        again = faceid(srv.url, "scan", *folders, "--state", state, "--no-progress")
        assert again.exit_code == 0, again.output
        assert f"scanned 0 images ({n_files} already scanned" in again.output
        assert f"person #{out['largest'][0]['id']}: {sizes[0]} faces" in again.output

        refused = faceid(srv.url, "scan", folders[0], "--state", tmp_path / "other", "--no-progress", key=READ_KEY)
        assert refused.exit_code == 1 and "forbidden" in refused.output
