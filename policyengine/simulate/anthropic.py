"""A simulated Anthropic Messages API server (`POST /v1/messages`) on 127.0.0.1.

It checks `x-api-key` and `anthropic-version` as Anthropic does, answers with text (or a
`tool_use` block calling the first tool offered), plain or as Anthropic's SSE events
(message_start, ping, content_block_start/delta/stop with text_delta / input_json_delta,
message_delta, message_stop), and records every request body. Faults: the next requests
answer with an Anthropic error (`add_fault(status, error_type)`, e.g. 529 overloaded_error).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from .server import DEFAULT_ANSWER, LocalSim, _words

__all__ = ["SimAnthropic"]


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class SimAnthropic(LocalSim):
    """One simulated Anthropic-compatible endpoint; `url` is the base URL to declare."""

    def __init__(self, *, keys: list[str] | None = None, answer: str = DEFAULT_ANSWER,
                 models: list[str] | None = None) -> None:
        self.keys = set(keys or ())
        self.answer = answer
        self.models = set(models or ())  # empty: any model id
        self.faults: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL (`/v1/messages` is added by the adapter)."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SimAnthropic:
        """Listen on a free port."""
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        await self._serve(app)
        return self

    def add_fault(self, status: int, error_type: str = "overloaded_error") -> None:
        """The next request answers `status` with an Anthropic error of `error_type`."""
        self.faults.append((status, error_type))

    @staticmethod
    def _error(status: int, kind: str, message: str) -> web.Response:
        return web.Response(status=status, content_type="application/json",
                            body=orjson.dumps({"type": "error", "error": {"type": kind, "message": message}}))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read() or b"{}")
        self.requests.append({"t": time.monotonic(), "headers": dict(request.headers), "body": body})
        if self.keys and request.headers.get("x-api-key") not in self.keys:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version header is required")
        if self.faults:
            status, kind = self.faults.pop(0)
            return self._error(status, kind, f"simulated {kind}")
        if self.models and body.get("model") not in self.models:
            return self._error(404, "not_found_error", f"model: {body.get('model')}")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not isinstance(body.get("max_tokens"), int):
            return self._error(400, "invalid_request_error", "messages and max_tokens are required")
        tools = body.get("tools") or []
        mid = f"msg_{uuid.uuid4().hex[:24]}"
        last = msgs[-1].get("content")
        answered_tool = isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                                       for b in last)
        if tools and not answered_tool and (body.get("tool_choice") or {}).get("type") != "none":
            block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": tools[0]["name"],
                     "input": {"query": "simulated"}}
            stop = "tool_use"
        else:
            words = _words(self.answer)[: body["max_tokens"]]
            block = {"type": "text", "text": "".join(words)}
            stop = "end_turn" if len(words) < body["max_tokens"] else "max_tokens"
        in_tokens = sum(len(str(m.get("content"))) for m in msgs) // 4 + 1
        out_tokens = len(_words(block.get("text", ""))) or 8
        if not body.get("stream"):
            return web.json_response({"id": mid, "type": "message", "role": "assistant", "model": body.get("model"),
                                      "content": [block], "stop_reason": stop, "stop_sequence": None,
                                      "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens}})
        resp = web.StreamResponse(status=200, headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        events = [_sse("message_start", {"message": {"id": mid, "type": "message", "role": "assistant",
                                                     "model": body.get("model"), "content": [], "stop_reason": None,
                                                     "usage": {"input_tokens": in_tokens, "output_tokens": 1}}}),
                  _sse("ping", {})]
        if block["type"] == "text":
            events.append(_sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
            events += [_sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
                       for w in _words(block["text"])]
        else:
            events.append(_sse("content_block_start", {"index": 0, "content_block": {**block, "input": {}}}))
            js = orjson.dumps(block["input"]).decode()
            events += [_sse("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                          "partial_json": js[i:i + 7]}})
                       for i in range(0, len(js), 7)]
        events += [_sse("content_block_stop", {"index": 0}),
                   _sse("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                          "usage": {"output_tokens": out_tokens}}),
                   _sse("message_stop", {})]
        for ev in events:
            await resp.write(ev)
        await resp.write_eof()
        return resp
