"""A full disk is its own answer (507 storage_full, not a 503 "retry shortly"), and space can still be freed
through the API: on a real uvicorn server whose gallery lives on a small tmpfs of its own (unshare -rm), filled
to the last byte; and in process, SQLite's SQLITE_FULL mapped the same way."""
from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event

from harness import Server
from tests.app.fakes import tiles_png
from tests.app.test_routes import error, make_client, store  # noqa: F401 - fixtures


def test_sqlite_full_is_507_storage_full_and_changes_nothing(store, tmp_path):  # noqa: F811
    c, service = make_client(store, tmp_path)
    try:
        assert c.post("/enroll", data={"label": "Ada"},
                      files={"files": ("a.png", tiles_png([(200, 30, 30)]), "image/png")}).status_code == 201
        with store.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

        @event.listens_for(store.engine, "connect")
        def _cap(dbapi_conn, _record):  # SQLite's own "database or disk is full" at the current size
            dbapi_conn.execute(f"PRAGMA max_page_count={pages}")
        store.engine.dispose()
        big = tiles_png([(30, 200, 30)] * 1)
        r = c.post("/enroll", data={"label": "Bob"}, files=[("files", (f"{i}.png", big, "image/png")) for i in range(10)])
        err = error(r, 507, "storage_full")
        assert "retry-after" not in r.headers and "delete" in err["message"].lower()
        assert [i.label for i, _ in store.list_identities(0, 10)[0]] == ["Ada"]
    finally:
        service.close()


def _fill(folder: Path) -> None:
    """Write zeros into `folder` until its file system has no byte left."""
    with open(folder / "filler", "wb", buffering=0) as f:
        chunk = bytes(1 << 20)
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]


@pytest.mark.slow
def test_a_full_disk_answers_507_and_deletes_still_free_space(tmp_path, faces):
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rm (user + mount namespaces) is not available here")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=48m tmpfs "$0" && exec "$@"', str(disk)]
    people = sorted(p for p in (faces / "photos").iterdir() if p.is_dir())[:3]
    srv = Server(disk / "g.db", wrap=mount, log_path=tmp_path / "server.log").start()
    try:
        seen = Path(f"/proc/{srv.proc.pid}/root") / str(disk).lstrip("/")  # the server's tmpfs, from outside
        assert (seen / "g.db").exists() and (seen / "g.db.reserve").exists()
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            ids = []
            for person in people[:2]:
                photo = sorted(person.glob("*.jpg"))[0]
                r = c.post("/enroll", data={"label": person.name}, files={"files": (photo.name, photo.read_bytes())})
                assert r.status_code == 201, r.text
                ids.append(r.json()["identity"]["id"])
            photo0 = sorted(people[0].glob("*.jpg"))[1]
            [kept] = c.post("/identify", files={"file": (photo0.name, photo0.read_bytes())}).json()["faces"]
            assert kept["probe_id"] is not None
            _fill(seen)
            photo = sorted(people[2].glob("*.jpg"))[0]
            statuses = []
            for _ in range(5):  # the WAL may still hold a write or two; then the disk is full
                r = c.post("/enroll", data={"label": people[2].name}, files={"files": (photo.name, photo.read_bytes())})
                statuses.append(r.status_code)
                if r.status_code == 507:
                    break
            assert statuses[-1] == 507 and set(statuses) <= {201, 507}, statuses
            assert r.json()["error"]["code"] == "storage_full" and "retry-after" not in r.headers
            r = c.post("/identify", files={"file": (photo.name, photo.read_bytes())})
            assert r.status_code == 200, r.text  # the answer goes out; its probes are not kept
            assert {f["probe_id"] for f in r.json()["faces"]} == {None}
            r = c.post("/feedback", json={"kind": "nobody", "probe_id": kept["probe_id"]})
            assert r.status_code == 404, r.text  # older probes were evicted to make room
            r = c.delete(f"/identities/{ids[0]}")
            assert r.status_code == 204, r.text  # space can be freed through the API
            listed = [i["label"] for i in c.get("/identities").json()["items"]]
            assert people[0].name not in listed and people[1].name in listed
        (seen / "filler").unlink()
    finally:
        srv.stop()
