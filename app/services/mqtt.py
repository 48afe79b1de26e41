"""MQTT: the events on a broker (paho-mqtt), as Double Take does for cameras and Home Assistant.

Topics (prefix `faceid`, collection `default`):
- `faceid/<collection>/events/<type>`: every event, its JSON (QoS 1);
- `faceid/<collection>/identify/<label>`: every match of that person (`unknown` for unknown faces);
- `faceid/<collection>/person/<id>/state`: retained, the person's last sighting (JSON, `last_seen` ISO time);
- `homeassistant/sensor/faceid_<id>/config`: retained Home Assistant discovery, one sensor per enrolled person
  (its state is the last-seen time); an empty retained config removes it when the identity is deleted.
`publish_events` says, per event, None once the broker has acknowledged every message (QoS 1), else why not: the worker
then retries, the outbox holding the events meanwhile.
"""
from __future__ import annotations

import json
import threading
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho

ACK_TIMEOUT_S = 5.0


class MqttPublisher:
    def __init__(self, url: str, prefix: str = "faceid", discovery_prefix: str = "homeassistant"):
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("FACEID_MQTT_URL must be mqtt://[user:pass@]host[:port] or mqtts://...")
        self.prefix, self.discovery = prefix, discovery_prefix
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311)
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            self.client.tls_set()
        self.client.reconnect_delay_set(1, 30)
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: self.connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda c, u, f, rc, p=None: self.connected.clear()
        self.client.connect_async(parts.hostname, parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                                  keepalive=30)
        self.client.loop_start()  # paho's network thread reconnects by itself
        self._lock = threading.Lock()
        self._unacked: list = []  # a failed batch's messages (paho.MQTTMessageInfo), see _settle

    def messages(self, event: dict) -> list[tuple[str, str, bool]]:
        """(topic, payload, retain) for one event."""
        base = f"{self.prefix}/{event.get('collection', 'default')}"
        body = json.dumps(event, separators=(",", ":"), sort_keys=True)
        out = [(f"{base}/events/{event['type']}", body, False)]
        data = event.get("data") or {}
        ident = data.get("identity") or {}
        if event["type"].startswith("identify."):
            label = ident.get("label") if event["type"] == "identify.match" else "unknown"
            out.append((f"{base}/identify/{_topic_part(label or 'unknown')}", body, False))
            if event["type"] == "identify.match" and ident.get("id") is not None:
                state = {"last_seen": event["created_at"], "label": ident.get("label"), "score": data.get("score"),
                         "event_id": event["id"]}
                out.append((f"{base}/person/{ident['id']}/state", json.dumps(state), True))
        elif event["type"] in ("enroll", "identity.updated", "identity.merged") and ident.get("id") is not None:
            out.append(self._discovery(base, ident))
        if event["type"] == "identity.deleted" and ident.get("id") is not None:
            out.append((f"{self.discovery}/sensor/faceid_{ident['id']}/config", "", True))
        if event["type"] == "identity.merged" and (data.get("merged") or {}).get("id") is not None:
            out.append((f"{self.discovery}/sensor/faceid_{data['merged']['id']}/config", "", True))
        return out

    def _discovery(self, base: str, ident: dict) -> tuple[str, str, bool]:
        iid = ident["id"]
        config = {"name": f"{ident.get('label')} last seen", "unique_id": f"faceid_{iid}",
                  "object_id": f"faceid_{iid}", "state_topic": f"{base}/person/{iid}/state",
                  "value_template": "{{ value_json.last_seen }}", "device_class": "timestamp",
                  "json_attributes_topic": f"{base}/person/{iid}/state",
                  "device": {"identifiers": ["faceid"], "name": "faceid", "manufacturer": "faceid"}}
        return f"{self.discovery}/sensor/faceid_{iid}/config", json.dumps(config), True

    def publish_events(self, bodies: list[str]) -> list[str | None]:
        """Publish several events' messages at once, in order, then wait for the acknowledgements event by
        event: None for each event whose messages all arrived, up to the first that failed (why, and nothing
        after it). One TCP connection keeps the order: an event the broker got means it got those before it.
        paho sends a failed batch's unacknowledged messages again after a reconnect; they are waited for before
        anything new goes out (`_settle`), so that a retained state cannot go back in time."""
        if not bodies:
            return []
        if not self.connected.wait(0.5):
            return ["not connected to the MQTT broker"]
        problem = self._settle()
        if problem:
            return [problem]
        with self._lock:
            sent = [[self.client.publish(t, p, qos=1, retain=r) for t, p, r in self.messages(json.loads(body))]
                    for body in bodies]
        out: list[str | None] = []
        for k, infos in enumerate(sent):
            error = _acknowledged(infos)
            out.append(error)
            if error is not None:
                self._unacked = [info for later in sent[k:] for info in later]
                break
        return out

    def _settle(self) -> str | None:
        """Wait for an earlier batch's messages that were not acknowledged (paho sends them again after a
        reconnect); why not, if they still are not."""
        for info in self._unacked:
            if info.is_published():
                continue
            try:
                info.wait_for_publish(ACK_TIMEOUT_S)
            except (RuntimeError, ValueError):  # never queued: paho will not send it again
                continue
            if not info.is_published():
                return "MQTT broker has not acknowledged earlier messages yet"
        self._unacked = []
        return None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _acknowledged(infos: list) -> str | None:
    """None when the broker acknowledged every one of an event's messages; else why not."""
    for info in infos:
        try:
            info.wait_for_publish(ACK_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            return f"MQTT publish failed: {exc}"
        if not info.is_published():
            return "MQTT broker did not acknowledge in time"
    return None


def _topic_part(label: str) -> str:
    """A label as one topic level: MQTT's wildcards and separators replaced."""
    return "".join("_" if ch in "/#+" else ch for ch in label) or "_"
