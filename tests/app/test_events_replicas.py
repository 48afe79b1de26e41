"""Several replicas on one database, each with its own engine and delivery worker on its own thread: each event
reaches each subscription once (leases), in order; on SQLite (one file) and on PostgreSQL."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.gallery.events import EventStore, new_event
from app.gallery.store import make_engine, migrate
from app.services.events import Events
from tests.app.test_events import FakeSender, settings

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'g.db'}"
    return request.getfixturevalue("postgres").create_database()


def test_each_event_once_per_subscription_across_replicas(database_url):
    engines = [make_engine(database_url) for _ in range(3)]
    migrate(engines[0])
    stores = [EventStore(e) for e in engines]
    paths = [f"http://127.0.0.1:9/{i}" for i in range(3)]
    for p in paths:
        stores[0].create("webhook", p, ["*"], "s")
    sender = FakeSender()
    lock = threading.Lock()

    class Shared(FakeSender):  # one receiver for all replicas
        async def send(self, *args, **kw):
            with lock:
                return await FakeSender.send(sender, *args, **kw)

    workers = [Events(settings(events_poll_interval_s=0.01), s) for s in stores]
    for w in workers:
        w.sender = Shared()
    n = 150
    stop = threading.Event()

    def replica(w: Events, k: int):
        async def go():
            for i in range(k, n, len(workers)):  # each replica records its share while all deliver
                w.record([new_event("enroll", {"i": i, "by": k})])
                await w.round()
            while not stop.is_set():
                await w.round()
                await asyncio.sleep(0.005)
        asyncio.run(go())

    threads = [threading.Thread(target=replica, args=(w, k)) for k, w in enumerate(workers)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(sender.got) < n * len(paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a duplicate would have arrived by now (nothing is retried: every send succeeds)
    stop.set()
    for t in threads:
        t.join(30)
    for e in engines:
        e.dispose()
    for p in paths:
        got = [e for url, e in sender.got if url == p]
        assert len(got) == n and len({e["id"] for e in got}) == n, (p, len(got))   # once each, none lost
        seqs = [s for url, s in sender.seqs if url == p]
        assert seqs == sorted(seqs), p                                                # in outbox order
    print(f"{database_url.split(':')[0]}: {len(workers)} replicas, {len(paths)} subscriptions, {n} events: "
          f"{len(sender.got)} deliveries, {len(sender.got) - n * len(paths)} duplicates")


def test_an_event_committed_late_is_not_skipped(postgres):
    """A transaction that took its seq first but commits last: with PostgreSQL's sequences the worker could move
    past it; the outbox lock makes seqs commit in order. (SQLite serialises writers: nothing to test there.)"""
    from app.gallery.events import add_event
    from tests.app.test_events import drain

    database_url = postgres.create_database()
    engine, other = make_engine(database_url, busy_timeout_s=30), make_engine(database_url, busy_timeout_s=30)
    migrate(engine)
    store = EventStore(engine)
    store.create("webhook", "http://127.0.0.1:9/a", ["*"], "s")
    events = Events(settings(), EventStore(other))
    events.sender = FakeSender()
    slow = store.sessions()
    slow.begin()
    add_event(slow, "enroll", {"i": 0})               # seq taken, not committed
    late = threading.Thread(target=store.append, args=([new_event("enroll", {"i": 1})],))
    late.start()                                      # waits for the first (PostgreSQL: the outbox lock)
    asyncio.run(events.round())
    assert events.sender.got == []
    slow.commit()
    slow.close()
    late.join(30)
    drain(events, until=lambda: len(events.sender.got) >= 2)
    assert [e["data"]["i"] for _, e in events.sender.got] == [0, 1]
    engine.dispose()
    other.dispose()
