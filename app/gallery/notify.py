"""How a process learns of the gallery writes of the other processes (workers and replicas).

SQLite: there is no notification, so waiting means polling (`PollingChanges`; the in-memory index also checks
the cheap generation counter on every search). PostgreSQL: the store sends `NOTIFY faceid_gallery,
'<generation>,<rebuild_generation>'` inside every write transaction (delivered on commit); `NotifyChanges`
LISTENs on a dedicated connection in a thread, reconnects with back-off when the connection is lost,
and on every (re)connect reads the current generation, so whatever was missed while away is caught up.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading

from sqlalchemy.engine import Engine

from app.gallery.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class PollingChanges:
    """SQLite: `wait` returns after `interval_s`; the generation is unknown (ask the database)."""

    generation: int | None = None

    def __init__(self, interval_s: float = 2.0):
        self.interval_s = interval_s

    def token(self) -> int:
        return 0

    async def wait(self, token: int = 0) -> int:
        await asyncio.sleep(self.interval_s)
        return 0

    def close(self) -> None:
        pass


class ChangeSignal:
    """A counter of changes that waiters compare against what they have seen: `wait(token)` returns at once
    when a change came after `token` was taken, even if nobody was waiting at that moment (an Event made per
    wait would lose it). `changed()` may be called from any thread."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def token(self) -> int:
        return self.count

    def changed(self) -> None:
        with self._lock:
            self.count += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed
                pass

    async def wait(self, token: int) -> int:
        """Return the new token once a change came after `token`."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self.count != token:
                return self.count
            self._waiters.add(waiter)
        try:
            await waiter[1].wait()
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return self.count


class NotifyChanges:
    """PostgreSQL LISTEN/NOTIFY. `generation` is the newest committed gallery generation while listening,
    None while the connection is down (callers then ask the database); `wait` returns on the next change."""

    def __init__(self, engine: Engine, reconnect_max_s: float = 5.0, channel: str = NOTIFY_CHANNEL,
                 schema: str | None = None):
        """`channel`, `schema`: a collection's (GalleryStore.channel and .schema)."""
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.channel, self.options = channel, (f"-c search_path={schema},public" if schema else None)
        self.reconnect_max_s = reconnect_max_s
        self.generation: int | None = None
        self.connects = 0  # how many times the listener (re)connected; tests watch it
        self._stop = threading.Event()
        self.signal = ChangeSignal()
        self._thread = threading.Thread(target=self._run, name="gallery-listen", daemon=True)
        self._thread.start()

    def token(self) -> int:
        """Take before reading the gallery; `wait(token)` then returns on any change after it."""
        return self.signal.token()

    async def wait(self, token: int | None = None) -> int:
        """The next change after `token` (now, if one came already). Returns the token to wait with next."""
        return await self.signal.wait(self.signal.token() if token is None else token)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _changed(self, generation: int) -> None:
        self.generation = generation if self.generation is None else max(self.generation, generation)
        self.signal.changed()

    def _run(self) -> None:
        import psycopg

        delay = 0.2
        while not self._stop.is_set():
            try:
                extra = {"options": self.options} if self.options else {}
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5,
                                     application_name=f"faceid-listen-{os.getpid()}", **extra) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    row = conn.execute("SELECT generation FROM gallery_state WHERE id = 1").fetchone()
                    self.connects += 1
                    self.generation = None  # catch up: everything that happened while away counts as a change
                    self._changed(row[0] if row else 0)
                    delay = 0.2
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._changed(int(note.payload.split(",")[0]))
            except psycopg.Error as exc:
                self.generation = None
                if not self._stop.is_set():
                    (log.warning if delay == 0.2 else log.debug)("gallery change listener lost its connection (%s); reconnecting in %.1fs",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)


class NotifyHub:
    """PostgreSQL, for the collections (app/services/collections.py): one LISTEN connection and one thread for every
    collection's channel, instead of one each (1,000 open collections would need 1,000 connections). `subscribe`
    gives a collection its `HubChanges` (NotifyChanges' interface); the thread LISTENs to new channels within a
    second, and on every (re)connect reads each collection's generation from its schema, as NotifyChanges does."""

    def __init__(self, engine: Engine, reconnect_max_s: float = 5.0):
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.reconnect_max_s = reconnect_max_s
        self.connects = 0
        self._subs: dict[str, HubChanges] = {}  # channel -> its subscriber
        self._lock = threading.Lock()
        self._dirty = threading.Event()  # subscriptions changed: LISTEN / UNLISTEN in the thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="collections-listen", daemon=True)
        self._thread.start()

    def subscribe(self, channel: str, schema: str) -> "HubChanges":
        sub = HubChanges(self, channel, schema)
        with self._lock:
            self._subs[channel] = sub
        self._dirty.set()
        return sub

    def unsubscribe(self, sub: "HubChanges") -> None:
        with self._lock:
            if self._subs.get(sub.channel) is sub:
                del self._subs[sub.channel]
        self._dirty.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sync(self, conn, listening: set[str]) -> None:
        """LISTEN to new channels (their generation read), UNLISTEN to dropped ones."""
        self._dirty.clear()
        with self._lock:
            subs = dict(self._subs)
        for channel in listening - set(subs):
            conn.execute(f"UNLISTEN {channel}")
            listening.discard(channel)
        for channel, sub in subs.items():
            if channel not in listening:
                conn.execute(f"LISTEN {channel}")
                listening.add(channel)
                row = conn.execute(f'SELECT generation FROM "{sub.schema}".gallery_state WHERE id = 1').fetchone()
                sub.generation = None
                sub._changed(row[0] if row else 0)

    def _run(self) -> None:
        import psycopg

        delay = 0.2
        while not self._stop.is_set():
            listening: set[str] = set()
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5,
                                     application_name=f"faceid-listen-collections-{os.getpid()}") as conn:
                    self.connects += 1
                    delay = 0.2
                    while not self._stop.is_set():
                        if self._dirty.is_set():
                            self._sync(conn, listening)
                        for note in conn.notifies(timeout=1.0, stop_after=None):
                            sub = self._subs.get(note.channel)
                            if sub is not None:
                                sub._changed(int(note.payload.split(",")[0]))
                            if self._dirty.is_set():
                                break
            except psycopg.Error as exc:
                with self._lock:
                    for sub in self._subs.values():
                        sub.generation = None  # callers ask the database meanwhile
                self._dirty.set()  # listen again to everything after the reconnect
                if not self._stop.is_set():
                    log.warning("collections' change listener lost its connection (%s); reconnecting in %.1fs",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max_s)


class HubChanges:
    """One collection's change feed through a NotifyHub (the interface of NotifyChanges)."""

    def __init__(self, hub: NotifyHub, channel: str, schema: str):
        self.hub, self.channel, self.schema = hub, channel, schema
        self.generation: int | None = None
        self.signal = ChangeSignal()

    def token(self) -> int:
        return self.signal.token()

    async def wait(self, token: int | None = None) -> int:
        return await self.signal.wait(self.signal.token() if token is None else token)

    def _changed(self, generation: int) -> None:
        self.generation = generation if self.generation is None else max(self.generation, generation)
        self.signal.changed()

    def close(self) -> None:
        self.hub.unsubscribe(self)
