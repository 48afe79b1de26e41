"""DecodeBudget: bytes held per request and in all; 413 for what can never fit, 503 after the wait."""
from __future__ import annotations

import asyncio

import pytest

from app.core.errors import AppError
from app.services.budget import ByteSemaphore, DecodeBudget, TooLargeToDecode


def test_an_image_over_the_request_budget_is_refused_at_once():
    async def main():
        budget = DecodeBudget(total_bytes=1000, per_request_bytes=500, wait_s=5)
        with pytest.raises(TooLargeToDecode):
            async with budget.hold(501):
                pass
        assert budget.total.used == 0

    asyncio.run(main())


def test_a_request_waits_for_its_own_images_then_the_process_budget_times_out():
    async def main():
        budget = DecodeBudget(total_bytes=1000, per_request_bytes=600, wait_s=0.05)
        request = budget.for_request()
        first_in, release_first = asyncio.Event(), asyncio.Event()
        order = []

        async def image(name: str, n: int, gate: asyncio.Event | None = None):
            async with budget.hold(n, request):
                order.append(name)
                if gate:
                    first_in.set()
                    await gate.wait()

        a = asyncio.create_task(image("a", 400, release_first))
        await first_in.wait()
        b = asyncio.create_task(image("b", 400))  # 800 > 600: waits for a, however long
        await asyncio.sleep(0)
        assert order == ["a"] and request.used == 400
        release_first.set()
        await asyncio.gather(a, b)
        assert order == ["a", "b"] and request.used == 0 == budget.total.used

        hog = budget.for_request()
        await hog.acquire(600)
        await budget.total.acquire(600)  # another request holds 600 of the process's 1000
        with pytest.raises(AppError) as info:
            async with budget.hold(500):
                pass
        assert info.value.status == 503 and info.value.headers["Retry-After"]
        assert budget.total.used == 600
        budget.total.release(600)

    asyncio.run(main())


def test_release_wakes_waiters():
    async def main():
        sem = ByteSemaphore(10)
        await sem.acquire(8)
        waiter = asyncio.create_task(sem.acquire(5))
        await asyncio.sleep(0)
        assert not waiter.done()
        sem.release(8)
        await asyncio.wait_for(waiter, 1)
        assert sem.used == 5

    asyncio.run(main())
