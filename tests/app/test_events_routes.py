"""/webhooks in process (TestClient, the real FaceService over fake networks): create, list, delete, dead letters,
replay; what /identify and /enroll record; the events in the OpenAPI document."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.gallery.models import OutboxEvent
from tests.app.conftest import copied_store
from tests.app.test_routes import GREEN, RED, enroll, error, make_client
from tests.app.fakes import tiles_png


@pytest.fixture
def store(migrated_db, tmp_path):
    with copied_store(migrated_db, tmp_path) as s:
        yield s


@pytest.fixture
def client(store, tmp_path):
    c, service = make_client(store, tmp_path, webhook_allowed_hosts=["127.0.0.1"])
    yield c
    service.close()


def outbox(store) -> list[dict]:
    with store.sessions() as s:
        return [json.loads(b) for b in s.scalars(select(OutboxEvent.body).order_by(OutboxEvent.seq))]


def test_webhooks_create_list_delete(client):
    r = client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["identify.match", "enroll"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 30
    assert made["events"] == ["enroll", "identify.match"] and made["backlog"] == 0 and made["dead_letters"] == 0
    mine = client.post("/webhooks", json={"url": "http://127.0.0.1:9/other", "secret": "s" * 20}).json()
    assert mine["secret"] == "s" * 20 and mine["events"] == ["*"]
    listed = client.get("/webhooks").json()
    assert [w["id"] for w in listed] == [made["id"], mine["id"]] and all("secret" not in w for w in listed)
    assert client.delete(f"/webhooks/{made['id']}").status_code == 204
    error(client.delete(f"/webhooks/{made['id']}"), 404, "unknown_webhook")
    error(client.get(f"/webhooks/{made['id']}/dead-letters"), 404, "unknown_webhook")
    assert client.get(f"/webhooks/{mine['id']}/dead-letters").json() == {"items": [], "total": 0, "offset": 0,
                                                                          "limit": 50}
    assert client.post(f"/webhooks/{mine['id']}/dead-letters/replay").json() == {"queued": 0}


@pytest.mark.parametrize("body, code", [
    ({"url": "http://169.254.169.254/latest"}, "webhook_destination_refused"),
    ({"url": "http://10.0.0.1/x"}, "webhook_destination_refused"),
    ({"url": "file:///etc/passwd"}, "webhook_destination_refused"),
    ({"url": "http://127.0.0.1:9/x", "events": ["nope"]}, "invalid_request"),
    ({"url": "http://127.0.0.1:9/x", "secret": "short"}, "invalid_request"),
])
def test_webhooks_refuse_bad_subscriptions(client, body, code):
    r = client.post("/webhooks", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text


def test_identify_and_enroll_record_events_without_embeddings(client, store):
    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}).status_code == 201
    assert enroll(client, "red", [RED]).status_code == 201
    r = client.post("/identify", files={"file": ("a.png", tiles_png([RED, GREEN]), "image/png")})
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    got = outbox(store)
    assert [e["type"] for e in got][0] == "enroll"
    ident = [e for e in got if e["type"].startswith("identify.")]
    assert sorted(e["type"] for e in ident) == sorted(f"identify.{f['status']}" for f in faces)
    for e in ident:
        f = faces[e["data"]["face_index"]]
        assert e["data"]["box"] == f["box"] and e["data"]["probe_id"] == f["probe_id"]
        assert e["data"]["threshold"] == pytest.approx(f["threshold"], abs=1e-5)
        assert e["data"]["model_version"] == "fake-v1" and "embedding" not in json.dumps(e)
    match = next(e for e in ident if e["type"] == "identify.match")
    assert match["data"]["identity"]["label"] == "red"


def test_identify_commits_its_probes_and_events_together(client, store):
    """One commit per answer (one wait for the disk): the events ride on the probes' transaction."""
    from sqlalchemy import event

    assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}).status_code == 201
    assert enroll(client, "red", [RED]).status_code == 201
    commits = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(store.engine, "commit", listener)
    try:
        r = client.post("/identify", files={"file": ("a.png", tiles_png([RED, GREEN]), "image/png")})
    finally:
        event.remove(store.engine, "commit", listener)
    assert r.status_code == 200, r.text
    assert len(commits) == 1
    ids = {f["probe_id"] for f in r.json()["faces"]}
    assert None not in ids and {e["data"]["probe_id"] for e in outbox(store)[1:]} == ids


def test_identify_events_are_written_when_no_probe_is_kept(store, tmp_path):
    c, service = make_client(store, tmp_path, webhook_allowed_hosts=["127.0.0.1"], probe_retention_s=0)
    try:
        assert c.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"}).status_code == 201
        assert enroll(c, "red", [RED]).status_code == 201
        r = c.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")})
        assert r.status_code == 200 and r.json()["faces"][0]["probe_id"] is None, r.text
        [match] = [e for e in outbox(store) if e["type"] == "identify.match"]
        assert match["data"]["probe_id"] is None and match["data"]["identity"]["label"] == "red"
    finally:
        service.close()


def test_identify_events_nobody_wants_are_not_written(client, store):
    """A subscription starts after the newest event: identify events written while none wants them would never be
    delivered, so they are not written (enroll's are, in its own transaction)."""
    assert enroll(client, "red", [RED]).status_code == 201
    assert client.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).status_code == 200
    assert [e["type"] for e in outbox(store)] == ["enroll"]
    hook = client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["enroll"]}).json()
    assert client.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).status_code == 200
    assert [e["type"] for e in outbox(store)] == ["enroll"]  # one wants enroll only
    client.delete(f"/webhooks/{hook['id']}")
    client.post("/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["identify.match"]})
    assert client.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).status_code == 200
    assert [e["type"] for e in outbox(store)] == ["enroll", "identify.match"]


def test_events_are_declared_as_openapi_webhooks(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert set(spec["webhooks"]) == {"identify.match", "identify.unknown", "enroll", "identity.updated",
                                     "identity.deleted", "identity.merged", "model.swapped", "train.finished"}
    params = {p["name"] for p in spec["webhooks"]["identify.match"]["post"]["parameters"]}
    assert {"faceid-signature", "faceid-event-id"} <= params


def test_event_counters_are_in_metrics(client):
    text = client.get("/metrics").text
    for name in ("faceid_event_deliveries_total", "faceid_event_dead_letters_total", "faceid_events_dropped_total"):
        assert f"# TYPE {name}" in text
