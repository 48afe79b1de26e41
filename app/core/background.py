"""Work beside the requests, on its own thread and event loop, at a lower CPU priority.

The event delivery worker (app/services/events.py) and the kept unknown faces' refines (app/services/unknown.py)
run here rather than on the requests' event loop: a webhook post or an MQTT hop then never holds up a request
waiting for the loop, and with FACEID_BACKGROUND_NICE (Linux: a per-thread nice value, which the threads this
loop starts for `asyncio.to_thread` and anyio's pool inherit) the scheduler gives the cores to the requests'
threads first: background work uses the time they leave, and gets its share (about 10 % at nice 10 against
one busy thread) when they leave none, so it is late under load but never stopped.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
from collections.abc import Coroutine

log = logging.getLogger("faceid.background")


def thread_nice(tid: int | None = None) -> int:
    """A thread's nice value (Linux; this thread's by default)."""
    tid = threading.get_native_id() if tid is None else tid
    with open(f"/proc/self/task/{tid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19 of stat(5), counted after the command


class Background:
    def __init__(self, nice: int = 10, name: str = "faceid-background"):
        self.nice, self.name = nice, name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Background":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def _main(self, ready: threading.Event) -> None:
        if self.nice and sys.platform.startswith("linux"):
            try:  # this thread only: PRIO_PROCESS with a thread id is per thread on Linux
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
            except OSError as exc:
                log.warning("background work runs at the requests' priority: %s", exc)
        self.loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def spawn(self, coro: Coroutine) -> concurrent.futures.Future:
        """Run `coro` on the background loop (from any thread); cancelling the future cancels it there."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def stop(self) -> None:
        """Cancel what runs there, wait for its clean-up (`finally` blocks), then end the loop and the thread."""
        if self.loop is None or self._thread is None:
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(cancel_all(), self.loop))
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join)
        self.loop = self._thread = None
