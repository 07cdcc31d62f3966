"""`ready_or_pending` / `finish`: take an item without suspending when it is ready, finish it in the
same task otherwise, with cancellation and thrown exceptions reaching the generator."""

from __future__ import annotations

import asyncio

import pytest

from policyengine.dispatch.step import END, finish, ready_or_pending


async def test_ready_items_come_without_suspending_and_the_end_is_end() -> None:
    async def gen():
        yield 1
        yield 2

    g = gen()
    assert ready_or_pending(g) == (1, None)
    assert ready_or_pending(g) == (2, None)
    assert ready_or_pending(g) == (END, None)


async def test_a_pending_item_is_finished_in_the_same_task() -> None:
    ev = asyncio.Event()

    async def gen():
        await ev.wait()
        yield "late"

    g = gen()
    item, pending = ready_or_pending(g)
    assert item is None and pending is not None
    asyncio.get_running_loop().call_soon(ev.set)
    assert await finish(*pending) == "late"
    item, pending = ready_or_pending(g)
    assert item is END


async def test_cancellation_while_waiting_reaches_the_generator() -> None:
    cleaned = []

    async def gen():
        try:
            await asyncio.sleep(10)
            yield "never"
        finally:
            cleaned.append(True)

    async def consume():
        _, pending = ready_or_pending(gen())
        return await finish(*pending)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_an_exception_thrown_in_ends_the_generator_which_stays_closable() -> None:
    async def gen():
        await asyncio.sleep(10)
        yield "never"

    g = gen()
    _, pending = ready_or_pending(g)
    with pytest.raises(RuntimeError, match="stop"):
        await finish(*pending, exc=RuntimeError("stop"))
    await g.aclose()
