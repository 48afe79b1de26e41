"""Events without sockets: signatures, destination checks, the outbox written in the store's transactions, and the
delivery worker (order, back-off, dead letters, replay, caps, leases between two workers) over a fake transport."""
from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from app.core.config import Settings
from app.gallery.events import EventStore, new_event
from app.gallery.models import OutboxEvent
from app.gallery.store import GalleryStore, NewFace, make_engine
from app.services import events as events_module
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


def test_claim_pending_gives_each_subscription_its_own_events(store):
    es = EventStore(store.engine)
    behind = es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    es.append([new_event("enroll", {"i": i}) for i in range(2)])
    ahead = es.create("webhook", "http://127.0.0.1:9/b", ["*"], "s")   # starts after the first two
    replayed = es.create("webhook", "http://127.0.0.1:9/c", ["*"], "s")
    es.append([new_event("enroll", {"i": i}) for i in range(2, 5)])
    first = es.pending(es.get(replayed.id), 1)[0]
    es.give_up(replayed.id, None, first, 3, "HTTP 500", 10)              # a dead letter (nobody holds it yet)
    es.replay(replayed.id)
    got = {sub.id: items for sub, items in es.claim_pending("w1", 30, 10)}
    assert [json.loads(p.body)["data"]["i"] for p in got[behind.id]] == [0, 1, 2, 3, 4]
    assert [json.loads(p.body)["data"]["i"] for p in got[ahead.id]] == [2, 3, 4]
    assert [(p.dead_letter_id is not None, json.loads(p.body)["data"]["i"]) for p in got[replayed.id]] == [(True, 2)]
    assert [len(items) for _, items in es.claim_pending("w1", 30, 2)] == [2, 2, 1]   # the limit, per subscription
    assert es.claim_pending("w2", 30, 10) == []                                        # w1 holds them all


def test_advance_writes_several_cursors_in_one_transaction_and_says_which_lease_was_lost(store):
    es = EventStore(store.engine)
    a = es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    b = es.create("webhook", "http://127.0.0.1:9/b", ["*"], "s")
    es.append([new_event("enroll", {"i": i}) for i in range(3)])
    claimed = es.claim_pending("w1", 30, 10)
    es.release(b.id, "w1")
    assert len(es.claim_pending("w2", 30, 10)) == 1                                    # b went to w2
    commits = []

    def count(_conn):
        commits.append(1)

    sa_event.listen(store.engine, "commit", count)
    try:
        assert es.advance("w1", 30, [(sub.id, items[-1]) for sub, items in claimed]) == [True, False]
    finally:
        sa_event.remove(store.engine, "commit", count)
    assert len(commits) == 1
    assert es.get(a.id).cursor == claimed[0][1][-1].seq and es.get(b.id).cursor < claimed[1][1][-1].seq


def test_a_round_reads_and_writes_as_often_with_six_subscriptions_as_with_two(store, monkeypatch):
    """The worker's database work per round does not grow with the subscriptions that keep up: one read of the
    subscriptions and what they have, one transaction for their cursors."""
    monkeypatch.setattr(events_module, "PERSIST_EVERY_S", 60.0)  # a slow moment must not add a mid-run write

    def statements(n_subs: int) -> tuple[int, int]:
        es = EventStore(store.engine)
        for sub in es.list():
            es.delete(sub.id)
        for i in range(n_subs):
            es.create("webhook", f"http://127.0.0.1:9/{i}", ["*"], "s")
        events = Events(settings(), es)
        events.sender = FakeSender()
        events._last_prune = time.monotonic()  # no prune in the rounds counted
        asyncio.run(events.round())
        events.record([new_event("enroll", {"i": i}) for i in range(3)])
        for sub in es.list():  # the sheds' look at each backlog is every SHED_EVERY_S, not every round
            events._shed_at[sub.id] = time.monotonic()
        seen = {"sql": 0, "commit": 0}

        def count_sql(_conn, _cursor, statement, *_a):
            seen["sql"] += statement.lstrip().upper().startswith("SELECT")

        def count_commit(_conn):
            seen["commit"] += 1

        sa_event.listen(store.engine, "before_cursor_execute", count_sql)
        sa_event.listen(store.engine, "commit", count_commit)
        try:
            assert asyncio.run(events.round()) == n_subs
        finally:
            sa_event.remove(store.engine, "before_cursor_execute", count_sql)
            sa_event.remove(store.engine, "commit", count_commit)
        assert len(events.sender.got) == 3 * n_subs
        return seen["sql"], seen["commit"]

    two, six = statements(2), statements(6)
    assert six == two and two[1] <= 2  # the lease's first write, and the cursors'


class FakeMqtt:
    """What the worker asks of app.services.mqtt.MqttPublisher: `publish_events` answers as told."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def publish_events(self, bodies):
        self.asked.append([json.loads(b)["data"]["i"] for b in bodies])
        return self.answer(len(bodies))


def test_an_mqtt_batch_counts_as_delivered_only_up_to_its_first_failure(store):
    es = EventStore(store.engine)
    sub = es.ensure("mqtt", "mqtt", ["*"])
    mqtt = FakeMqtt(lambda n: [None, None, "MQTT broker did not acknowledge in time"])
    events = Events(settings(events_retry_base_s=60, events_retry_max_s=120), es, mqtt=mqtt)
    events.sender = FakeSender()
    events.record([new_event("enroll", {"i": i}) for i in range(5)])
    asyncio.run(events.round())
    assert mqtt.asked == [[0, 1, 2, 3, 4]]                                   # one batch, in order
    after = es.get(sub.id)
    assert after.cursor == es.pending(after, 10)[0].seq - 1                  # past 0 and 1 only
    assert [json.loads(p.body)["data"]["i"] for p in es.pending(after, 10)] == [2, 3, 4]
    assert after.attempts == 1 and after.next_attempt_at > time.time() + 20  # 2 is retried later, 3 and 4 wait


def test_a_shed_backlog_is_not_delivered(store):
    es = EventStore(store.engine)
    sub = es.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    events = Events(settings(events_max_backlog=5), es)
    events.sender = FakeSender()
    events.record([new_event("enroll", {"i": i}) for i in range(12)])
    asyncio.run(events.round())
    assert [e["data"]["i"] for _, e in events.sender.got] == list(range(7, 12))  # the 7 oldest became dead letters
    assert events.dead_letters(sub.id, 0, 10)["total"] == 7


def test_one_subscription_s_error_does_not_lose_the_others_progress(store):
    es = EventStore(store.engine)
    good = es.create("webhook", "http://127.0.0.1:9/good", ["*"], "s")
    es.create("webhook", "http://127.0.0.1:9/broken", ["*"], "s")

    class Breaks(FakeSender):
        async def send(self, url, *a, **kw):
            if url.endswith("/broken"):
                raise RuntimeError("a bug in one subscription's delivery")
            return await super().send(url, *a, **kw)

    events = Events(settings(), es)
    events.sender = Breaks()
    events.record([new_event("enroll", {"i": i}) for i in range(3)])
    with pytest.raises(RuntimeError, match="one subscription"):
        asyncio.run(events.round())
    assert len(events.sender.got) == 3 and es.backlog(good.id) == 0          # its cursor was written all the same
    events.sender = FakeSender()
    asyncio.run(events.round())
    assert [e["data"]["i"] for _, e in events.sender.got] == [0, 1, 2]       # only the broken one's, once more


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
