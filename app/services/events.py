"""Events: what the service records (`Events.record`, one insert off the event loop; the store's writes add
theirs in their own transactions) and the worker that delivers the outbox at least once, in order per
subscription, to webhooks and MQTT (`Events.run`, started by the lifespan).

Per subscription: the events after its cursor, oldest first; a failed delivery is retried after
`events_retry_base_s * 2**(attempts-1)` (capped at `events_retry_max_s`, times a random 0.5..1 factor) and
nothing newer is sent meanwhile; after `events_max_attempts` the event is a dead letter and the cursor moves on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable

from prometheus_client import Counter
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError

from app.core.config import Settings
from app.core.errors import AppError, outage_reason
from app.gallery.events import EventStore, Pending, new_event
from app.gallery.models import OutboxEvent
from app.services.webhooks import WebhookSender, new_secret, validate_subscription

log = logging.getLogger(__name__)

EVENT_TYPES = ("identify.match", "identify.unknown", "enroll", "identity.updated", "identity.deleted",
               "identity.merged", "model.swapped", "train.finished")
DELIVERIES = Counter("faceid_event_deliveries_total", "event deliveries tried", ["kind", "result"])
DROPPED = Counter("faceid_events_dropped_total", "events given up on for good", ["reason"])
DEAD = Counter("faceid_event_dead_letters_total", "events that became dead letters", ["kind"])
BATCH = 100  # events per claim
SHED_EVERY_S = 5.0  # how often a subscription's backlog is checked against its cap
PERSIST_EVERY_S = 0.5  # a run of successful deliveries writes its cursor at least this often
# How long a process trusts what it last read of the subscriptions' event types (the others' new subscriptions
# are seen within this; its own at once). Identify events nobody wants are not written at all.
WANTED_CACHE_S = 2.0


def wants(events: list[str], type_: str) -> bool:
    return "*" in events or type_ in events


def identify_events(model_version: str, image_sha256: str, faces, decisions, probe_ids) -> list[dict]:
    """One event per searched face that was decided (match or unknown; low-quality faces are not events). Never
    the embedding."""
    out = []
    for i, (f, d, pid) in enumerate(zip(faces, decisions, probe_ids)):
        if d.status not in ("match", "unknown"):
            continue
        out.append(new_event(f"identify.{d.status}", {
            "face_index": i, "probe_id": pid, "box": [round(float(x), 1) for x in f.box],
            "detection_score": round(float(f.score), 4), "decision": d.status,
            "identity": {"id": d.identity.identity_id, "label": d.identity.label} if d.identity else None,
            "score": None if d.score is None else round(float(d.score), 6),
            "threshold": None if d.threshold is None else round(float(d.threshold), 6),
            "model_version": model_version, "image_sha256": image_sha256}))
    return out


class Events:
    def __init__(self, settings: Settings, store: EventStore, mqtt=None):
        self.settings = settings
        self.store = store
        self.mqtt = mqtt  # app.services.mqtt.MqttPublisher when FACEID_MQTT_URL is set: made by the worker (run)
        self.owner = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.wake = asyncio.Event()
        self.sender: WebhookSender | None = None  # made in the worker's loop (tests put a fake one first)
        self._last_prune = 0.0
        self._shed_at: dict[int, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the worker's
        self._wanted: tuple[float, list[str]] | None = None  # (read at, event types wanted), see wanted_types
        # collections whose own outbox has events to relay here (app/services/collections.py), relayed each round
        self.relays: set = set()
        # a worker in another process (app/services/delivery.py): poke() wakes it too
        self.forward: Callable[[], None] | None = None
        self._subscribed = False  # this process added a subscription since relay_forever last looked

    def record(self, events: list[dict]) -> None:
        """Write events that have no transaction of their own (run it off the event loop)."""
        self.store.append(events)

    async def wanted_types(self) -> list[str]:
        """The event types some subscription wants (MQTT's is every type), read at most every WANTED_CACHE_S.
        Only those of identify's events are written (FaceService.identify): a new subscription starts after the
        newest event, so an event written while none wants it would never be delivered, and an identify with
        no webhook and no MQTT writes nothing."""
        now = time.monotonic()
        if self._wanted is None or now - self._wanted[0] > WANTED_CACHE_S:
            subs = await asyncio.to_thread(self.store.list)
            self._wanted = (now, sorted({t for s in subs for t in (s.events or [])} | ({"*"} if self.settings.mqtt_url else set())))
        return self._wanted[1]

    def subscriptions_changed(self) -> None:
        """This process added or removed a subscription: read them again before the next identify (and wake
        `relay_forever`, which starts the worker process for a first subscription)."""
        self._wanted = None
        self._subscribed = True
        self._wake()

    def poke(self) -> None:
        """Wake this process's worker now (from any thread or loop) rather than at its next poll."""
        self._wake()
        if self.forward is not None:
            self.forward()

    def _wake(self) -> None:
        """Wake `run` or `relay_forever` on their loop, from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake.set)

    # --- webhooks, for the routes (run off the event loop) --------------------------------------------------
    def create_webhook(self, url: str, events: list[str], secret: str | None) -> dict:
        validate_subscription(url, events, set(EVENT_TYPES), self.settings.webhook_allowed_hosts)
        sub = self.store.create("webhook", url, sorted(set(events)), secret or new_secret())
        self.subscriptions_changed()
        return {**self.webhook_public(sub), "secret": sub.secret}

    def webhook_public(self, sub) -> dict:
        _, dead = self.store.dead_letters(sub.id, 0, 0)
        return {"id": sub.id, "url": sub.url, "events": sub.events, "created_at": sub.created_at,
                "backlog": self.store.backlog(sub.id), "attempts": sub.attempts,
                "next_attempt_at": sub.next_attempt_at, "last_error": sub.last_error, "dead_letters": dead}

    def webhooks(self) -> list[dict]:
        return [self.webhook_public(s) for s in self.store.list("webhook")]

    def webhook(self, sub_id: int):
        sub = self.store.get(sub_id)
        if sub is None or sub.kind != "webhook":
            raise AppError(404, "unknown_webhook", f"webhook {sub_id} does not exist")
        return sub

    def delete_webhook(self, sub_id: int) -> None:
        self.webhook(sub_id)
        self.store.delete(sub_id)
        self.subscriptions_changed()

    def dead_letters(self, sub_id: int, offset: int, limit: int) -> dict:
        self.webhook(sub_id)
        rows, total = self.store.dead_letters(sub_id, offset, limit)
        items = [{"id": d.id, "event_id": d.event_id, "type": d.type, "attempts": d.attempts,
                  "last_error": d.last_error, "replay": d.replay, "created_at": d.created_at,
                  "event": json.loads(d.body)} for d in rows]
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    def replay(self, sub_id: int, ids: list[int] | None) -> int:
        self.webhook(sub_id)
        return self.store.replay(sub_id, ids)

    # --- the worker ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled: a round now, then whenever this process records an event or every
        `events_poll_interval_s` (events other processes wrote)."""
        s = self.settings
        self._loop = asyncio.get_running_loop()
        if s.mqtt_url and self.mqtt is None:
            from app.services.mqtt import MqttPublisher

            self.mqtt = MqttPublisher(s.mqtt_url, s.mqtt_topic_prefix, s.mqtt_discovery_prefix)
        if self.mqtt is not None:
            await asyncio.to_thread(self.store.ensure, "mqtt", "mqtt", ["*"])
        try:
            while True:
                self.wake.clear()
                try:
                    await self.round()
                except asyncio.CancelledError:
                    raise
                except DBAPIError as exc:  # the database is away (an outage): one line, the next round retries
                    log.warning("event delivery round failed, database unavailable: %s", outage_reason(exc))
                except Exception:  # noqa: BLE001 - a database hiccup must not end delivery for good
                    log.warning("event delivery round failed", exc_info=True)
                await asyncio.sleep(s.events_round_interval_s)  # the events of several requests go in one round
                try:
                    await asyncio.wait_for(self.wake.wait(), s.events_poll_interval_s)
                except TimeoutError:
                    pass
        finally:
            await self.aclose()

    async def relay_collections(self) -> int:
        """Move the collections' outboxes that have events into this one (app/services/collections.py)."""
        moved = 0
        while self.relays:
            source = self.relays.pop()
            try:
                moved += await asyncio.to_thread(source.relay)
            except BaseException:
                self.relays.add(source)  # the next round tries again
                raise
        return moved

    async def relay_forever(self, start_worker: Callable[[], None] | None = None) -> None:
        """What this process does when another one delivers (app/services/delivery.py): the collections' events
        relayed to the outbox the worker reads, and the worker poked after each relay. `start_worker` is called
        (in a thread) once there is something to deliver to: MQTT, or a subscription (looked for every
        WANTED_CACHE_S until then, and when this process adds one); a server nobody subscribed to runs no worker."""
        self._loop = asyncio.get_running_loop()
        looked = float("-inf")
        while True:
            self.wake.clear()
            try:
                if start_worker is not None and (self._subscribed or time.monotonic() - looked > WANTED_CACHE_S):
                    looked, self._subscribed = time.monotonic(), False
                    if self.settings.mqtt_url or await asyncio.to_thread(self.store.list):
                        await asyncio.to_thread(start_worker)
                        start_worker = None
                if await self.relay_collections() and self.forward is not None:
                    self.forward()
            except asyncio.CancelledError:
                raise
            except DBAPIError as exc:  # the database is away (an outage): one line, the next poll retries
                log.warning("events: database unavailable (looking for subscriptions, relaying collections): %s",
                            outage_reason(exc))
            except Exception:  # noqa: BLE001 - the next poke or poll tries again
                log.warning("looking for subscriptions or relaying the collections' events failed", exc_info=True)
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.events_poll_interval_s)
            except TimeoutError:
                pass

    async def round(self) -> int:
        """Lease every due subscription no other worker holds and deliver what it has; returns how many."""
        s = self.settings
        if self.sender is None:
            self.sender = WebhookSender(s.webhook_timeout_s, s.webhook_allowed_hosts)
        await self.relay_collections()
        kinds = ("webhook", "mqtt") if self.mqtt is not None else ("webhook",)
        claimed = await asyncio.to_thread(self.store.claim_pending, self.owner, s.events_lease_s, BATCH, None, kinds)
        if claimed:
            await self._deliver_all(claimed)
        if time.monotonic() - self._last_prune > 5:
            # twice the backlog cap: a subscription that far behind sheds (dead letters) on its own first
            pruned = await asyncio.to_thread(self.store.prune, 2 * s.events_max_backlog)
            if pruned:
                log.debug("pruned %d delivered events from the outbox", pruned)
            self._last_prune = time.monotonic()
        return len(claimed)

    async def _deliver_all(self, claimed: list) -> None:
        """Deliver each claimed subscription's items concurrently. The cursors of the runs that ended are written
        together (one transaction) every PERSIST_EVERY_S while others still deliver, and at the end: a fast
        subscription's progress and lease do not wait for a slow receiver. One subscription's error does not
        lose the others' progress; the first is raised afterwards."""
        s = self.settings
        tasks = {asyncio.ensure_future(self._deliver(sub, items)): sub for sub, items in claimed}
        waiting, errors = set(tasks), []
        try:
            while waiting:
                finished, waiting = await asyncio.wait(waiting, timeout=PERSIST_EVERY_S)
                done = []
                for task in finished:
                    if task.exception() is not None:
                        errors.append(task.exception())
                    elif task.result() is not None:
                        done.append((tasks[task].id, task.result()))
                if done:
                    kept = await asyncio.to_thread(self.store.advance, self.owner, s.events_lease_s, done)
                    for (sub_id, _), ok in zip(done, kept):
                        if not ok:
                            log.debug("subscription %s: lease lost before its cursor was written (another worker "
                                      "delivers it again from there)", sub_id)
        except BaseException:
            for task in waiting:
                task.cancel()
            raise
        if errors:
            raise errors[0]

    async def aclose(self) -> None:
        """Give back this worker's leases (another replica takes over at once) and close the HTTP client."""
        try:
            await asyncio.to_thread(self.store.release_all, self.owner)
        except Exception:  # noqa: BLE001 - shutting down: the leases run out by themselves
            log.warning("could not give back the event leases", exc_info=True)
        if self.sender is not None:
            await self.sender.aclose()
            self.sender = None

    async def _shed(self, sub) -> bool:
        """Whether events were shed (the subscription's cursor moved)."""
        s = self.settings
        if time.monotonic() - self._shed_at.get(sub.id, 0.0) < SHED_EVERY_S:
            return False
        self._shed_at[sub.id] = time.monotonic()
        if sub.kind == "webhook":
            shed, dropped = await asyncio.to_thread(self.store.shed_backlog, sub, self.owner, s.events_max_backlog,
                                                    lambda t: wants(sub.events, t), s.events_max_dead_letters)
            if shed:
                log.warning("webhook %s was %d events too far behind: oldest made dead letters", sub.id, shed)
                DEAD.labels(sub.kind).inc(shed)
                DROPPED.labels("dead_letter_cap").inc(dropped)
            return bool(shed)
        elif sub.kind == "mqtt":  # no dead letters: the outbox is the broker outage's queue, its cap the backlog's
            shed, _ = await asyncio.to_thread(self.store.shed_backlog, sub, self.owner, s.events_max_backlog,
                                              lambda t: False, 0)
            if shed:
                DROPPED.labels("mqtt_backlog").inc(shed)
            return bool(shed)
        return False

    async def _deliver(self, sub, items: list[Pending]) -> Pending | None:
        """Send `sub`'s pending `items` (read by `claim_pending`) in order until one fails. Returns the last of a
        run of successes whose cursor is still to be written (`round` writes the round's in one transaction);
        a run longer than PERSIST_EVERY_S writes its own on the way, and a failure writes it before it is
        recorded: a crash re-delivers at most that run. The lease is kept afterwards (no write while idle);
        `aclose` gives it back. MQTT publishes all the items in one trip to paho's thread (`publish_events`)."""
        s = self.settings
        if await self._shed(sub):
            items = await asyncio.to_thread(self.store.pending, sub, BATCH)
        attempts, passed, persisted_at = sub.attempts, None, time.monotonic()
        mqtt_outcomes: dict[int, str | None] = {}
        if sub.kind == "mqtt" and self.mqtt is not None:
            wanted = [i for i, item in enumerate(items)
                      if wants(sub.events, item.type) or item.dead_letter_id is not None]
            if wanted:
                results = await asyncio.to_thread(self.mqtt.publish_events, [items[i].body for i in wanted])
                mqtt_outcomes = dict(zip(wanted, results))  # stops after the first failure: nothing later is asked

        async def persist(item) -> bool:
            return await asyncio.to_thread(self.store.done, sub.id, self.owner, item, s.events_lease_s)

        for i, item in enumerate(items):
            error = None
            if wants(sub.events, item.type) or item.dead_letter_id is not None:
                if sub.kind == "mqtt":  # published above; past the first failure nothing is asked (we stop there)
                    error = mqtt_outcomes.get(i, "no transport for this subscription in this process")
                else:
                    error = await self._send(sub, item)
                DELIVERIES.labels(sub.kind, "ok" if error is None else "failed").inc()
            if error is None:
                attempts = 0
                if item.dead_letter_id is None:
                    passed = item
                    if time.monotonic() - persisted_at < PERSIST_EVERY_S:
                        continue
                if not await persist(item):
                    return None  # the lease went to another worker
                passed, persisted_at = None, time.monotonic()
                continue
            if passed is not None and not await persist(passed):
                return None
            passed = None
            attempts += 1
            if attempts >= s.events_max_attempts and sub.kind == "webhook":
                dropped = await asyncio.to_thread(self.store.give_up, sub.id, self.owner, item, attempts, error,
                                                  s.events_max_dead_letters)
                DEAD.labels(sub.kind).inc()
                DROPPED.labels("dead_letter_cap").inc(dropped)
                log.warning("subscription %s: event %s is a dead letter after %d tries (%s)", sub.id,
                            item.event_id, attempts, error)
                attempts = 0
                continue
            delay = min(s.events_retry_max_s, s.events_retry_base_s * 2 ** (attempts - 1))
            delay *= random.uniform(0.5, 1.0)
            await asyncio.to_thread(self.store.retry_later, sub.id, self.owner, attempts, time.time() + delay, error)
            return None
        return passed

    async def _send(self, sub, item: Pending) -> str | None:
        if sub.kind == "webhook":
            return await self.sender.send(sub.url, sub.secret, item.event_id, item.type, item.body, item.seq)
        return "no transport for this subscription in this process"


class CollectionEvents:
    """A collection's side of the service's events: what it records goes to the default's outbox, named by the
    collection; what its store wrote in its own outbox is relayed there (`relay`) by the delivery worker."""

    def __init__(self, name: str, shared: Events, store):
        from sqlalchemy import event

        self.name, self.shared, self.store = name, shared, store
        event.listen(store.sessions, "after_commit", self._after_commit)  # whatever wrote them, relayed soon

    def _after_commit(self, session) -> None:
        if session.info.pop("faceid_events_added", False):
            self.poke()

    def record(self, events: list[dict]) -> None:
        for e in events:
            e["collection"] = self.name
        self.shared.record(events)

    async def wanted_types(self) -> list[str]:
        return await self.shared.wanted_types()

    def poke(self) -> None:
        self.shared.relays.add(self)
        self.shared.poke()

    def relay(self, batch: int = 500) -> int:
        """Move this collection's outbox to the default's, in order, each event once (blocking)."""
        moved = 0
        while True:
            with self.store.sessions() as s:
                rows = s.execute(select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.type, OutboxEvent.body)
                                 .order_by(OutboxEvent.seq).limit(batch)).all()
            if not rows:
                return moved
            events = [{**json.loads(r.body), "collection": self.name} for r in rows]
            self.shared.store.append_new(events)  # an event already relayed (a crash after this) is skipped
            with self.store.sessions() as s, s.begin():
                s.execute(delete(OutboxEvent).where(OutboxEvent.seq <= rows[-1].seq))
            moved += len(rows)
