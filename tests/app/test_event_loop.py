"""No database work on the event loop: every SQL statement a route causes runs in a worker thread (a blocking
query on the loop stalls every other request of the process), and reading an identity does not load its faces'
crop images. Watched with SQLAlchemy's own cursor events on the real store, routes called in process."""
from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import event

from tests.app.test_routes import BLUE, GREEN, RED, enroll, make_client, store  # noqa: F401
from tests.app.fakes import tiles_png


@pytest.fixture
def watched(store, tmp_path):  # noqa: F811 - the fixture imported from test_routes
    """(client, statements run on an event loop thread, every statement)."""
    on_loop, every = [], []

    def before(conn, cursor, statement, parameters, context, executemany):
        every.append(statement)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: fine
        on_loop.append((threading.current_thread().name, statement.split("\n")[0][:120]))

    event.listen(store.engine, "before_cursor_execute", before)
    c, service = make_client(store, tmp_path)
    yield c, on_loop, every
    event.remove(store.engine, "before_cursor_execute", before)
    service.close()


def test_no_route_queries_the_database_on_the_event_loop(watched):
    c, on_loop, _ = watched
    a = enroll(c, "Ada", [RED]).json()["identity"]["id"]
    b = enroll(c, "Bob", [GREEN]).json()["identity"]["id"]
    face = c.get(f"/identities/{a}").json()["faces"][0]["id"]
    png = tiles_png([RED])
    for method, url, kw in [
        ("get", "/identities", {}), ("get", f"/identities/{a}", {}), ("get", "/identities/duplicates", {}),
        ("patch", f"/identities/{a}", {"json": {"label": "Ada L."}}), ("get", f"/faces/{face}", {}),
        ("get", "/identities", {"params": {"q": "ad", "sort": "faces"}}),
        ("patch", f"/identities/{a}", {"json": {"cover_face_id": face}}),
        ("post", "/identify", {"files": {"file": ("a.png", png, "image/png")}}), ("get", "/probes", {}),
        ("post", "/verify", {"data": {"identity_id": str(a)}, "files": {"file": ("a.png", png, "image/png")}}),
        ("post", f"/faces/{face}/move", {"json": {"identity_id": b}}),
        ("get", "/ready", {}),
        ("get", "/metrics", {}), ("get", "/admin/model", {}), ("get", "/admin/calibration", {}),
        ("post", "/admin/reindex", {}),
    ]:
        r = getattr(c, method)(url, **kw)
        assert r.status_code < 400, (url, r.text)
    probe = c.get("/probes").json()["items"][0]["id"]
    assert c.get(f"/probes/{probe}/crop").status_code == 200
    cy = enroll(c, "Cy", [BLUE]).json()["identity"]["id"]
    assert c.post(f"/identities/{b}/merge", json={"from_identity_id": cy}).status_code == 200
    assert on_loop == [], on_loop


def test_reading_an_identity_does_not_load_face_crops(watched):
    c, _, every = watched
    ident = enroll(c, "Ada", [RED, RED, RED]).json()["identity"]["id"]
    every.clear()
    assert c.get(f"/identities/{ident}").json()["face_count"] == 3
    assert c.patch(f"/identities/{ident}", json={"label": "Ada L."}).json()["face_count"] == 3
    assert not [s for s in every if "crop_png" in s], [s for s in every if "crop_png" in s]
