"""The streaming path of the gateway: the decision row commits while failover finds a first chunk;
then relay, then the outcome row."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response

from policyengine.api import decide
from policyengine.api.auth import Principal
from policyengine.api.chat_common import (
    SSE_HEADERS,
    attempt_dicts,
    count_attempts,
    dispatch_error,
    response_headers,
    sse,
)
from policyengine.dispatch.step import END as _END
from policyengine.dispatch.step import finish as _finish
from policyengine.dispatch.step import ready_or_pending as _ready_or_pending
from policyengine.types import Action, Decision


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


def stream_attempts(stream: Any) -> list[dict[str, Any]]:
    res = getattr(stream, "result", None)
    if res is not None:
        return attempt_dicts(res.attempts)
    return attempt_dicts(list(getattr(stream, "attempts", None) or []))


def stream_model(stream: Any, chunk: dict[str, Any], policy: Any) -> str | None:
    v = getattr(stream, "model", None)
    if isinstance(v, str):
        return v
    upstream = chunk.get("model")
    names = [n for n, spec in policy.models.items() if spec.upstream_model == upstream or n == upstream]
    return names[0] if len(names) == 1 else (upstream if isinstance(upstream, str) else None)


async def stream_response(s: Any, principal: Principal, dispatcher: Any, policy: Any, up: dict[str, Any], action: Action,
                  decision: Decision, decision_id: str, log: Any, t0: float) -> Response:
    from policyengine.dispatch import DispatchError

    dumped = decide.dump(action, decision)  # shared by the decision row and the outcome row
    # The decision row commits while the upstream is opened (the row is queued now, the commit
    # runs while this request waits for its first chunk): the log adds nothing to the time to
    # first token unless the commit is the slower of the two. Nothing is sent before both are
    # done, and a failed commit closes the stream unread (503). The answering model, the attempts
    # and the usage are in the outcome row, which follows (`follows` = this row's id).
    pending = log(decision, dumped=dumped, latency_ms=(time.perf_counter() - t0) * 1000,
                  extra={"outcome": "streaming", "stream": True})
    stream = dispatcher.stream(up, decision.routing, session_id=action.session_id,
                               prompt_tokens=action.prompt_tokens)
    it = stream.__aiter__()
    failed: DispatchError | None = None

    def log_outcome(model: str | None, atts: list[dict[str, Any]], outcome: str, **extra: Any) -> None:
        """The outcome row that follows the decision row (queued, not awaited)."""
        decide.follow_up(s, kind="chat_outcome", follows=decision_id, decision_id=decide.outcome_id(decision_id),
                         principal=principal, action=action, decision_d=dumped[1], model=model, attempts=atts,
                         latency_ms=(time.perf_counter() - t0) * 1000,
                         extra={"outcome": outcome, "decision_id": decision_id, "stream": True, **extra})

    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = None
    except DispatchError as exc:
        failed, first = exc, None
    except BaseException:
        pending.abandon()
        await stream.aclose()
        raise
    try:
        await pending
    except BaseException:
        await stream.aclose()
        raise
    if failed is not None:
        await stream.aclose()
        atts = attempt_dicts(failed.attempts)
        count_attempts(s, atts)
        log_outcome(None, atts, "upstream_failed", error_class=failed.error_class, reason=failed.reason)
        s.metrics.chat_requests.labels(failed.model or "-", f"failed_{failed.error_class}").inc()
        err = dispatch_error(failed, decision_id, atts)
        err.headers.update(response_headers(decision_id, decision, None, atts))
        raise err
    model = stream_model(stream, first or {}, policy)
    atts_first = stream_attempts(stream)
    headers = {**SSE_HEADERS, **response_headers(decision_id, decision, model, atts_first, decision.tags)}

    async def relay() -> AsyncIterator[bytes]:
        outcome, err_info = "ok", None
        try:
            if first is not None:
                if model:
                    first["model"] = model
                yield sse(first)
            try:
                async for chunk in it:
                    if "error" in chunk and "choices" not in chunk:  # the stream broke after it started
                        outcome, err_info = "failed_in_stream", {"error": chunk["error"]}
                        chunk = {"error": {**chunk["error"], "decision_id": decision_id}} \
                            if isinstance(chunk["error"], dict) else chunk
                    elif model:
                        chunk["model"] = model
                    yield sse(chunk)
            except DispatchError as exc:
                outcome, err_info = f"failed_{exc.error_class}", {"error_class": exc.error_class,
                                                                  "reason": exc.reason}
                yield sse({"error": {"message": f"stream failed ({exc.reason})"
                                      + (f": {exc.message}" if exc.message else ""),
                                      "type": "upstream_error", "code": exc.reason, "decision_id": decision_id}})
        finally:
            await stream.aclose()
        res = getattr(stream, "result", None)
        final_model = getattr(res, "model", None) or model
        atts = stream_attempts(stream)
        count_attempts(s, atts)
        s.metrics.chat_requests.labels(final_model or "-", outcome).inc()
        s.metrics.request_latency.labels("chat_stream").observe(time.perf_counter() - t0)
        # The decision row was committed before the first byte. The outcome row (final model, every
        # attempt, usage) is queued to the same group commit, without holding the client's [DONE].
        log_outcome(final_model, atts, outcome, usage=getattr(res, "usage", None),
                    finish_reason=getattr(res, "finish_reason", None), complete=getattr(res, "complete", None),
                    **(err_info or {}))
        if outcome == "ok":
            # A broken stream ends on its error event, never on [DONE]: a client must not
            # mistake a truncated answer for a complete one.
            yield b"data: [DONE]\n\n"

    return SSEResponse(relay(), headers=headers)
