"""The micro-batcher (app/services/batching.py), gated by events: no sleeps decide any ordering.

The batch function blocks on a `threading.Event` until the test opens it, so the test knows exactly which
requests are queued behind a running batch. `until(cond)` yields to the event loop until a condition holds.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core import errors
from app.services.batching import QueueFull, batch


class Gated:
    """A batch function that records each batch and, while `gate` is closed, blocks inside the first call."""

    def __init__(self, fail_on=frozenset()):
        self.batches: list[list] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.started.set()
        self.gate.wait(timeout=60)
        if self.fail_on & set(items):
            raise ValueError(f"batch {items} failed")
        return [f"done:{x}" for x in items]


async def until(cond, limit: int = 100_000) -> None:
    """Yield to the loop until `cond()` holds (a condition, not a duration)."""
    for _ in range(limit):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def wait_started(fn: Gated) -> None:
    assert await asyncio.to_thread(fn.started.wait, 60)


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1) as ex:
        yield ex


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_failed_batch_fails_only_its_own_requests(executor):
    fn = Gated(fail_on={"bad"})
    batched = batch(fn, max_batch_size=2, batch_wait_timeout_s=60, executor=executor)

    async def scenario():
        first = [asyncio.create_task(batched.submit(x)) for x in ("bad", "b2")]  # fills batch 1 at once
        await wait_started(fn)
        second = [asyncio.create_task(batched.submit(x)) for x in ("g1", "g2")]
        await until(lambda: batched.queue.depth() == 2)
        fn.gate.set()
        return (await asyncio.gather(*first, return_exceptions=True), await asyncio.gather(*second))

    failed, ok = run(scenario())
    assert fn.batches == [["bad", "b2"], ["g1", "g2"]]
    assert all(isinstance(e, ValueError) and "failed" in str(e) for e in failed)
    assert ok == ["done:g1", "done:g2"]
    assert batched.queue.stats.batches == 1 and batched.queue.stats.items == 2  # only the good batch counts


def test_a_full_queue_answers_503_with_retry_after_at_once(executor):
    fn = Gated()
    batched = batch(fn, max_batch_size=1, batch_wait_timeout_s=0, max_queue_size=2, executor=executor)

    async def scenario():
        running = asyncio.create_task(batched.submit("i0"))
        await wait_started(fn)  # i0 is in the model thread; the queue is empty
        queued = [asyncio.create_task(batched.submit(x)) for x in ("i1", "i2")]
        await until(lambda: batched.queue.depth() == 2)
        with pytest.raises(QueueFull) as info:
            await batched.submit("i3")
        fn.gate.set()
        return info.value, await asyncio.gather(running, *queued)

    exc, results = run(scenario())
    assert results == ["done:i0", "done:i1", "done:i2"]  # the refusal changed nothing for the others
    assert (exc.status, exc.code, exc.headers) == (503, "overloaded", {"Retry-After": "1"})
    assert ["i3"] not in fn.batches

    app = FastAPI()
    errors.install(app)

    @app.get("/busy")
    async def busy():
        raise exc

    r = TestClient(app).get("/busy")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "overloaded"


def test_batches_never_exceed_max_batch_size(executor):
    fn = Gated()
    batched = batch(fn, max_batch_size=3, batch_wait_timeout_s=0, executor=executor)

    async def scenario():
        head = asyncio.create_task(batched.submit("x0"))
        await wait_started(fn)
        rest = [asyncio.create_task(batched.submit(f"y{i}")) for i in range(7)]
        await until(lambda: batched.queue.depth() == 7)
        fn.gate.set()
        return await asyncio.gather(head, *rest)

    results = run(scenario())
    assert results == ["done:x0"] + [f"done:y{i}" for i in range(7)]
    assert [len(b) for b in fn.batches] == [1, 3, 3, 1]
    assert batched.queue.stats.max_batch_seen == 3


def test_sizes_and_keys_split_batches(executor):
    """`size` counts faces: an item that would overflow the batch starts the next one; a different `key`
    (another model snapshot) never shares a batch."""
    fn = Gated()
    batched = batch(fn, max_batch_size=4, batch_wait_timeout_s=0, executor=executor,
                    key=lambda item: item[0], size=lambda item: item[1])

    async def scenario():
        head = asyncio.create_task(batched.submit(("a", 1)))
        await wait_started(fn)
        items = [("a", 2), ("a", 2), ("a", 1), ("b", 1), ("b", 9)]
        rest = [asyncio.create_task(batched.submit(x)) for x in items]
        await until(lambda: batched.queue.depth() == len(items))
        fn.gate.set()
        return await asyncio.gather(head, *rest)

    run(scenario())
    assert fn.batches == [[("a", 1)], [("a", 2), ("a", 2)], [("a", 1)], [("b", 1)], [("b", 9)]]


def test_the_first_request_waits_for_company_until_the_batch_is_full(executor):
    """Within batch_wait_timeout_s a batch takes requests that said they were coming and arrive after its
    first one."""
    fn = Gated()
    fn.gate.set()
    batched = batch(fn, max_batch_size=2, batch_wait_timeout_s=60, executor=executor)

    async def scenario():
        ticket = batched.queue.announce()  # e.g. a request still decoding its image
        first = asyncio.create_task(batched.submit("early"))
        await until(lambda: batched.queue.depth() == 1)  # queued
        await until(lambda: batched.queue.depth() == 0)  # taken by the batcher, which now waits for more
        assert not fn.started.is_set()
        late = asyncio.create_task(batched.submit("late", ticket))  # the batch is open, waiting for company
        return await asyncio.gather(first, late)

    assert run(scenario()) == ["done:early", "done:late"]
    assert fn.batches == [["early", "late"]]


def test_a_request_alone_never_waits_for_the_window(executor):
    """Nobody said they were coming: the batch runs at once, however long the window (an hour here, which
    the test's 60 s limit would fail)."""
    fn = Gated()
    fn.gate.set()
    batched = batch(fn, max_batch_size=32, batch_wait_timeout_s=3600, executor=executor)
    assert run(batched.submit("alone")) == "done:alone"
    assert fn.batches == [["alone"]]


def test_a_withdrawn_announcement_ends_the_wait(executor):
    """A request that said it was coming and then left (no face, an error) does not hold the batch up: the
    batch runs when the last one on its way withdraws, not when the hour-long window ends."""
    fn = Gated()
    fn.gate.set()
    batched = batch(fn, max_batch_size=32, batch_wait_timeout_s=3600, executor=executor)

    async def scenario():
        with batched.coming():
            ticket = batched.queue.announce()
            first = asyncio.create_task(batched.submit("early"))
            await until(lambda: batched.queue.depth() == 1)
            await until(lambda: batched.queue.depth() == 0)  # the batcher is waiting for the two announced
            ticket.withdraw()
            ticket.withdraw()  # once only
            assert not fn.started.is_set()
        return await first  # the block's announcement is withdrawn on leaving it

    assert run(scenario()) == "done:early"
    assert fn.batches == [["early"]] and batched.queue._coming == 0


def test_a_lone_request_runs_when_the_wait_timeout_passes(executor):
    """Nobody else comes: the batch runs alone after batch_wait_timeout_s (the test's 60 s limit would
    fail it if the batcher waited for a full batch)."""
    fn = Gated()
    fn.gate.set()
    batched = batch(fn, max_batch_size=32, batch_wait_timeout_s=0.01, executor=executor)
    assert run(batched.submit("alone")) == "done:alone"
    assert fn.batches == [["alone"]]


def test_a_zero_wait_timeout_does_not_wait_for_company(executor):
    fn = Gated()
    batched = batch(fn, max_batch_size=8, batch_wait_timeout_s=0, executor=executor)

    async def scenario():
        first = asyncio.create_task(batched.submit("first"))
        await wait_started(fn)  # it ran alone although the batch had room for 7 more
        second = asyncio.create_task(batched.submit("second"))
        fn.gate.set()
        return await asyncio.gather(first, second)

    assert run(scenario()) == ["done:first", "done:second"]
    assert fn.batches == [["first"], ["second"]]


def test_a_cancelled_request_is_left_out_of_its_batch(executor):
    fn = Gated()
    batched = batch(fn, max_batch_size=4, batch_wait_timeout_s=0, executor=executor)

    async def scenario():
        head = asyncio.create_task(batched.submit("h"))
        await wait_started(fn)
        gone = asyncio.create_task(batched.submit("gone"))
        kept = asyncio.create_task(batched.submit("kept"))
        await until(lambda: batched.queue.depth() == 2)
        gone.cancel()
        fn.gate.set()
        return await asyncio.gather(head, kept)

    assert run(scenario()) == ["done:h", "done:kept"]
    assert fn.batches == [["h"], ["kept"]]
