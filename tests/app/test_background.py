"""The background thread (app/core/background.py): its work runs on its own loop at a lower CPU priority, the
threads it starts inherit that priority, and stopping it waits for the work's clean-up."""
import asyncio
import sys
import threading

import pytest

from app.core.background import Background, thread_nice

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def test_background_work_runs_on_its_own_thread_at_a_lower_priority_and_so_do_its_worker_threads():
    base = thread_nice()
    if base + 1 > 19:
        pytest.skip(f"this process already runs at nice {base}: no lower priority to check")

    async def where():
        hop = await asyncio.to_thread(lambda: (threading.get_native_id(), thread_nice()))
        return threading.get_native_id(), thread_nice(), hop

    async def main():
        bg = Background(nice=5).start()
        try:
            return await asyncio.wrap_future(bg.spawn(where()))
        finally:
            await bg.stop()

    tid, nice, (hop_tid, hop_nice) = asyncio.run(main())
    assert tid != threading.get_native_id() and hop_tid not in (tid, threading.get_native_id())
    assert nice == hop_nice == min(19, base + 5)
    assert thread_nice() == base  # the caller's own priority is untouched


def test_nice_zero_keeps_the_requests_priority():
    async def main():
        bg = Background(nice=0).start()
        try:
            return await asyncio.wrap_future(bg.spawn(asyncio.to_thread(thread_nice)))
        finally:
            await bg.stop()

    assert asyncio.run(main()) == thread_nice()


def test_stop_cancels_the_work_and_waits_for_its_clean_up():
    cleaned = []

    async def worker(started: threading.Event):
        started.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await asyncio.sleep(0)  # clean-up that itself awaits (as the event worker giving back its leases)
            cleaned.append(threading.get_native_id())

    async def main():
        bg = Background(nice=1).start()
        started = threading.Event()
        fut = bg.spawn(worker(started))
        await asyncio.to_thread(started.wait)
        thread = bg._thread
        await bg.stop()
        return fut, thread

    fut, thread = asyncio.run(main())
    assert len(cleaned) == 1 and fut.cancelled() and not thread.is_alive()
