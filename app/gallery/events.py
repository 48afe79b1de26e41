"""The event outbox and its subscriptions, in the gallery's database.

`add_event(session, type, data)` writes an event inside a caller's transaction (the store's writes), so the
change and the event commit together or not at all. `EventStore` is what the delivery worker
(app/services/events.py) reads and updates: each subscription has a cursor (the last outbox seq it handled)
and a lease, so one worker among many replicas delivers it, in order.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.gallery.models import DeadLetter, OutboxEvent, Subscription

OUTBOX_LOCK_KEY = 0x6F757462  # PostgreSQL advisory lock held by each transaction that writes events
COLLECTION = "default"  # what a store's events name; another collection's are renamed when relayed
# (app/services/collections.py)


def new_event(type_: str, data: dict) -> dict:
    """An event as delivered: a unique id receivers deduplicate by, its type, when, the collection, the data."""
    return {"id": str(uuid.uuid4()), "type": type_, "created_at": datetime.now(timezone.utc).isoformat(),
            "collection": COLLECTION, "data": data}


def _row(event: dict) -> dict:
    return {"event_id": event["id"], "type": event["type"], "created_at": time.time(),
            "body": json.dumps(event, separators=(",", ":"), sort_keys=True)}


def _in_commit_order(s: Session) -> None:
    """PostgreSQL: take the outbox's lock (until this transaction ends) before taking seqs, so seqs commit in
    order. Without it a transaction holding seq 10 could commit after one holding 11, once a worker's cursor had
    passed 11: event 10 would never be delivered. (SQLite writers are serialised already.)"""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_advisory_xact_lock(OUTBOX_LOCK_KEY)))


def add_event(s: Session, type_: str, data: dict) -> dict:
    """Write one event in the caller's transaction."""
    event = new_event(type_, data)
    add_events(s, [event])
    return event


def add_events(s: Session, events: list[dict]) -> None:
    """Write events (`new_event`s) in the caller's transaction."""
    if events:
        _in_commit_order(s)
        s.execute(insert(OutboxEvent), [_row(e) for e in events])
        s.info["faceid_events_added"] = True  # a collection's store relays them after the commit (CollectionEvents)


@dataclass
class Pending:
    """One thing to deliver: an outbox event (`seq`) or a dead letter queued again (`dead_letter_id`)."""
    event_id: str
    type: str
    body: str
    seq: int | None = None
    dead_letter_id: int | None = None
    attempts: int = 0


def relax(engine: Engine) -> Engine:
    """The delivery worker's engine: its commits (cursors, leases, dead letters) need not wait for the disk. A
    power cut may lose the last ones: events delivered again, never lost (SQLite WAL with synchronous=NORMAL;
    PostgreSQL synchronous_commit off). What the gallery and the outbox inserts commit stays fully durable."""
    from sqlalchemy import event as sa_event

    @sa_event.listens_for(engine, "connect")
    def _relaxed(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL" if engine.dialect.name == "sqlite" else "SET synchronous_commit TO off")
        cur.close()
        if engine.dialect.name == "postgresql":
            dbapi_conn.commit()
    return engine


class EventStore:
    def __init__(self, engine: Engine, worker_engine: Engine | None = None):
        """`engine`: the gallery's (outbox inserts, subscriptions); `worker_engine`: the delivery worker's
        (`relax`ed; default: the same)."""
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.work = sessionmaker(worker_engine or engine, expire_on_commit=False)

    def append(self, events: list[dict]) -> None:
        """Events with no transaction of their own (identify, swaps, training): one insert."""
        if events:
            with self.sessions() as s, s.begin():
                add_events(s, events)

    def append_new(self, events: list[dict]) -> None:
        """`append`, skipping events whose id is in the outbox already (a collection's relay run twice)."""
        if events:
            with self.sessions() as s, s.begin():
                have = set(s.scalars(select(OutboxEvent.event_id)
                                     .where(OutboxEvent.event_id.in_([e["id"] for e in events]))))
                add_events(s, [e for e in events if e["id"] not in have])

    def last_seq(self, s: Session) -> int:
        return s.scalar(select(func.max(OutboxEvent.seq))) or 0

    # --- subscriptions ---------------------------------------------------------------------------------
    def create(self, kind: str, url: str, events: list[str], secret: str) -> Subscription:
        """A new subscription starts after the newest event: it gets what happens from now on."""
        with self.sessions() as s, s.begin():
            sub = Subscription(kind=kind, url=url, events=events, secret=secret, cursor=self.last_seq(s),
                               attempts=0, next_attempt_at=0.0, lease_until=0.0, created_at=time.time())
            s.add(sub)
            s.flush()
            return sub

    def ensure(self, kind: str, url: str, events: list[str]) -> Subscription:
        """The one subscription of `kind` (MQTT), created on first start; kept across restarts (its cursor)."""
        with self.sessions() as s:
            sub = s.scalar(select(Subscription).where(Subscription.kind == kind).order_by(Subscription.id))
        return sub or self.create(kind, url, events, "")

    def list(self, kind: str | None = None) -> list[Subscription]:
        with self.sessions() as s:
            q = select(Subscription).order_by(Subscription.id)
            return list(s.scalars(q.where(Subscription.kind == kind) if kind else q))

    def get(self, sub_id: int) -> Subscription | None:
        with self.sessions() as s:
            return s.get(Subscription, sub_id)

    def delete(self, sub_id: int) -> bool:
        with self.sessions() as s, s.begin():
            s.execute(delete(DeadLetter).where(DeadLetter.subscription_id == sub_id))
            return s.execute(delete(Subscription).where(Subscription.id == sub_id)).rowcount == 1

    def backlog(self, sub_id: int) -> int:
        with self.sessions() as s:
            cursor = s.scalar(select(Subscription.cursor).where(Subscription.id == sub_id))
            return 0 if cursor is None else s.scalar(select(func.count()).where(OutboxEvent.seq > cursor)) or 0

    # --- the worker's side -----------------------------------------------------------------------------
    def claim(self, owner: str, lease_s: float, now: float | None = None,
              kinds: tuple[str, ...] = ("webhook",)) -> list[Subscription]:
        """Subscriptions of `kinds` (what this process can deliver) due for delivery that no other worker holds,
        leased to `owner` (`claim_pending` without reading what they have)."""
        return [sub for sub, _ in self.claim_pending(owner, lease_s, 0, now, kinds)]

    def claim_pending(self, owner: str, lease_s: float, limit: int, now: float | None = None,
                      kinds: tuple[str, ...] = ("webhook",)) -> list[tuple[Subscription, list[Pending]]]:
        """The worker's round in one trip: the subscriptions it may deliver now (`claim`) and, for each, up to
        `limit` things to deliver (`pending`). The conditional UPDATE is atomic on both databases (PostgreSQL
        re-checks the WHERE after a concurrent update commits). A lease this owner holds with at least half its
        time left is not written again (each delivery renews it: `advance`): a worker that keeps up writes
        nothing here, and reads the subscriptions and what they have in one session."""
        now = time.time() if now is None else now
        free = (Subscription.lease_until < now) | (Subscription.lease_owner == owner)
        due = [Subscription.next_attempt_at <= now, free, Subscription.kind.in_(kinds)]
        with self.work() as s:  # a read first: no write at all while nothing is waiting
            last = self.last_seq(s)
            replays = select(DeadLetter.subscription_id).where(DeadLetter.replay.is_(True))
            subs = list(s.scalars(select(Subscription).where(
                *due, (Subscription.cursor < last) | Subscription.id.in_(replays)).order_by(Subscription.id)))
            held = [sub for sub in subs if sub.lease_owner == owner and sub.lease_until >= now + lease_s / 2]
            ids = [sub.id for sub in subs if sub not in held]
            if not ids:
                return self._with_pending(s, held, limit)
        until = now + lease_s
        with self.work() as s, s.begin():
            s.execute(update(Subscription).where(Subscription.id.in_(ids), *due)
                      .values(lease_owner=owner, lease_until=until))
            taken = list(s.scalars(select(Subscription).where(Subscription.id.in_(ids), Subscription.lease_owner == owner,
                                                              Subscription.lease_until == until)))
        # read after the lease's commit (SQLite's write lock is not held over the reads); the cursors of
        # subscriptions this owner holds move only by its own writes
        with self.work() as s:
            return self._with_pending(s, sorted(held + taken, key=lambda sub: sub.id), limit)

    @staticmethod
    def _with_pending(s: Session, subs: list[Subscription], limit: int) -> list[tuple[Subscription, list[Pending]]]:
        """`pending` of each of `subs` (held by the caller, so their cursors are current): one read of the dead
        letters queued again, and one of the outbox per distinct cursor (one, for subscriptions that keep up)."""
        if not subs or limit <= 0:
            return [(sub, []) for sub in subs]
        replayed: dict[int, list[Pending]] = {}
        for sub_id in s.scalars(select(DeadLetter.subscription_id).distinct().where(
                DeadLetter.subscription_id.in_([sub.id for sub in subs]), DeadLetter.replay.is_(True))):
            replayed[sub_id] = [Pending(r[1], r[2], r[3], dead_letter_id=r[0], attempts=0) for r in s.execute(
                select(DeadLetter.id, DeadLetter.event_id, DeadLetter.type, DeadLetter.body)
                .where(DeadLetter.subscription_id == sub_id, DeadLetter.replay.is_(True))
                .order_by(DeadLetter.id).limit(limit))]
        after: dict[int, list[Pending]] = {}
        for cursor in {sub.cursor for sub in subs if sub.id not in replayed}:
            after[cursor] = [Pending(r[1], r[2], r[3], seq=r[0]) for r in s.execute(
                select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.type, OutboxEvent.body)
                .where(OutboxEvent.seq > cursor).order_by(OutboxEvent.seq).limit(limit))]
        return [(sub, replayed[sub.id] if sub.id in replayed else list(after[sub.cursor])) for sub in subs]

    def release_all(self, owner: str) -> None:
        with self.work() as s, s.begin():
            s.execute(update(Subscription).where(Subscription.lease_owner == owner).values(lease_until=0.0,
                                                                                            lease_owner=None))

    def release(self, sub_id: int, owner: str) -> None:
        with self.work() as s, s.begin():
            s.execute(update(Subscription).where(Subscription.id == sub_id, Subscription.lease_owner == owner)
                      .values(lease_until=0.0, lease_owner=None))

    def pending(self, sub: Subscription, limit: int) -> list[Pending]:
        """Dead letters queued again first (oldest first), then the outbox after the cursor (read again: a shed may
        have moved it), in order. Events of types the subscription does not want come back too (`type` says so):
        the cursor moves past them."""
        with self.work() as s:
            current = s.get(Subscription, sub.id)
            return [] if current is None else self._with_pending(s, [current], limit)[0][1]

    def _held(self, sub_id: int, owner: str):
        return (Subscription.id == sub_id) & (Subscription.lease_owner == owner)

    def done(self, sub_id: int, owner: str, item: Pending, lease_s: float) -> bool:
        """`item` was delivered (or is not wanted): move past it and renew the lease. False when the lease was
        lost (another worker holds the subscription now: stop)."""
        return self.advance(owner, lease_s, [(sub_id, item)])[0]

    def advance(self, owner: str, lease_s: float, done: list[tuple[int, Pending]]) -> list[bool]:
        """`done` for several subscriptions in one transaction (a worker's round); per item, whether this owner
        still held the subscription (False: nothing written, another worker delivers it from its cursor)."""
        until = time.time() + lease_s
        out = []
        with self.work() as s, s.begin():
            for sub_id, item in done:
                values = {} if item.dead_letter_id is not None else {"cursor": item.seq}
                n = s.execute(update(Subscription).where(self._held(sub_id, owner))
                              .values(**values, attempts=0, last_error=None, lease_until=until)
                              .execution_options(synchronize_session=False)).rowcount
                if n == 1 and item.dead_letter_id is not None:
                    s.execute(delete(DeadLetter).where(DeadLetter.id == item.dead_letter_id)
                              .execution_options(synchronize_session=False))
                out.append(n == 1)
        return out

    def retry_later(self, sub_id: int, owner: str, attempts: int, next_attempt_at: float, error: str) -> None:
        with self.work() as s, s.begin():
            s.execute(update(Subscription).where(self._held(sub_id, owner))
                      .values(attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:500],
                              lease_until=0.0, lease_owner=None))

    def give_up(self, sub_id: int, owner: str, item: Pending, attempts: int, error: str, cap: int) -> int:
        """`item` becomes a dead letter (a replayed one stays one, no longer queued) and the subscription moves
        on. Dead letters past `cap` go, oldest first; returns how many went."""
        with self.work() as s, s.begin():
            if item.dead_letter_id is not None:
                s.execute(update(DeadLetter).where(DeadLetter.id == item.dead_letter_id)
                          .values(replay=False, attempts=DeadLetter.attempts + attempts, last_error=error[:500]))
                values = {}
            else:
                s.add(DeadLetter(subscription_id=sub_id, event_id=item.event_id, type=item.type, body=item.body,
                                 attempts=attempts, last_error=error[:500], replay=False, created_at=time.time()))
                values = {"cursor": item.seq}
            s.execute(update(Subscription).where(self._held(sub_id, owner))
                      .values(**values, attempts=0, last_error=error[:500]))
            s.flush()
            return self._trim(s, sub_id, cap)

    @staticmethod
    def _trim(s: Session, sub_id: int, cap: int) -> int:
        ids = list(s.scalars(select(DeadLetter.id).where(DeadLetter.subscription_id == sub_id)
                             .order_by(DeadLetter.id.desc()).offset(cap)))
        if ids:
            s.execute(delete(DeadLetter).where(DeadLetter.id.in_(ids)))
        return len(ids)

    def shed_backlog(self, sub: Subscription, owner: str, max_backlog: int, wanted, cap: int) -> tuple[int, int]:
        """A subscription more than `max_backlog` events behind (a dead receiver) gives up on the oldest: those it
        wants become dead letters (then capped). Returns (events shed, dead letters dropped)."""
        with self.work() as s, s.begin():
            cursor = s.scalar(select(Subscription.cursor).where(self._held(sub.id, owner)))
            if cursor is None:
                return 0, 0
            behind = s.scalar(select(func.count()).where(OutboxEvent.seq > cursor)) or 0
            if behind <= max_backlog:
                return 0, 0
            excess = behind - max_backlog
            rows = s.execute(select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.type, OutboxEvent.body)
                             .where(OutboxEvent.seq > cursor).order_by(OutboxEvent.seq).limit(excess)).all()
            now = time.time()
            dead = [{"subscription_id": sub.id, "event_id": r[1], "type": r[2], "body": r[3], "attempts": 0,
                     "last_error": "dropped: the subscription was too far behind", "replay": False,
                     "created_at": now} for r in rows if wanted(r[2])][-cap:]
            if dead:
                s.execute(insert(DeadLetter), dead)
            s.execute(update(Subscription).where(Subscription.id == sub.id).values(cursor=rows[-1][0], attempts=0))
            s.flush()
            return len(rows), self._trim(s, sub.id, cap)

    def prune(self, keep_at_most: int | None = None) -> int:
        """Delete outbox events every subscription has passed (all of them when there is none), and any beyond the
        newest `keep_at_most` (a subscription no process delivers any more, e.g. MQTT switched off everywhere,
        must not keep the outbox growing)."""
        with self.work() as s, s.begin():
            last = self.last_seq(s)
            low = s.scalar(select(func.min(Subscription.cursor)))
            low = last if low is None else low
            if keep_at_most is not None:
                low = max(low, last - keep_at_most)
            return s.execute(delete(OutboxEvent).where(OutboxEvent.seq <= low)).rowcount

    # --- dead letters ----------------------------------------------------------------------------------
    def dead_letters(self, sub_id: int, offset: int, limit: int) -> tuple[list[DeadLetter], int]:
        with self.sessions() as s:
            q = select(DeadLetter).where(DeadLetter.subscription_id == sub_id)
            rows = list(s.scalars(q.order_by(DeadLetter.id).offset(offset).limit(limit)))
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            return rows, total

    def replay(self, sub_id: int, ids: list[int] | None = None) -> int:
        """Queue dead letters again (all of the subscription's, or `ids`); delivered before newer events."""
        with self.sessions() as s, s.begin():
            q = update(DeadLetter).where(DeadLetter.subscription_id == sub_id)
            if ids is not None:
                q = q.where(DeadLetter.id.in_(ids))
            n = s.execute(q.values(replay=True)).rowcount
            s.execute(update(Subscription).where(Subscription.id == sub_id).values(next_attempt_at=0.0))
            return n
