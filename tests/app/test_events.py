"""Events without sockets: signatures, destination checks, the outbox written in the store's transactions, and the
delivery worker (order, back-off, dead letters, replay, caps, leases between two workers) over a fake transport."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.gallery.events import EventStore, new_event
from app.gallery.models import OutboxEvent
from app.gallery.store import GalleryStore, NewFace, make_engine
from app.services.events import Events
from app.services.webhooks import check_destination, sign, verify
from tests.app.conftest import copied_store


@pytest.fixture
def store(migrated_db, tmp_path):
    with copied_store(migrated_db, tmp_path) as s:
        yield s


def settings(**kw) -> Settings:
    return Settings(**{"events_retry_base_s": 0.001, "events_retry_max_s": 0.002, "events_max_attempts": 3,
                       "webhook_allowed_hosts": ["127.0.0.1"], **kw})


def face() -> NewFace:
    v = np.ones(4, np.float32) / 2
    return NewFace(crop=np.zeros((8, 8, 3), np.uint8), crop_margin=0, source_sha256="0" * 64, box=[0, 0, 8, 8],
                   landmarks=[[0, 0]] * 5, detection_score=0.99, embeddings={"v1": v})


def outbox(store: GalleryStore) -> list[dict]:
    with store.sessions() as s:
        return [json.loads(b) for b in s.scalars(select(OutboxEvent.body).order_by(OutboxEvent.seq))]


class FakeSender:
    """Records deliveries; `fail(event_id)` says whether to fail this try (default: never)."""

    def __init__(self, fail=lambda event_id, n: False):
        self.fail, self.tries, self.got, self.seqs = fail, {}, [], []

    async def send(self, url, secret, event_id, type_, body, seq=None):
        n = self.tries[event_id] = self.tries.get(event_id, 0) + 1
        if self.fail(event_id, n):
            return "HTTP 500"
        self.got.append((url, json.loads(body)))
        self.seqs.append((url, seq))
        return None

    async def aclose(self):
        pass


def drain(events: Events, until) -> None:
    """Rounds of delivery until `until()`, with a deadline (back-off delays here are milliseconds)."""
    async def go():
        deadline = time.monotonic() + 20
        while not until():
            assert time.monotonic() < deadline, "delivery did not finish in time"
            if not await events.round():
                await asyncio.sleep(0.002)  # a retry's back-off: polled, never assumed
    asyncio.run(go())


# --- signatures and destinations -------------------------------------------------------------------------
def test_signature_round_trip_and_refusals():
    body = b'{"id":"x"}'
    header = sign("whsec_test", body, t=1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify("whsec_test", body, header, now=1_000_100)
    assert not verify("whsec_test", body + b" ", header, now=1_000_100)        # body changed
    assert not verify("whsec_other", body, header, now=1_000_100)              # wrong secret
    assert not verify("whsec_test", body, header, now=1_000_000 + 301)         # past the replay window
    assert not verify("whsec_test", body, "v1=abc", now=1_000_000)


@pytest.mark.parametrize("url, allowed, refused", [
    ("ftp://93.184.216.34/x", [], "only http"),
    ("http://169.254.169.254/latest/meta-data", ["169.254.169.254"], "link-local"),
    ("http://[fe80::1]/", ["fe80::/10"], "link-local"),
    ("http://127.0.0.1:9/", [], "not public"),
    ("http://10.1.2.3/", [], "not public"),
    ("http://localhost/", [], "not public"),
    ("http://u:p@93.184.216.34/", [], "credentials"),
    ("http://127.0.0.1:9/", ["127.0.0.1"], None),
    ("http://10.1.2.3/", ["10.0.0.0/8"], None),
    ("https://93.184.216.34/hook", [], None),
])
def test_destinations(url, allowed, refused):
    problem = check_destination(url, allowed)
    assert (problem is None) if refused is None else (refused in problem), problem


# --- the outbox in the store's transactions --------------------------------------------------------------
def test_store_writes_record_their_events_in_their_transaction(store):
    a, _, _ = store.enroll("ann", [face()])
    b, _, _ = store.enroll("bob", [face(), face()])
    store.rename(a.id, "anna")
    with pytest.raises(Exception):
        store.rename(a.id, "bob")             # label taken: rolled back, and its event with it
    store.merge(a.id, b.id)
    store.delete_identity(a.id)
    store.set_serving("x.pt", "v2")
    got = outbox(store)
    assert [e["type"] for e in got] == ["enroll", "enroll", "identity.updated", "identity.merged",
                                        "identity.deleted", "model.swapped"]
    assert got[0]["data"]["identity"] == {"id": a.id, "label": "ann"} and got[0]["data"]["created"] is True
    assert got[2]["data"] == {"identity": {"id": a.id, "label": "anna"}, "previous_label": "ann", "change": "renamed"}
    assert got[3]["data"]["merged"] == {"id": b.id, "label": "bob"}
    assert len({e["id"] for e in got}) == len(got) and all(e["collection"] == "default" for e in got)


def test_nothing_recorded_when_the_write_changes_nothing(store):
    assert store.rename(12345, "x") is None and not store.delete_identity(12345) and store.merge(1, 2) is None
    assert outbox(store) == []


# --- the worker ------------------------------------------------------------------------------------------
def test_delivery_in_order_with_retries_then_caught_up_and_pruned(store):
    es = EventStore(store.engine)
    sub = es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    only = es.create("webhook", "http://127.0.0.1:9/b", ["enroll"], "s")
    flaky = {}
    events = Events(settings(events_max_attempts=10), es)
    events.sender = FakeSender(lambda eid, n: n <= flaky.setdefault(eid, len(flaky) % 3))  # 0, 1 or 2 failures
    for i in range(20):
        events.record([new_event("enroll" if i % 2 else "identify.unknown", {"i": i})])
    drain(events, until=lambda: len(events.sender.got) == 30)
    by_url = {}
    for url, e in events.sender.got:
        by_url.setdefault(url, []).append(e["data"]["i"])
    assert by_url["http://127.0.0.1:9/a"] == list(range(20))                  # every event, in order, once
    assert by_url["http://127.0.0.1:9/b"] == list(range(1, 20, 2))            # only what it asked for
    events._last_prune = 0
    asyncio.run(events.round())
    assert outbox(store) == [] and es.get(sub.id).cursor == es.get(only.id).cursor
    events.record([new_event("enroll", {"i": 20})])  # after a prune emptied the outbox: seqs never go back
    drain(events, until=lambda: len(events.sender.got) == 32)
    assert [e["data"]["i"] for _, e in events.sender.got[-2:]] == [20, 20]


def test_dead_letters_after_the_limit_then_replay(store):
    es = EventStore(store.engine)
    sub = es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    down = {"on": True}
    events = Events(settings(events_max_attempts=3), es)
    events.sender = FakeSender(lambda eid, n: down["on"])
    events.record([new_event("enroll", {"i": i}) for i in range(4)])
    drain(events, until=lambda: es.dead_letters(sub.id, 0, 0)[1] == 4)
    page = events.dead_letters(sub.id, 0, 10)
    assert [d["event"]["data"]["i"] for d in page["items"]] == [0, 1, 2, 3]
    assert all(d["attempts"] == 3 and d["last_error"] == "HTTP 500" for d in page["items"])
    assert all(n == 3 for n in events.sender.tries.values())
    down["on"] = False
    events.record([new_event("enroll", {"i": 4})])
    assert events.replay(sub.id, [page["items"][1]["id"], page["items"][3]["id"]]) == 2
    drain(events, until=lambda: len(events.sender.got) == 3)
    assert [e["data"]["i"] for _, e in events.sender.got] == [1, 3, 4]       # replayed first, then new ones
    assert [d["event"]["data"]["i"] for d in events.dead_letters(sub.id, 0, 10)["items"]] == [0, 2]


def test_a_dead_receiver_cannot_grow_the_outbox_or_dead_letters_without_bound(store):
    es = EventStore(store.engine)
    sub = es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    events = Events(settings(events_max_backlog=5, events_max_dead_letters=3, events_max_attempts=100,
                             events_retry_base_s=60), es)
    events.sender = FakeSender(lambda eid, n: True)
    events.record([new_event("enroll", {"i": i}) for i in range(12)])
    asyncio.run(events.round())
    events._last_prune = 0
    asyncio.run(events.round())
    assert es.backlog(sub.id) <= 5
    dead = events.dead_letters(sub.id, 0, 10)
    assert dead["total"] == 3 and [d["event"]["data"]["i"] for d in dead["items"]] == [4, 5, 6]  # oldest dropped
    assert len(outbox(store)) <= 5


def test_two_workers_on_one_database_deliver_each_event_once(store, tmp_path):
    es = EventStore(store.engine)
    es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    es.create("webhook", "http://127.0.0.1:9/b", ["*"], "s")
    other_engine = make_engine(str(store.engine.url))
    workers = [Events(settings(), es), Events(settings(), EventStore(other_engine))]
    sender = FakeSender()
    for w in workers:
        w.sender = sender
    workers[0].record([new_event("enroll", {"i": i}) for i in range(50)])

    async def both():
        deadline = time.monotonic() + 30
        while len(sender.got) < 100 and time.monotonic() < deadline:
            await asyncio.gather(*(w.round() for w in workers))

    asyncio.run(both())
    other_engine.dispose()
    ids = [(url, e["id"]) for url, e in sender.got]
    assert len(ids) == 100 and len(set(ids)) == 100                            # once per subscription
    for url in ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"):
        assert [e["data"]["i"] for u, e in sender.got if u == url] == list(range(50))


def test_a_lease_held_by_a_live_worker_is_not_taken(store):
    es = EventStore(store.engine)
    es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    assert es.claim("w1", lease_s=30) == []                                    # nothing waiting: nothing written
    es.append([new_event("enroll", {})])
    assert len(es.claim("w1", lease_s=30)) == 1
    assert es.claim("w2", lease_s=30) == []
    assert len(es.claim("w2", lease_s=30, now=time.time() + 31)) == 1           # w1 died: its lease runs out


def test_a_subscription_no_process_delivers_cannot_grow_the_outbox(store):
    """MQTT switched off everywhere: its subscription stays, nobody claims it, the outbox stays bounded."""
    es = EventStore(store.engine)
    mqtt = es.create("mqtt", "mqtt", ["*"], "")
    events = Events(settings(events_max_backlog=5), es)  # no MQTT here
    events.sender = FakeSender()
    events.record([new_event("enroll", {"i": i}) for i in range(30)])
    asyncio.run(events.round())
    assert es.get(mqtt.id).lease_owner is None            # not claimed by a process that cannot deliver it
    assert len(outbox(store)) == 10                        # twice the backlog cap
