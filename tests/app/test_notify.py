"""The change signal the follower waits on: a change that comes while nobody waits is not lost."""
from __future__ import annotations

import asyncio
import threading

from app.gallery.notify import ChangeSignal


def test_a_change_while_nobody_waits_ends_the_next_wait():
    signal = ChangeSignal()
    token = signal.token()
    t = threading.Thread(target=signal.changed)  # another thread (the LISTEN thread), nobody waiting yet
    t.start()
    t.join()
    assert asyncio.run(asyncio.wait_for(signal.wait(token), 1)) == token + 1


def test_a_wait_ends_on_the_next_change_from_another_thread():
    signal = ChangeSignal()

    async def scenario():
        token = signal.token()
        waiting = asyncio.create_task(signal.wait(token))
        await asyncio.sleep(0)  # let it register (the result does not depend on it: see the test above)
        threading.Thread(target=signal.changed).start()
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(scenario()) == 1


def test_a_token_taken_after_the_change_waits_for_the_next_one():
    signal = ChangeSignal()
    signal.changed()

    async def scenario():
        waiting = asyncio.create_task(signal.wait(signal.token()))
        done, _ = await asyncio.wait([waiting], timeout=0.05)
        assert not done  # nothing new since the token
        signal.changed()
        return await asyncio.wait_for(waiting, 5)

    assert asyncio.run(scenario()) == 2
