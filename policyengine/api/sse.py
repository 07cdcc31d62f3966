"""Server-sent events on the wire: the response class that sends them, and OpenAI's encoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from policyengine.dispatch.step import END as _END
from policyengine.dispatch.step import finish as _finish
from policyengine.dispatch.step import ready_or_pending as _ready_or_pending

__all__ = ["SSE_HEADERS", "OpenAIEvents", "SSEResponse"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class OpenAIEvents:
    """OpenAI's chat stream encoding: `data: {json}` per chunk, `data: [DONE]` at the end of a
    complete answer (a `policyengine.gateway.StreamEncoder`)."""

    __slots__ = ()

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """One `data:` event."""
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def done(self) -> bytes:
        """The `[DONE]` event."""
        return b"data: [DONE]\n\n"

    def comment(self, text: str) -> bytes:
        """An SSE comment line (`: text`), which clients ignore: a keep-alive."""
        return b": " + text.replace("\n", " ").encode() + b"\n\n"


OPENAI_EVENTS = OpenAIEvents()


class SSEResponse(Response):
    """A `text/event-stream` response sent straight through the ASGI `send`.

    Starlette's `StreamingResponse` runs an anyio task group per response (the body in one task,
    a disconnect listener in another) and sends each chunk on its own. Here the body is sent
    from the request's own task; events that are already available when one is produced go out
    in the same `send` (nothing waits to be coalesced: the buffer is flushed as soon as the next
    event is not ready); once the relay first has to wait for the upstream, a plain asyncio task
    waits on `receive()` and on `http.disconnect` cancels the sending task, so the relay generator
    is closed (and with it the upstream stream) even while it waits for the next chunk.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncGenerator[bytes, None], headers: Mapping[str, str]) -> None:
        self.body_iterator = content
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        state = {"done": False, "disconnected": False}

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    if not state["done"]:
                        state["disconnected"] = True
                        task.cancel()  # type: ignore[union-attr]
                    return

        # The watcher starts the first time the relay has to wait for the upstream: an answer that
        # is already complete (a short one, a cached one) goes out without a second task.
        watcher: asyncio.Task[None] | None = None
        gen = self.body_iterator
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            buf: list[bytes] = []
            while True:
                item, pending = _ready_or_pending(gen)
                if pending is not None:
                    if watcher is None:
                        watcher = asyncio.get_running_loop().create_task(watch())
                    if buf:
                        try:
                            await send({"type": "http.response.body", "body": b"".join(buf), "more_body": True})
                        except BaseException as exc:  # cancelled while flushing: finish the step first
                            with contextlib.suppress(BaseException):
                                await _finish(*pending, exc=exc)
                            raise
                        buf = []
                    item = await _finish(*pending)
                if item is _END:
                    break
                buf.append(item)
            state["done"] = True
            await send({"type": "http.response.body", "body": b"".join(buf), "more_body": False})
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
            task.uncancel()  # type: ignore[union-attr]  # the client went away: not an error
        finally:
            state["done"] = True
            if watcher is not None:
                watcher.cancel()
            await gen.aclose()
