"""Events end to end on real uvicorn servers with real weights. Prints JSON.

`delivery` (issue 32, acceptance 1): N identifications with webhook subscriptions to a receiver that fails a
share of its answers and is stopped and started once, the server killed with -9 half-way and started again;
then: was every event of every answered request delivered to every subscription (by the faces' probe ids), how
many duplicates (by event id), was the order per subscription kept (outbox seq of first arrivals increasing),
were all signatures valid.

`latency` (acceptance 2): /identify p50 on two servers, one with 3 webhook subscriptions (and MQTT when
--mqtt-url is given), one without, measured taking turns in one run.

`worker`: what delivering costs, without a model in the way: the delivery process as the server starts it
(app/services/delivery.py), fed identify events at a steady rate (one event per "request", the server's poke after
each), 3 webhooks to a receiver process and MQTT; its CPU seconds (user + system, from /proc) per event and per
delivery, and the receiver's and the broker's beside it.

    python -m benchmarks.events delivery --requests 1000 --fail-share 0.3
    python -m benchmarks.events delivery --requests 400 --postgres --replicas 2 --subscriptions 3
    python -m benchmarks.events latency --seconds 20 --passes 3 --mosquitto   (or --mqtt-url mqtt://host:1883)
                                         [--compare: also the worker as a thread, and at nice 0]
    python -m benchmarks.events worker --seconds 30 --rate 13 --mosquitto
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.serve import load, probes
from harness import Server
from harness.receiver import Receiver, ReceiverProcess

FAST_RETRY = {"FACEID_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]', "FACEID_EVENTS_RETRY_BASE_S": "0.05",
              "FACEID_EVENTS_RETRY_MAX_S": "0.5", "FACEID_EVENTS_MAX_ATTEMPTS": "100",
              "FACEID_EVENTS_POLL_INTERVAL_S": "0.1", "FACEID_EVENTS_LEASE_S": "5", "FACEID_PRECISION": "fast"}


def subscribe(url: str, receiver: Receiver, n: int, headers: dict | None = None) -> list[str]:
    paths = []
    with httpx.Client(base_url=url, timeout=60, headers=headers) as h:
        for i in range(n):
            path = f"/hook{i}"
            r = h.post("/webhooks", json={"url": receiver.url(path)})
            r.raise_for_status()
            receiver.secrets[path] = r.json()["secret"]
            paths.append(path)
    return paths


def delivery(requests: int, fail_share: float, subscriptions: int, db: Path | str, drain_timeout_s: float = 300,
             start_timeout_s: float = 300, seed: int = 0, replicas: int = 1) -> dict:
    """`replicas` servers on one database (PostgreSQL: `db` a URL) take the requests in turn; the first is the
    one killed."""
    images = probes()
    receiver = Receiver(fail_share=fail_share, seed=seed).start()
    servers = [Server(db, env=FAST_RETRY).start(timeout_s=start_timeout_s) for _ in range(replicas)]
    srv = servers[0]
    expected: dict[str, set[int]] = {}   # probe id -> (identify event expected)
    answered = failed_requests = 0
    t0 = time.perf_counter()
    try:
        paths = subscribe(srv.url, receiver, subscriptions)
        with httpx.Client(base_url=srv.url, timeout=120) as h:
            enrolled = 0
            for i, img in enumerate(images[:8]):
                enrolled += h.post("/enroll", data={"label": f"p{i}"}, files={"files": ("a.jpg", img)}).status_code == 201
        restart_receiver = (requests // 4, requests // 4 + max(5, requests // 20))
        for i in range(requests):
            if i == requests // 2:
                srv.kill9()
                srv.start(timeout_s=start_timeout_s)
            if i == restart_receiver[0]:
                receiver.stop()
            if i == restart_receiver[1]:
                receiver.start()
            try:
                r = httpx.post(f"{servers[i % replicas].url}/identify", files={"file": ("p.jpg", images[i % len(images)])}, timeout=120)
            except httpx.HTTPError:
                failed_requests += 1
                continue
            if r.status_code != 200:
                failed_requests += 1
                continue
            answered += 1
            for f in r.json()["faces"]:
                if f["status"] in ("match", "unknown"):
                    expected.setdefault(f["probe_id"], set())
        identify_s = time.perf_counter() - t0
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline:  # every subscription has every expected probe: done
            if all(set(expected) <= {d["event"]["data"].get("probe_id") for d in receiver.deliveries(p)
                                     if d["type"].startswith("identify.")} for p in paths):
                break
            time.sleep(0.2)
        drain_s = time.perf_counter() - t0 - identify_s
    finally:
        for s in servers:
            s.stop()
        receiver.stop()
    per_sub = {}
    for p in paths:
        got = receiver.deliveries(p)
        ids = [d["id"] for d in got]
        first_seqs, seen = [], set()
        for d in got:
            if d["id"] not in seen:
                seen.add(d["id"])
                first_seqs.append(d["seq"])
        probes_got = {d["event"]["data"].get("probe_id") for d in got if d["type"].startswith("identify.")}
        per_sub[p] = {"deliveries": len(got), "distinct_events": len(set(ids)), "duplicates": len(ids) - len(set(ids)),
                      "missing_identify_events": len(set(expected) - probes_got),
                      "enroll_events": len({d["id"] for d in got if d["type"] == "enroll"}),
                      "order_kept": all(a < b for a, b in zip(first_seqs, first_seqs[1:])),
                      "signatures_valid": all(d["valid"] for d in got),
                      "event_id_header_matches_body": all(d["header_id"] == d["id"] for d in got)}
    return {"requests": requests, "replicas": replicas, "database": "postgresql" if "://" in str(db) else "sqlite",
            "answered": answered, "failed_requests": failed_requests,
            "enrolled": enrolled, "identify_events_expected": len(expected), "receiver_fail_share": fail_share,
            "receiver_answers_failed": receiver.failed, "killed_at_request": requests // 2,
            "receiver_down_between_requests": list(restart_receiver), "identify_s": round(identify_s, 1),
            "drain_after_last_request_s": round(drain_s, 1), "subscriptions": per_sub,
            "every_event_delivered": all(v["missing_identify_events"] == 0 for v in per_sub.values()),
            "order_kept": all(v["order_kept"] for v in per_sub.values()),
            "signatures_valid": all(v["signatures_valid"] for v in per_sub.values())}


def latency(seconds: float, passes: int, clients: int, tmp: Path, mqtt_url: str | None,
            start_timeout_s: float = 300, compare: bool = False, apparatus_nice: int = 0,
            broker_pid: int | None = None) -> dict:
    """`compare`: two more servers with events on, to show what the shipped worker is worth: one delivering from a
    thread of the server's process (FACEID_EVENTS_WORKER_PROCESS=false), one from its own process at the
    requests' CPU priority (FACEID_BACKGROUND_NICE=0)."""
    images = probes()
    receiver = ReceiverProcess().start()  # another program, as a real receiver is
    if apparatus_nice:  # the receiver and the broker stand for other machines: their CPU after the server's
        for pid in filter(None, (receiver._proc.pid, broker_pid)):
            os.setpriority(os.PRIO_PROCESS, pid, apparatus_nice)
    # the shipped delivery settings (FAST_RETRY's 0.1 s poll and quick retries are for the failure runs above)
    env_on = {"FACEID_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]', "FACEID_PRECISION": "fast",
              **({"FACEID_MQTT_URL": mqtt_url} if mqtt_url else {})}
    servers = {"events_off": Server(tmp / "off.db", env={"FACEID_PRECISION": "fast"}),
               "events_on": Server(tmp / "on.db", env=env_on)}
    if compare:
        servers["events_on_worker_thread"] = Server(tmp / "on_thread.db",
                                                    env={**env_on, "FACEID_EVENTS_WORKER_PROCESS": "false"})
        servers["events_on_same_priority"] = Server(tmp / "on_nice0.db", env={**env_on, "FACEID_BACKGROUND_NICE": "0"})
    points: dict[str, list[dict]] = {n: [] for n in servers}
    try:
        for name, srv in servers.items():
            srv.start(timeout_s=start_timeout_s)
            with httpx.Client(base_url=srv.url, timeout=120) as h:
                for i, img in enumerate(images[:10]):
                    h.post("/enroll", data={"label": f"p{i}"}, files={"files": ("a.jpg", img)})
            if name != "events_off":
                subscribe(srv.url, receiver, 3)
            load(srv.url, images, 1, 3)  # warm-up
        for _ in range(passes):
            for name, srv in servers.items():  # taking turns: each sees the same machine state
                points[name].append(load(srv.url, images, clients, seconds))
    finally:
        for srv in servers.values():
            srv.stop()
        delivered = receiver.stop()
    runs = {n: {"requests": sum(p["requests"] for p in ps), "errors": sum(p["errors"] for p in ps),
                "p50_ms": round(float(np.median([p["p50_ms"] for p in ps])), 1),
                "p95_ms": round(float(np.median([p["p95_ms"] for p in ps])), 1)} for n, ps in points.items()}
    return {"seconds_per_pass": seconds, "passes": passes, "clients": clients, "mqtt": bool(mqtt_url),
            "receiver_and_broker_nice": apparatus_nice,
            "webhook_subscriptions": 3, "runs": runs, "events_delivered": delivered,
            "p50_ratio_on_vs_off": round(runs["events_on"]["p50_ms"] / runs["events_off"]["p50_ms"], 3),
            **({f"p50_ratio_{n[len('events_'):]}_vs_off": round(runs[n]["p50_ms"] / runs["events_off"]["p50_ms"], 3)
                for n in runs if n not in ("events_off", "events_on")})}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(seconds: float, rate: float, webhooks: int, tmp: Path, mqtt_url: str | None,
           broker_pid: int | None = None, drain_timeout_s: float = 60) -> dict:
    from sqlalchemy import func, select

    from app.core.config import Settings
    from app.gallery.events import EventStore, new_event
    from app.gallery.models import Subscription
    from app.gallery.store import make_engine, migrate
    from app.services.delivery import DeliveryProcess
    from app.services.webhooks import new_secret

    url = f"sqlite:///{tmp / 'worker.db'}"
    engine = make_engine(url)
    migrate(engine)
    store = EventStore(engine)
    receiver = ReceiverProcess().start()
    for i in range(webhooks):
        store.create("webhook", receiver.url(f"/hook{i}"), ["*"], new_secret())
    settings = Settings(webhook_allowed_hosts=["127.0.0.1"], mqtt_url=mqtt_url)
    proc = DeliveryProcess(settings, url).start()
    pid = proc.proc.pid
    sent = 0
    try:
        time.sleep(3)  # the worker's imports and its MQTT connection, outside the measure
        cpu0 = {"worker": _cpu_s(pid), "receiver": _cpu_s(receiver._proc.pid),
                **({"broker": _cpu_s(broker_pid)} if broker_pid else {})}
        t0 = time.perf_counter()
        while (now := time.perf_counter() - t0) < seconds:
            if sent < now * rate:
                store.append([new_event("identify.match", {
                    "face_index": 0, "probe_id": sent + 1, "box": [10.0, 20.0, 110.0, 140.0], "detection_score": 0.99,
                    "decision": "match", "identity": {"id": 1 + sent % 10, "label": f"p{sent % 10}"},
                    "score": 0.81, "threshold": 0.52, "model_version": "v1", "image_sha256": "0" * 64})])
                proc.poke()
                sent += 1
            time.sleep(max(0.0, min((sent / rate) - (time.perf_counter() - t0), 0.05)))
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline:  # until every subscription has passed the last event
            with store.sessions() as s:
                if (s.scalar(select(func.min(Subscription.cursor))) or 0) >= store.last_seq(s):
                    break
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu = {"worker": _cpu_s(pid) - cpu0["worker"], "receiver": _cpu_s(receiver._proc.pid) - cpu0["receiver"],
               **({"broker": _cpu_s(broker_pid) - cpu0["broker"]} if broker_pid else {})}
    finally:
        proc.stop()
        delivered = receiver.stop()
        engine.dispose()
    deliveries = sent * (webhooks + (1 if mqtt_url else 0))
    return {"seconds": seconds, "rate_per_s": rate, "events": sent, "webhook_subscriptions": webhooks,
            "mqtt": bool(mqtt_url), "webhook_deliveries": delivered, "elapsed_s": round(elapsed, 2),
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "worker_cores": round(cpu["worker"] / elapsed, 4),
            "worker_cpu_ms_per_event": round(1000 * cpu["worker"] / max(1, sent), 3),
            "worker_cpu_ms_per_delivery": round(1000 * cpu["worker"] / max(1, deliveries), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("delivery")
    d.add_argument("--requests", type=int, default=1000)
    d.add_argument("--fail-share", type=float, default=0.3)
    d.add_argument("--subscriptions", type=int, default=2)
    d.add_argument("--replicas", type=int, default=1, help="servers on one database, taking requests in turn")
    d.add_argument("--postgres", action="store_true", help="on an embedded PostgreSQL (default: a SQLite file)")
    lat = sub.add_parser("latency")
    lat.add_argument("--seconds", type=float, default=20.0)
    lat.add_argument("--passes", type=int, default=3)
    lat.add_argument("--clients", type=int, default=1)
    lat.add_argument("--mqtt-url", default=None, help="a broker to publish to (see --mosquitto)")
    lat.add_argument("--mosquitto", action="store_true", help="start Debian's mosquitto for the run and publish there")
    lat.add_argument("--apparatus-nice", type=int, default=0, help="run the receiver and the broker at this nice "
                     "value: on one machine they stand for other machines, whose CPU is not the server's")
    lat.add_argument("--compare", action="store_true", help="two more servers with events on: the worker in a "
                     "thread of the server's process; in its own process at the requests' CPU priority")
    w = sub.add_parser("worker")
    w.add_argument("--seconds", type=float, default=30.0)
    w.add_argument("--rate", type=float, default=13.0, help="events per second (one per identify, as at one client)")
    w.add_argument("--webhooks", type=int, default=3)
    w.add_argument("--mqtt-url", default=None)
    w.add_argument("--mosquitto", action="store_true")
    for p in (d, lat, w):
        p.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.mode != "worker" and not (faces_dir() / "lfw").is_dir():
        return emit({"skipped": f"no LFW under {faces_dir()}"})
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "delivery" and args.postgres:
            from harness import EmbeddedPostgres

            pg = EmbeddedPostgres(Path(tmp) / "pg").start()
            try:
                result = delivery(args.requests, args.fail_share, args.subscriptions, pg.create_database(),
                                  replicas=args.replicas)
            finally:
                pg.close()
        elif args.mode == "delivery":
            result = delivery(args.requests, args.fail_share, args.subscriptions, Path(tmp) / "g.db",
                              replicas=args.replicas)
        elif args.mode == "worker":
            broker = None
            if args.mosquitto:
                from harness.mosquitto import Mosquitto

                broker = Mosquitto(Path(tmp) / "mqtt").start()
            try:
                result = worker(args.seconds, args.rate, args.webhooks, Path(tmp),
                                broker.url if broker else args.mqtt_url, broker.proc.pid if broker else None)
            finally:
                if broker:
                    broker.stop()
        elif args.mosquitto:
            from harness.mosquitto import Mosquitto

            broker = Mosquitto(Path(tmp) / "mqtt").start()
            try:
                result = latency(args.seconds, args.passes, args.clients, Path(tmp), broker.url,
                                 compare=args.compare, apparatus_nice=args.apparatus_nice, broker_pid=broker.proc.pid)
            finally:
                broker.stop()
        else:
            result = latency(args.seconds, args.passes, args.clients, Path(tmp), args.mqtt_url,
                             compare=args.compare, apparatus_nice=args.apparatus_nice)
    return emit({"benchmark": f"events.{args.mode}", **result}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
