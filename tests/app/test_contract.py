"""Contract details (issue 19, items 7 to 9): client disconnects (over a real server: they need sockets), and
in process one label rule, UTC timestamps, a locked database, offline docs, scores within [-1, 1]."""
from __future__ import annotations

import base64
import re
import socket
import sqlite3
import time
import unicodedata
from contextlib import contextmanager
from datetime import datetime

import pytest

pytestmark = pytest.mark.slow


def _metric(client, status: str, route: str) -> float:
    text = client.get("/metrics").text
    found = re.search(r'faceid_requests_total\{method="POST",route="%s",status="%s"\} ([0-9.e+]+)'
                      % (re.escape(route), status), text)
    return float(found.group(1)) if found else 0.0


def test_a_client_that_disconnects_mid_upload_is_a_499_not_a_500(server, client):
    log_start = len(server.log_tail(10**9))
    before = _metric(client, "499", "/embed")
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
                         b"filename=\"a.jpg\"\r\n\r\n" + b"\xff" * 5000)
    deadline = time.monotonic() + 60
    while _metric(client, "499", "/embed") < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the server's own counter, bounded
    assert _metric(client, "499", "/embed") == before + 3
    assert _metric(client, "500", "/embed") == 0
    log = server.log_tail(10**9)[log_start:]
    assert "Traceback" not in log and "unhandled" not in log


def test_one_label_rule_on_every_path(app_client, faces):
    face = sorted((faces / "photos" / "George_Clooney").glob("*.jpg"))[0].read_bytes()
    b64 = base64.b64encode(face).decode()
    for bad in ("a\nb", "nul\x00", "Bush\u200b", "\u202eevil", "\u200b", "   ", "x" * 201):
        r = app_client.post("/enroll", data={"label": bad}, files={"files": ("f.jpg", face)})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_field", (bad, r.text)
        r = app_client.post("/enroll", json={"label": bad, "images": [b64]})
        assert r.status_code == 422, (bad, r.text)
        r = app_client.patch("/identities/1", json={"label": bad})
        assert r.status_code == 422, (bad, r.text)
    nfd = unicodedata.normalize("NFD", "  José Müller ")
    first = app_client.post("/enroll", data={"label": nfd}, files={"files": ("f.jpg", face)}).json()
    assert first["identity"]["label"] == "José Müller" == unicodedata.normalize("NFC", "José Müller")
    again = app_client.post("/enroll", json={"label": "José Müller", "images": [b64]}).json()
    assert again["created"] is False and again["identity"]["id"] == first["identity"]["id"]
    r = app_client.patch(f"/identities/{first['identity']['id']}", json={"label": nfd})
    assert r.status_code == 200 and r.json()["label"] == "José Müller"


def _utc(stamp: str) -> bool:
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0


def test_created_at_is_utc_with_an_offset_in_every_answer(app_client, faces):
    face = sorted((faces / "photos" / "Jeff_Bezos").glob("*.jpg"))[0].read_bytes()
    enrolled = app_client.post("/enroll", data={"label": "utc-check"}, files={"files": ("f.jpg", face)}).json()
    iid, fid = enrolled["identity"]["id"], enrolled["faces"][0]["id"]
    stamps = [enrolled["identity"]["created_at"], enrolled["faces"][0]["created_at"]]
    detail = app_client.get(f"/identities/{iid}").json()
    stamps += [detail["created_at"], detail["updated_at"], detail["faces"][0]["created_at"]]
    stamps += [app_client.get(f"/faces/{fid}").json()["created_at"]]
    stamps += [i["created_at"] for i in app_client.get("/identities", params={"prefix": "utc-"}).json()["items"]]
    stamps += [app_client.patch(f"/identities/{iid}", json={"label": "utc-check-2"}).json()["updated_at"]]
    assert len(stamps) == 8 and all(_utc(s) for s in stamps), stamps


@contextmanager
def writers_locked_out(url: str):
    """Hold the gallery's write lock from outside the service, as another writer would: SQLite's database
    lock (BEGIN IMMEDIATE), or on PostgreSQL the row every write updates first (gallery_state)."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url[len("sqlite:///"):], timeout=30)
        con.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        con = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        con.execute("SELECT * FROM gallery_state FOR UPDATE")
    try:
        yield
    finally:
        con.rollback()
        con.close()


def test_a_locked_database_is_503_database_busy(app_client):
    # the app waits FACEID_DB_BUSY_TIMEOUT_S=1 (SQLite's busy timeout, PostgreSQL's lock_timeout)
    with writers_locked_out(app_client.app.state.settings.database_url):
        r = app_client.patch("/identities/1", json={"label": "whoever"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_busy", r.text
        assert r.headers["retry-after"]
        assert app_client.get("/identities").status_code == 200  # readers are not blocked (WAL / MVCC)


def test_docs_are_served_offline_and_declare_the_key_header(app_client):
    page = app_client.get("/docs").text
    assert "/docs/static/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert app_client.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert app_client.get("/docs/static/swagger-ui.css").status_code == 200
    spec = app_client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        **spec["components"]["securitySchemes"]["APIKeyHeader"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert {"APIKeyHeader": []} in spec["paths"]["/identify"]["post"]["security"]


def test_verify_scores_stay_within_minus_one_and_one(app_client, faces):
    face = sorted((faces / "photos" / "Matt_Damon").glob("*.jpg"))[1].read_bytes()
    r = app_client.post("/verify", files={"file": ("a.jpg", face), "file_b": ("b.jpg", face)})
    assert r.status_code == 200 and -1.0 <= r.json()["score"] <= 1.0 and r.json()["same_person"]


def test_a_client_that_disconnects_mid_import_is_a_499_not_a_400(server, client):
    before = {s: _metric(client, s, "/faces/import") for s in ("499", "400")}
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /faces/import HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000\r\n\r\n{\"label\": \"a\", \"faces\": [{\"crop\": \"" + b"A" * 5000)
    deadline = time.monotonic() + 60
    while _metric(client, "499", "/faces/import") < before["499"] + 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the server's own counter, bounded
    assert _metric(client, "499", "/faces/import") == before["499"] + 3
    assert _metric(client, "400", "/faces/import") == before["400"]
