"""The gateway's lean SSE response: coalesced sends, no waiting to coalesce, disconnect closes the relay."""

from __future__ import annotations

import asyncio

from policyengine.api.sse import SSEResponse


def _never_disconnects():
    async def receive():
        await asyncio.Event().wait()
    return receive


async def test_ready_events_share_one_send_and_a_wait_flushes_first():
    sent: list[dict] = []
    gate = asyncio.Event()

    async def body():
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"
        await gate.wait()  # not ready: what is buffered goes out before waiting
        yield b"data: 3\n\n"
        yield b"data: [DONE]\n\n"

    async def send(msg):
        sent.append(msg)
        if msg.get("body") == b"data: 1\n\ndata: 2\n\n":
            asyncio.get_running_loop().call_soon(gate.set)

    await asyncio.wait_for(SSEResponse(body(), headers={"X-A": "b"})(
        {"type": "http"}, _never_disconnects(), send), 5)
    assert sent[0]["type"] == "http.response.start" and (b"x-a", b"b") in sent[0]["headers"]
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    bodies = [(m["body"], m["more_body"]) for m in sent[1:]]
    assert bodies == [(b"data: 1\n\ndata: 2\n\n", True), (b"data: 3\n\ndata: [DONE]\n\n", False)]


async def test_client_disconnect_closes_the_relay_while_it_waits():
    closed = asyncio.Event()
    sent: list[dict] = []

    async def body():
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(3600)  # the upstream stalls
            yield b"data: never\n\n"
        finally:
            await asyncio.sleep(0)  # async cleanup (closing the upstream stream) still runs
            closed.set()

    async def receive():
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    await asyncio.wait_for(SSEResponse(body(), headers={})({"type": "http"}, receive, send), 5)
    assert closed.is_set()
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n"]
    assert asyncio.current_task().cancelling() == 0


async def test_cancelled_from_outside_is_not_swallowed():
    closed = asyncio.Event()

    async def body():
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(3600)
        finally:
            closed.set()

    async def send(msg):
        pass

    t = asyncio.create_task(SSEResponse(body(), headers={})({"type": "http"}, _never_disconnects(), send))
    await asyncio.sleep(0.05)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    assert closed.is_set()
