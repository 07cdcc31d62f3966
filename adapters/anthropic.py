"""Anthropic-compatible servers (`provider anthropic`): the Messages API, `POST {base_url}/v1/messages`.

The dispatcher hands every adapter an OpenAI chat request; this one writes it as a Messages
request (system, alternating user/assistant turns with text, image, `tool_use` and
`tool_result` blocks, tools, tool_choice, max_tokens, stop_sequences, temperature, top_p,
metadata.user_id) and reads the answer (a `message`, or Anthropic's SSE events) back as an
OpenAI `chat.completion` or chunks.

Native pass-through: a request that came in on `/v1/messages` carries the caller's original
Anthropic body under `body[NATIVE_KEY]["anthropic"]` (set by the dialect at the edge). Its
`messages` and `system` are then sent as they came (cache_control marks, thinking blocks
and all: the gateway never rewrites messages), with the Anthropic-only fields (`top_k`,
`thinking`, `service_tier`, ...) and the caller's tool definitions when the gateway kept the
same tools; everything the gateway may have changed (the model, the tools it left, stream)
comes from the OpenAI request. Other adapters drop `NATIVE_KEY`.

Auth: `x-api-key` with the model's key; `anthropic-version: 2023-06-01` unless the model's
headers say otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import httpx
import orjson
from httpx_sse import EventSource

from policyengine.types import ModelSpec

from .base import NATIVE_KEY, CallOptions, TransportError, UpstreamError, guarded
from .streams import TranslatedChunkStream, open_response, post, stream_errors

__all__ = ["AnthropicAdapter", "from_message", "messages_url", "to_messages"]

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
         "refusal": "content_filter", "pause_turn": "stop"}
# Anthropic-only request fields a native request keeps
_NATIVE_ONLY = ("top_k", "thinking", "service_tier", "container", "mcp_servers", "context_management")


@lru_cache(maxsize=256)
def messages_url(base_url: str) -> str:
    """`{base}/v1/messages` for a base URL with or without its `/v1`."""
    base = base_url.rstrip("/")
    if base.endswith("/v1/messages"):
        return base
    return base + ("/messages" if base.endswith("/v1") else "/v1/messages")


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) \
        else str(part.get("image_url") or "")
    if url.startswith("data:") and ";base64," in url:
        media, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for p in content or ():
        if not isinstance(p, dict):
            continue
        if p.get("type") == "text" and isinstance(p.get("text"), str):
            out.append({"type": "text", "text": p["text"]})
        elif p.get("type") == "image_url":
            out.append(_image_block(p))
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text")


def _args(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        v = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def to_messages(spec: ModelSpec, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The Messages request for an OpenAI chat request (see the module docstring)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:  # Anthropic's turns alternate: same-role messages merge
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in body.get("messages") or ():
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "user":
            add("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function") or {}
                blocks.append({"type": "tool_use", "id": tc.get("id") or "", "name": fn.get("name") or "",
                               "input": _args(fn.get("arguments"))})
            add("assistant", blocks)
        elif role in ("tool", "function"):
            add("user", [{"type": "tool_result", "tool_use_id": m.get("tool_call_id") or "",
                          "content": _text(m.get("content"))}])
    out: dict[str, Any] = {"model": spec.upstream_model, "messages": turns,
                           "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens")
                           or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for k in ("temperature", "top_p"):
        if body.get(k) is not None:
            out[k] = body[k]
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    tools = body.get("tools") or []
    if tools:
        out["tools"] = [{"name": (t.get("function") or {}).get("name", ""),
                         "description": (t.get("function") or {}).get("description", ""),
                         "input_schema": (t.get("function") or {}).get("parameters") or {"type": "object"}}
                        for t in tools if isinstance(t, dict)]
    tc = body.get("tool_choice")
    choice: dict[str, Any] | None = None
    if tc == "auto":
        choice = {"type": "auto"}
    elif tc == "required":
        choice = {"type": "any"}
    elif tc == "none":
        choice = {"type": "none"}
    elif isinstance(tc, dict) and isinstance(tc.get("function"), dict):
        choice = {"type": "tool", "name": tc["function"].get("name", "")}
    if body.get("parallel_tool_calls") is False and tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None and tools:
        out["tool_choice"] = choice
    native = (body.get(NATIVE_KEY) or {}).get("anthropic")
    if isinstance(native, dict):
        if isinstance(native.get("messages"), list):
            out["messages"] = native["messages"]
        if native.get("system") is not None:
            out["system"] = native["system"]
        for k in _NATIVE_ONLY:
            if k in native:
                out[k] = native[k]
        ntools = native.get("tools")
        if isinstance(ntools, list) and out.get("tools") is not None and \
                [t.get("name") for t in ntools if isinstance(t, dict)] == [t["name"] for t in out["tools"]]:
            out["tools"] = ntools  # the same tools the gateway kept: as the caller wrote them
        if isinstance(native.get("metadata"), dict) and "user_id" in native["metadata"]:
            out["metadata"] = {"user_id": native["metadata"]["user_id"]}
    if stream:
        out["stream"] = True
    return out


def _usage(u: Any) -> dict[str, int] | None:
    if not isinstance(u, dict):
        return None
    i, o = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def from_message(data: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic `message` as an OpenAI `chat.completion`."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for b in data.get("content") or ():
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            texts.append(str(b.get("text") or ""))
        elif b.get("type") == "tool_use":
            calls.append({"id": b.get("id") or "", "type": "function",
                          "function": {"name": b.get("name") or "", "arguments": orjson.dumps(b.get("input") or {}).decode()}})
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    out = {"id": f"chatcmpl-{data.get('id') or ''}", "object": "chat.completion", "created": 0,
           "model": data.get("model") or model,
           "choices": [{"index": 0, "message": msg, "finish_reason": _STOP.get(data.get("stop_reason") or "", "stop")}]}
    usage = _usage(data.get("usage"))
    if usage:
        out["usage"] = usage
    return out


def _headers(spec: ModelSpec, opts: CallOptions, *, stream: bool) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json",
         "anthropic-version": API_VERSION}
    h.update(opts.extra_headers)
    if opts.key:
        h["x-api-key"] = opts.key
    return h


def _error_status(err: Any) -> int:
    kind = (err.get("error") or {}).get("type") if isinstance(err, dict) else None
    return {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500, "invalid_request_error": 400,
            "authentication_error": 401, "permission_error": 403, "not_found_error": 404,
            "request_too_large": 413}.get(str(kind), 500)


class AnthropicChunkStream(TranslatedChunkStream):
    """Anthropic's stream events as OpenAI chunks: text deltas as content, `tool_use` blocks as
    tool_calls (arguments from `input_json_delta`), `message_delta` as the finish reason and
    usage; `message_stop` ends it cleanly; an `error` event is an in-stream UpstreamError."""

    async def _iter(self) -> AsyncIterator[dict]:
        tool_index: dict[int, int] = {}  # content block index -> tool_calls index
        usage: dict[str, int] = {}
        with stream_errors():
            yield self._chunk({"role": "assistant", "content": ""})
            async for sse in EventSource(self._response).aiter_sse():
                if not sse.data or sse.event == "ping":
                    continue
                try:
                    ev = orjson.loads(sse.data)
                except orjson.JSONDecodeError:
                    raise TransportError("malformed_chunk", f"not JSON: {sse.data[:80]!r}") from None
                kind = ev.get("type") if isinstance(ev, dict) else None
                if sse.event == "error" or kind == "error":
                    raise UpstreamError(_error_status(ev), {}, ev, in_stream=True)
                if kind == "message_start":
                    u = (ev.get("message") or {}).get("usage") or {}
                    usage["input_tokens"] = int(u.get("input_tokens") or 0)
                elif kind == "content_block_start":
                    block = ev.get("content_block") or {}
                    if block.get("type") == "tool_use":
                        n = tool_index[ev.get("index", 0)] = len(tool_index)
                        yield self._chunk({"tool_calls": [{"index": n, "id": block.get("id"), "type": "function",
                                                           "function": {"name": block.get("name"), "arguments": ""}}]})
                    elif block.get("type") == "text" and block.get("text"):
                        yield self._chunk({"content": block["text"]})
                elif kind == "content_block_delta":
                    d = ev.get("delta") or {}
                    if d.get("type") == "text_delta":
                        yield self._chunk({"content": d.get("text") or ""})
                    elif d.get("type") == "input_json_delta" and ev.get("index", 0) in tool_index:
                        yield self._chunk({"tool_calls": [{"index": tool_index[ev.get("index", 0)],
                                                           "function": {"arguments": d.get("partial_json") or ""}}]})
                elif kind == "message_delta":
                    u = ev.get("usage") or {}
                    usage["output_tokens"] = int(u.get("output_tokens") or 0)
                    reason = (ev.get("delta") or {}).get("stop_reason")
                    yield self._chunk({}, _STOP.get(reason or "", "stop"))
                elif kind == "message_stop":
                    if self._include_usage and usage:
                        yield self._usage_chunk(_usage(usage) or {})
                    self.saw_done = True
                    return


class AnthropicAdapter:
    """The Messages API adapter (see the module docstring)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    @guarded
    async def complete(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict:
        """One Messages call, answered as an OpenAI chat.completion."""
        if not opts.base_url:
            raise TransportError("config", f"model {spec.name} has no base_url")
        payload = orjson.dumps(to_messages(spec, body, stream=False))
        raw = await post(self._client, messages_url(opts.base_url), payload, _headers(spec, opts, stream=False), opts)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TransportError("protocol_error", f"response is not JSON: {raw[:80]!r}") from None
        if not isinstance(data, dict) or data.get("type") == "error":
            raise UpstreamError(_error_status(data), {}, raw)
        return from_message(data, spec.upstream_model)

    @guarded
    async def open_stream(self, spec: ModelSpec, body: dict, opts: CallOptions) -> AnthropicChunkStream:
        """A streamed Messages call, read as OpenAI chunks."""
        if not opts.base_url:
            raise TransportError("config", f"model {spec.name} has no base_url")
        payload = orjson.dumps(to_messages(spec, body, stream=True))
        resp = await open_response(self._client, messages_url(opts.base_url), payload,
                                   _headers(spec, opts, stream=True), opts)
        return AnthropicChunkStream(resp, spec.upstream_model, opts.include_usage)

    async def aclose(self) -> None:
        """Nothing of its own to close (the httpx client is the dispatcher's)."""
        return None
