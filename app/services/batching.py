"""Dynamic micro-batching: concurrent requests' work items are gathered into one call.

A small private queue class plus one public decorator (Ray Serve's shape). `max_batch_size` counts items
(faces or images). A batch waits for company only while some request has said it is on its way
(`fn.coming()`, entered before the request's earlier steps: decoding before detection, cropping before
embedding), and at most `batch_wait_timeout_s` after its first item: a request alone never pays the window,
while under load the requests that are decoding or cropping join the batch they are about to need. A full
queue raises `QueueFull` at once (the API answers 503 + Retry-After) instead of growing without bound.
A failing batch fails exactly the requests that were in it, each with the batch's exception.
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from app.core.errors import AppError


class QueueFull(AppError):
    """The batch queue is at capacity: 503 with Retry-After, so clients back off and retry."""

    def __init__(self, waiting: int):
        super().__init__(503, "overloaded", f"the server is busy ({waiting} requests waiting); retry shortly",
                         headers={"Retry-After": "1"})


@dataclass
class _Pending:
    item: Any
    size: int
    future: asyncio.Future


class _Ticket:
    """One request's announcement to a queue (`_BatchQueue.coming`); withdrawn once."""

    __slots__ = ("queue", "open")

    def __init__(self, queue: "_BatchQueue"):
        self.queue, self.open = queue, True

    def withdraw(self) -> None:
        if self.open:
            self.open = False
            self.queue._arrived()


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    last_batch_size: int = 0
    max_batch_seen: int = 0


class _BatchQueue:
    def __init__(self, fn: Callable[[list], Sequence], max_batch_size: int, batch_wait_timeout_s: float,
                 max_queue_size: int, executor: Executor | None, key: Callable[[Any], Any] | None = None,
                 size: Callable[[Any], int] | None = None, on_batch: Callable[[int], None] | None = None):
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.max_queue_size = max_queue_size
        self.executor = executor
        self.key = key or (lambda item: None)
        self.size = size or (lambda item: 1)
        self.on_batch = on_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Pending | None = None
        self._coming = 0  # requests that said they will submit soon and have not yet
        self._arrival: asyncio.Event | None = None  # set at each submit and each withdrawal

    def depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def close(self) -> None:
        """Stop the batching task (at shutdown); requests still waiting get CancelledError."""
        task, self._task, self._queue = self._task, None, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def announce(self) -> "_Ticket":
        """Say that this request will submit an item soon: a batch that has started waits for it, up to the
        window, until its `submit(item, ticket)` or `ticket.withdraw()` (call one of them, whatever happens).
        Event-loop thread only."""
        self._coming += 1
        return _Ticket(self)

    @contextmanager
    def coming(self):
        """`announce` for a block: withdrawn when the block is left without submitting."""
        ticket = self.announce()
        try:
            yield ticket
        finally:
            ticket.withdraw()

    def _arrived(self) -> None:
        self._coming -= 1
        if self._arrival is not None:
            self._arrival.set()

    async def submit(self, item, ticket: "_Ticket | None" = None) -> Any:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        if ticket is not None:
            ticket.withdraw()  # here now: no longer on its way
        if self._queue.qsize() >= self.max_queue_size:
            raise QueueFull(self._queue.qsize())
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(item, max(1, self.size(item)), fut))
        if self._arrival is not None:
            self._arrival.set()
        return await fut

    async def _next_batch(self) -> list[_Pending]:
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, total, key = [first], first.size, self.key(first.item)
        deadline = time.perf_counter() + self.batch_wait_timeout_s
        while total < self.max_batch_size:
            if self._queue.empty():  # wait only for a request on its way, and only within the window
                remaining = deadline - time.perf_counter()
                if self._coming <= 0 or remaining <= 0:
                    break
                self._arrival = self._arrival or asyncio.Event()
                self._arrival.clear()
                try:
                    await asyncio.wait_for(self._arrival.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            nxt = self._queue.get_nowait()
            if self.key(nxt.item) != key or total + nxt.size > self.max_batch_size:
                self._carry = nxt  # different model snapshot, or too big: starts the next batch
                break
            batch.append(nxt)
            total += nxt.size
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [p.item for p in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except Exception as exc:  # noqa: BLE001 - every waiting request gets this batch's error
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            n = sum(p.size for p in live)
            self.stats.batches += 1
            self.stats.items += n
            self.stats.last_batch_size = n
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, n)
            if self.on_batch:
                self.on_batch(n)
            for p, r in zip(live, results):
                if not p.future.done():
                    p.future.set_result(r)


def batch(_fn: Callable | None = None, *, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.004,
          max_queue_size: int = 256, executor: Executor | None = None, key=None, size=None, on_batch=None):
    """Decorate `fn(items: list) -> list` so that `await fn.submit(item)` batches concurrent calls.

    The decorated function stays callable directly with a list. `fn.queue` exposes depth and stats.
    """
    def wrap(fn):
        q = _BatchQueue(fn, max_batch_size, batch_wait_timeout_s, max_queue_size, executor, key, size, on_batch)

        @functools.wraps(fn)
        def direct(items: list):
            return fn(items)

        direct.submit = q.submit
        direct.coming = q.coming
        direct.queue = q
        direct.close = q.close
        return direct

    return wrap(_fn) if _fn is not None else wrap
