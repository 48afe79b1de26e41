"""Probes and reports that nobody can flood or harvest (in process: TestClient, the real FaceService and
SQLite store over fake networks): a probe is reported on only by the key that got the answer (or an admin);
the probe store keeps the newest FACEID_PROBE_MAX_ROWS_PER_KEY per key and FACEID_PROBE_MAX_ROWS in all;
one report per (probe, key), a later one replacing it; at most FACEID_FEEDBACK_MAX_PER_KEY reports per key."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.core.security import ApiKey, hash_key
from app.gallery.models import Feedback, Probe
from tests.app.fakes import tiles_png
from tests.app.test_routes import enroll, error, make_client, store  # noqa: F401 - fixtures

RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)
KEYS = {"alice": "write", "bob": "write", "root": "admin", "door": "identify"}


@pytest.fixture
def keyed(store, tmp_path, request):  # noqa: F811
    c, service = make_client(store, tmp_path, **getattr(request, "param", {}), api_keys=[
        ApiKey(name=n, sha256=hash_key(f"{n}-secret"), scopes=[s]) for n, s in KEYS.items()])
    c.headers["X-API-Key"] = "alice-secret"
    assert enroll(c, "Ada", [RED]).status_code == 201
    yield c
    service.close()


def as_(name: str) -> dict:
    return {"X-API-Key": f"{name}-secret"}


def identify(client, who: str, colours) -> list[int]:
    r = client.post("/identify", headers=as_(who), files={"file": ("p.png", tiles_png(colours), "image/png")})
    assert r.status_code == 200, r.text
    return [f["probe_id"] for f in r.json()["faces"]]


def rows(store, model, *where) -> list[int]:  # noqa: F811
    with store.sessions() as s:
        return list(s.scalars(select(model.id).where(*where).order_by(model.id)))


def test_probes_are_reported_on_only_by_the_key_that_got_the_answer(keyed, store):  # noqa: F811
    alices = identify(keyed, "alice", [RED, BLUE])
    doors = identify(keyed, "door", [BLUE])
    for pid in range(1, max(alices + doors) + 5):  # bob walks every id: he finds none of the others' faces
        error(keyed.post("/feedback", headers=as_("bob"), json={"kind": "nobody", "probe_id": pid}), 404,
              "unknown_probe")
    assert rows(store, Feedback) == []
    assert keyed.post("/feedback", headers=as_("alice"), json={"kind": "nobody", "probe_id": alices[1]}).status_code == 201
    error(keyed.post("/feedback", headers=as_("alice"), json={"kind": "nobody", "probe_id": doors[0]}), 404,
          "unknown_probe")
    # an admin (who reads every report anyway) may report on a door camera's answer
    assert keyed.post("/feedback", headers=as_("root"), json={"kind": "nobody", "probe_id": doors[0]}).status_code == 201


@pytest.mark.parametrize("keyed", [{"probe_max_rows_per_key": 5, "probe_max_rows": 8}], indirect=True)
def test_the_probe_store_keeps_the_newest_per_key_and_in_all(keyed, store):  # noqa: F811
    alices = [pid for _ in range(3) for pid in identify(keyed, "alice", [RED, GREEN, BLUE])]
    assert rows(store, Probe) == alices[-5:]  # the key's own oldest go first
    bobs = [pid for _ in range(2) for pid in identify(keyed, "bob", [RED, GREEN])]
    assert len(rows(store, Probe)) == 8 and rows(store, Probe, Probe.owner == "bob") == bobs
    assert rows(store, Probe, Probe.owner == "alice") == alices[-4:]  # the oldest in all went
    error(keyed.post("/feedback", headers=as_("alice"), json={"kind": "nobody", "probe_id": alices[0]}), 404,
          "unknown_probe")


@pytest.mark.parametrize("keyed", [{"probe_max_rows": 0}], indirect=True)
def test_a_zero_cap_keeps_no_probes(keyed, store):  # noqa: F811
    assert identify(keyed, "alice", [RED]) == [None] and rows(store, Probe) == []


def test_one_report_per_probe_and_key_the_later_replaces(keyed, store):  # noqa: F811
    [pid] = identify(keyed, "alice", [BLUE])
    for _ in range(5):
        assert keyed.post("/feedback", headers=as_("alice"), json={"kind": "nobody", "probe_id": pid}).status_code == 201
    r = keyed.post("/feedback", headers=as_("alice"), json={"kind": "is", "identity_id": 1, "probe_id": pid})
    assert r.status_code == 201
    with store.sessions() as s:
        assert s.execute(select(Feedback.kind, Feedback.probe_id)).all() == [("is", pid)]


@pytest.mark.parametrize("keyed", [{"feedback_max_per_key": 3}], indirect=True)
def test_reports_per_key_are_capped_by_a_quota(keyed, store):  # noqa: F811
    probes = identify(keyed, "alice", [RED, GREEN, BLUE]) + identify(keyed, "alice", [BLUE])
    for pid in probes[:3]:
        assert keyed.post("/feedback", headers=as_("alice"), json={"kind": "nobody", "probe_id": pid}).status_code == 201
    error(keyed.post("/feedback", headers=as_("alice"), json={"kind": "nobody", "probe_id": probes[3]}), 409,
          "feedback_quota_exceeded")
    upload = {"file": ("p.png", tiles_png([BLUE]), "image/png")}
    error(keyed.post("/feedback", headers=as_("alice"), data={"kind": "nobody"}, files=upload), 409,
          "feedback_quota_exceeded")
    # replacing one's own report is not a new one; another key has its own quota
    assert keyed.post("/feedback", headers=as_("alice"), json={"kind": "is", "identity_id": 1,
                                                               "probe_id": probes[0]}).status_code == 201
    [bobs] = identify(keyed, "bob", [BLUE])
    assert keyed.post("/feedback", headers=as_("bob"), json={"kind": "nobody", "probe_id": bobs}).status_code == 201
    with store.sessions() as s:
        assert s.scalar(select(func.count(Feedback.id)).where(Feedback.reported_by == "alice")) == 3
