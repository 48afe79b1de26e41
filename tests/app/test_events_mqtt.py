"""MQTT against a real Mosquitto (harness.mosquitto): the topics per event and per person, the retained last-seen
state, Home Assistant discovery; the broker stopped and started again: nothing lost. The app in process (fake
networks), its delivery worker on a thread of its own."""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import paho.mqtt.client as paho
import pytest

from harness.mosquitto import Mosquitto, binary
from tests.app.conftest import copied_store
from tests.app.fakes import tiles_png
from tests.app.test_routes import GREY, RED, enroll, make_client

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(binary() is None, reason="mosquitto is not installed (.ci/run installs it as root)")]
OUTAGE_S = float(os.environ.get("FACEID_TEST_MQTT_OUTAGE_S", "3"))  # the figure: 30


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker", user="faceid", password="s3cret").start()
    yield b
    b.stop()


class Listener:
    """A subscriber to everything, with a persistent session (QoS 1): what the broker sent it, in order."""

    def __init__(self, broker: Mosquitto, client_id: str = "listener", clean: bool = False):
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.c.username_pw_set("faceid", "s3cret")
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("#", qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()

    def _on_message(self, c, u, msg):
        with self.lock:
            self.got.append((msg.topic, msg.payload, bool(msg.retain)))

    def topics(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.got if m[0].startswith(prefix)]

    def wait(self, cond, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, [t for t, _, _ in self.got]
            time.sleep(0.05)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def app(migrated_db, tmp_path, broker):
    with copied_store(migrated_db, tmp_path) as store:
        client, service = make_client(store, tmp_path, mqtt_url=broker.url, events_poll_interval_s=0.05,
                                      events_retry_base_s=0.05, events_retry_max_s=1.0)
        loop = asyncio.new_event_loop()
        task = loop.create_task(service.events.run())
        thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.gather(task, return_exceptions=True)),
                                  daemon=True)
        thread.start()
        yield client, service
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        service.close()


def test_topics_retained_state_and_discovery(app, broker):
    client, service = app
    listener = Listener(broker, clean=True)
    try:
        ident = enroll(client, "red", [RED]).json()["identity"]
        listener.wait(lambda: listener.topics(f"homeassistant/sensor/faceid_{ident['id']}/config"))
        config = json.loads(listener.topics("homeassistant/sensor/")[0][1])
        assert config["unique_id"] == f"faceid_{ident['id']}" and config["name"] == "red last seen"
        assert config["state_topic"] == f"faceid/default/person/{ident['id']}/state"
        assert client.post("/identify", files={"file": ("a.png", tiles_png([RED, GREY]), "image/png")}).status_code == 200
        listener.wait(lambda: listener.topics("faceid/default/identify/red") and listener.topics("faceid/default/identify/unknown")
                      and listener.topics(f"faceid/default/person/{ident['id']}/state"))
        event = json.loads(listener.topics("faceid/default/identify/red")[0][1])
        assert event["type"] == "identify.match" and event["data"]["identity"]["label"] == "red"
        assert listener.topics("faceid/default/events/identify.match") and listener.topics("faceid/default/events/enroll")
        state = json.loads(listener.topics(f"faceid/default/person/{ident['id']}/state")[0][1])
        assert state["last_seen"] == event["created_at"] and state["event_id"] == event["id"]
    finally:
        listener.close()
    late = Listener(broker, client_id="late", clean=True)  # a newcomer gets the retained state and discovery
    try:
        late.wait(lambda: late.topics(f"faceid/default/person/{ident['id']}/state")
                  and late.topics(f"homeassistant/sensor/faceid_{ident['id']}/config"))
        assert all(m[2] for m in late.topics("homeassistant/")) and not late.topics("faceid/default/identify/")
    finally:
        late.close()
    watcher = Listener(broker, client_id="watcher", clean=True)
    try:
        assert client.delete(f"/identities/{ident['id']}").status_code == 204
        watcher.wait(lambda: watcher.topics("faceid/default/events/identity.deleted"))
    finally:
        watcher.close()
    gone = Listener(broker, client_id="gone", clean=True)
    try:  # the empty retained config removed the sensor (Home Assistant drops the entity)
        gone.wait(lambda: gone.topics(f"faceid/default/person/{ident['id']}/state"))  # retained ones have come
        assert not gone.topics(f"homeassistant/sensor/faceid_{ident['id']}/config")
    finally:
        gone.close()


def test_a_broker_outage_loses_nothing(app, broker):
    client, service = app
    listener = Listener(broker, client_id="outage-listener")
    try:
        enroll(client, "red", [RED])
        listener.wait(lambda: listener.topics("faceid/default/events/enroll"))
        broker.stop()
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < OUTAGE_S:  # identifications while the broker is away
            assert client.post("/identify", files={"file": ("a.png", tiles_png([RED]), "image/png")}).status_code == 200
            sent += 1
        broker.start()
        listener.wait(lambda: len(listener.topics("faceid/default/events/identify.match")) >= sent, timeout_s=120)
        ids = [json.loads(p)["id"] for _, p, _ in listener.topics("faceid/default/events/identify.match")]
        assert len(set(ids)) == sent  # every one of them (duplicates, if any, recognisable by id)
        made = {json.loads(p)["id"]: json.loads(p)["created_at"] for _, p, _ in
                listener.topics("faceid/default/events/identify.match")}
        first = list(dict.fromkeys(ids))  # first arrivals: the queued events went out in one batch, in order
        assert [made[i] for i in first] == sorted(made[i] for i in first)
        print(f"broker away {OUTAGE_S:.0f} s: {sent} identifications, {len(set(ids))} events after it came back, "
              f"{len(ids) - len(set(ids))} duplicates")
    finally:
        listener.close()


def test_publish_events_sends_a_batch_in_order(broker):
    from app.gallery.events import new_event
    from app.services.mqtt import MqttPublisher

    listener = Listener(broker, client_id="batch-listener", clean=True)
    publisher = MqttPublisher(broker.url)
    try:
        assert publisher.connected.wait(20)
        warm = json.dumps(new_event("model.swapped", {}))
        # the listener's subscription is in place once it gets a message (its SUBACK is not exposed)
        listener.wait(lambda: publisher.publish_events([warm]) == [None] and
                      listener.topics("faceid/default/events/model.swapped"), timeout_s=20)
        events = [new_event("enroll", {"identity": {"id": i, "label": f"p{i}"}}) for i in range(5)]
        assert publisher.publish_events([json.dumps(e) for e in events]) == [None] * 5
        listener.wait(lambda: len(listener.topics("faceid/default/events/enroll")) == 5)
        assert [json.loads(p)["id"] for _, p, _ in listener.topics("faceid/default/events/enroll")] == \
            [e["id"] for e in events]
        broker.stop()
        listener.wait(lambda: not publisher.connected.is_set())  # paho saw the connection close
        out = publisher.publish_events([json.dumps(e) for e in events])
        assert len(out) == 1 and "not connected" in out[0]
    finally:
        publisher.close()
        listener.close()


def test_publish_events_stops_at_the_first_event_not_acknowledged_and_waits_for_it_before_more(broker):
    """paho's acknowledgements replaced by handles that fail for the third event: the answer stops there, and the
    next batch waits for that event's messages (paho would send them again after a reconnect)."""
    from app.gallery.events import new_event
    from app.services.mqtt import MqttPublisher

    class Handle:
        def __init__(self, ok):
            self.ok, self.waited = ok, 0

        def wait_for_publish(self, timeout=None):
            self.waited += 1

        def is_published(self):
            return self.ok

    publisher = MqttPublisher(broker.url)
    try:
        assert publisher.connected.wait(20)
        handles = []

        def publish(topic, payload, qos, retain):  # the first copy of event 2's message is not acknowledged
            first_of_2 = "/events/" in topic and json.loads(payload)["data"]["i"] == 2 and len(handles) == 2
            handles.append(Handle(ok=not first_of_2))
            return handles[-1]

        publisher.client.publish = publish
        bodies = [json.dumps(new_event("enroll", {"i": i})) for i in range(5)]
        out = publisher.publish_events(bodies)
        assert out[:2] == [None, None] and len(out) == 3 and "did not acknowledge" in out[2]
        assert all(h.waited == 0 for h in handles[3:])                   # nothing after the failure was asked
        assert "earlier messages" in publisher.publish_events(bodies[2:])[0]  # still unacknowledged: nothing sent
        assert len(handles) == 5
        handles[2].ok = True                                               # paho delivered it after all
        assert publisher.publish_events(bodies[2:]) == [None, None, None] and len(handles) == 8
    finally:
        publisher.close()
