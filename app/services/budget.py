"""Decoded-image memory budget: how many bytes of decoded pixels may be held at once, per request and in all.

A small upload can declare a large canvas in a deep pixel format (a 78 kB PNG is 40 MP of 16-bit gray), so
memory is reserved from the image header *before* decoding (`model.decode.decode_cost`) and released when
the image's faces have been cropped. An image that alone exceeds the per-request budget is refused (413); a
request that cannot get room within `wait_s` because other requests hold it is refused (503, Retry-After).
Inside one request, images that do not fit together are decoded one after another.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from app.core.errors import AppError


class TooLargeToDecode(Exception):
    """One image needs more memory than a request may hold."""

    def __init__(self, need: int, limit: int):
        super().__init__(f"decoding this image needs about {need // 2**20} MiB; a request may use at most "
                         f"{limit // 2**20} MiB (FACEID_MAX_DECODE_BYTES_PER_REQUEST)")
        self.need, self.limit = need, limit


class ByteSemaphore:
    """At most `capacity` bytes held at once. Runs on the event loop (no threads), so a plain counter is safe."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._waiters: set[asyncio.Future] = set()

    async def acquire(self, n: int, timeout_s: float | None = None) -> None:
        """Wait until `n` bytes fit; TimeoutError after `timeout_s` (None: wait as long as it takes)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self.used + n > self.capacity:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            finally:
                self._waiters.discard(waiter)
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        for waiter in list(self._waiters):  # each re-checks whether it fits now
            if not waiter.done():
                waiter.set_result(None)


class DecodeBudget:
    """The process-wide budget (`total_bytes`) plus one `per_request_bytes` semaphore per request."""

    def __init__(self, total_bytes: int, per_request_bytes: int, wait_s: float):
        self.total = ByteSemaphore(total_bytes)
        self.per_request_bytes = min(per_request_bytes, total_bytes)
        self.wait_s = wait_s

    def for_request(self) -> ByteSemaphore:
        return ByteSemaphore(self.per_request_bytes)

    @asynccontextmanager
    async def hold(self, n: int, request: ByteSemaphore | None = None):
        """Hold `n` bytes of both the request's and the process's budget for the body of the `with`."""
        request = request or self.for_request()
        if n > request.capacity:
            raise TooLargeToDecode(n, request.capacity)
        await request.acquire(n)  # only this request's own images hold it: they finish
        try:
            try:
                await self.total.acquire(n, self.wait_s)
            except TimeoutError:
                raise AppError(503, "overloaded", f"the server is busy: no memory to decode another image within "
                               f"{self.wait_s:g} s; retry shortly", headers={"Retry-After": "1"}) from None
            try:
                yield
            finally:
                self.total.release(n)
        finally:
            request.release(n)
