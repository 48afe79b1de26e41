"""The event delivery worker in a process of its own (FACEID_EVENTS_WORKER_PROCESS, on by default).

Delivering is Python work: webhook posts, MQTT publishes, outbox reads and cursor writes. In the server's own
process it holds the interpreter lock that the requests need between their model calls, however low its thread's
priority: with 3 webhooks and MQTT, one client and one run (`benchmarks.events latency`), /identify's median was
23 % slower with the worker in the server's process and 2.6 % slower with it in a process of its own at nice 10.

The server (`DeliveryProcess`) starts `python -m app.services.delivery POKE_FD METRICS_FD`, writes it the settings
and the database URL on stdin, and keeps two pipes:
- it writes one byte to POKE_FD when it wrote events (the worker delivers at once rather than at its next poll);
  the pipe closing (the server stopping, or dying, even with -9) tells the worker to give back its leases and
  exit, so a worker never outlives its server;
- the worker writes its delivery counters to METRICS_FD about every second; the server adds them to its own
  /metrics (`faceid_event_deliveries_total`, `faceid_event_dead_letters_total`, `faceid_events_dropped_total`).
The server starts it once there is something to deliver to (MQTT, or a webhook subscription: `Events.
relay_forever`): a server nobody subscribed to runs none. A worker that exits on its own is started again after
RESTART_S. An in-memory SQLite database cannot be shared
with another process: there the worker stays a task of the server (app/core/background.py).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

from app.core.config import Settings

log = logging.getLogger("faceid.events")

RESTART_S = 1.0
METRICS_EVERY_S = 1.0
STOP_TIMEOUT_S = 30.0


def _counters():
    from app.services.events import DEAD, DELIVERIES, DROPPED

    return {m._name: m for m in (DELIVERIES, DEAD, DROPPED)}


def _totals() -> list:
    """[metric name, labels, value] of every delivery counter of this process."""
    out = []
    for name, metric in _counters().items():
        for sample in metric.collect()[0].samples:
            if sample.name.endswith("_total"):
                out.append([name, sample.labels, sample.value])
    return out


class DeliveryProcess:
    """The server's side: start, poke, restart and stop the worker; its counters added here."""

    def __init__(self, settings: Settings, database_url: str):
        self.settings, self.database_url = settings, database_url
        self.proc: subprocess.Popen | None = None
        self._poke_fd: int | None = None
        self._lock = threading.Lock()       # the poke pipe's end is swapped on a restart
        self._stopping = threading.Event()
        self._base: dict[tuple, float] = {}  # (metric, labels) -> the running worker's last reported total

    def start(self) -> "DeliveryProcess":
        poke_r, poke_w = os.pipe()
        metrics_r, metrics_w = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # where the `app` package is
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "app.services.delivery", str(poke_r), str(metrics_w)],
                                    pass_fds=(poke_r, metrics_w), stdin=subprocess.PIPE, env=env)
            if self.settings.background_nice and hasattr(os, "setpriority"):
                # before it reads its settings (it starts no thread until then): its threads inherit this. The
                # server's main thread's priority plus the setting (the caller may be the background thread)
                os.setpriority(os.PRIO_PROCESS, proc.pid,
                               min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + self.settings.background_nice))
            proc.stdin.write(pickle.dumps((self.settings, self.database_url)))
            proc.stdin.close()
        except BaseException:
            for fd in (poke_r, poke_w, metrics_r, metrics_w):
                os.close(fd)
            raise
        os.close(poke_r)
        os.close(metrics_w)
        os.set_blocking(poke_w, False)
        with self._lock:
            self.proc, self._poke_fd = proc, poke_w
        self._base = {}  # a new worker counts from 0 again
        threading.Thread(target=self._watch, args=(proc, metrics_r), name="faceid-delivery-watch",
                         daemon=True).start()
        log.info("event delivery worker started (pid %d)", proc.pid)
        return self

    def poke(self) -> None:
        """Events were written: deliver them now (from any thread; never blocks)."""
        with self._lock:
            if self._poke_fd is None:
                return
            try:
                os.write(self._poke_fd, b"\0")
            except (BlockingIOError, BrokenPipeError):  # full: it has pokes to read already; gone: restarting
                pass

    def _watch(self, proc: subprocess.Popen, fd: int) -> None:
        """Read the worker's counters until it exits; then start another unless the server is stopping."""
        with os.fdopen(fd, "rb") as f:
            for line in f:
                try:
                    self._add(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable counters from the delivery worker: %r", line[:200])
        code = proc.wait()
        if self._stopping.is_set():
            return
        log.warning("the event delivery worker exited (code %s): starting another in %.0f s", code, RESTART_S)
        with self._lock:
            if self._poke_fd is not None:
                os.close(self._poke_fd)
                self._poke_fd = None
        if not self._stopping.wait(RESTART_S):
            try:
                self.start()
            except OSError:
                log.exception("could not start the event delivery worker again")

    def _add(self, totals: list) -> None:
        counters = _counters()
        for name, labels, value in totals:
            key = (name, tuple(sorted(labels.items())))
            delta = value - self._base.get(key, 0.0)
            if delta > 0:
                counters[name].labels(**labels).inc(delta)
            self._base[key] = value

    def stop(self) -> None:
        """Close the poke pipe (the worker gives back its leases and exits) and wait for it."""
        self._stopping.set()
        with self._lock:
            proc, fd = self.proc, self._poke_fd
            self._poke_fd = None
        if fd is not None:
            os.close(fd)
        if proc is None:
            return
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("the event delivery worker did not stop in %.0f s: killed", STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()


# --- the worker's side ------------------------------------------------------------------------------------------
async def _serve(settings: Settings, url: str, poke_fd: int, metrics_fd: int) -> None:
    from app.gallery.events import EventStore, relax
    from app.gallery.store import make_engine
    from app.services.events import Events

    engine = make_engine(url, settings.db_busy_timeout_s)
    work = relax(make_engine(url, settings.db_busy_timeout_s))
    events = Events(settings, EventStore(engine, work))
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(events.run())
    os.set_blocking(poke_fd, False)

    def poked() -> None:
        try:
            data = os.read(poke_fd, 4096)
        except BlockingIOError:
            return
        if data:
            events.poke()
        else:  # the server closed its end, or died: stop
            loop.remove_reader(poke_fd)
            runner.cancel()

    loop.add_reader(poke_fd, poked)
    last: list | None = None

    def report() -> None:
        nonlocal last
        totals = _totals()
        if totals != last:
            os.write(metrics_fd, json.dumps(totals).encode() + b"\n")
            last = totals

    try:
        while not runner.done():
            await asyncio.wait([runner], timeout=METRICS_EVERY_S)
            report()
    finally:
        if not runner.done():
            runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)  # Events.run gives back its leases
        try:
            report()
        except OSError:
            pass
        if events.mqtt is not None:
            events.mqtt.close()
        work.dispose()
        engine.dispose()


def main(argv: list[str]) -> int:
    # the server's pipe says when to stop: a signal to the whole process group (Ctrl-C, the harness's SIGTERM)
    # must not cut a round short; the server stops this worker after it stopped serving
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    poke_fd, metrics_fd = int(argv[0]), int(argv[1])
    settings, url = pickle.load(sys.stdin.buffer)  # its priority is already set (DeliveryProcess.start)
    from app.core.observability import configure_logging

    configure_logging(settings.log_json)
    asyncio.run(_serve(settings, url, poke_fd, metrics_fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
