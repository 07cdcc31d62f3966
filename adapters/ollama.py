"""Ollama's native chat API (`POST /api/chat`), for a model declared `provider ollama` + `api native`.

Why: Ollama's OpenAI-compatible `/v1` endpoint runs the model with the context it was loaded
with and silently drops the start of a longer prompt. The native API lets the caller set the
window (`options.num_ctx`, from the model's declared `context`) and refuse truncation
(`truncate: false`, `shift: false`: ollama/ollama api/types.go ChatRequest), so an over-long
prompt is an error the dispatcher classifies (context_length_exceeded, next model) instead
of a wrong answer.

Wire format (ollama/ollama docs/api.md "Generate a chat completion"): the request carries
`model`, `messages` (`role`, `content`, `images` as base64, `tool_calls` with arguments as
objects, `tool_name` on tool results), `tools`, `format` ("json" or a JSON schema), `options`
(`num_ctx`, `num_predict`, `temperature`, `top_p`, `seed`, `stop`, ...), `stream`. The answer is
one JSON object, or with `stream: true` newline-delimited JSON objects, the last with
`"done": true`, `done_reason` and the counts `prompt_eval_count` / `eval_count` (usage). An error
is `{"error": "..."}`, with an HTTP status before the stream starts, as a line inside it after.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from policyengine.types import ModelSpec

from .base import CallOptions, TransportError, UpstreamError, guarded
from .streams import TranslatedChunkStream, open_response, post, stream_errors
from .translate import data_url_parts, json_args, text_of

_JSON = {"content-type": "application/json", "accept": "application/json"}
_NDJSON = {"content-type": "application/json", "accept": "application/x-ndjson"}

#: OpenAI sampling fields and the Ollama option each becomes
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "frequency_penalty": "frequency_penalty",
            "presence_penalty": "presence_penalty", "top_k": "top_k", "min_p": "min_p"}
_FINISH = {"stop": "stop", "length": "length"}


def native_root(base_url: str) -> str:
    """The server root for a base URL written either way (`http://h:11434`, `.../v1`, `.../api`)."""
    root = base_url.rstrip("/")
    for tail in ("/v1", "/api"):
        if root.endswith(tail):
            root = root[: -len(tail)]
    return root


def _message(m: dict) -> dict:
    """One OpenAI chat message as an Ollama message (images inline as base64, tool-call
    arguments as objects)."""
    role = m.get("role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = m.get("content")
    if isinstance(content, list):
        texts, images = [], []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                texts.append(part.get("text") or "")
            elif part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "")
                _, b64 = data_url_parts(url)
                if b64 is None:
                    raise UpstreamError(400, {}, {"error": {"type": "invalid_request_error", "message":
                                                            "Ollama's native API takes images as data: URLs"}})
                images.append(b64)
        out["content"] = "".join(texts)
        if images:
            out["images"] = images
    else:
        out["content"] = text_of(content) if content is not None else ""
    if m.get("tool_calls"):
        out["tool_calls"] = [{"function": {"name": (tc.get("function") or {}).get("name"),
                                           "arguments": json_args((tc.get("function") or {}).get("arguments"))}}
                             for tc in m["tool_calls"]]
    if role == "tool" and m.get("name"):
        out["tool_name"] = m["name"]
    return out


def to_ollama(spec: ModelSpec, body: dict, *, stream: bool) -> dict:
    """The `/api/chat` request for an OpenAI chat request to `spec`: its `context` is `num_ctx`,
    and truncation and context shifting are refused (an over-long prompt is an error)."""
    options: dict[str, Any] = {}
    if spec.context:
        options["num_ctx"] = spec.context
    for k, v in _OPTIONS.items():
        if body.get(k) is not None:
            options[v] = body[k]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int):
        options["num_predict"] = limit
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    out: dict[str, Any] = {"model": spec.upstream_model, "messages": [_message(m) for m in body["messages"]],
                           "stream": stream, "options": options, "truncate": False, "shift": False}
    if body.get("tools"):
        out["tools"] = body["tools"]
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        out["format"] = "json"
    elif fmt.get("type") == "json_schema":
        out["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
    return out


def _usage(d: dict) -> dict | None:
    if "prompt_eval_count" not in d and "eval_count" not in d:
        return None
    p, c = int(d.get("prompt_eval_count") or 0), int(d.get("eval_count") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _calls(msg: dict, start: int = 0) -> list[dict]:
    return [{"index": start + i, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": (tc.get("function") or {}).get("name"),
                          "arguments": orjson.dumps((tc.get("function") or {}).get("arguments") or {}).decode()}}
            for i, tc in enumerate(msg.get("tool_calls") or ())]


def _finish(d: dict, has_calls: bool) -> str:
    return "tool_calls" if has_calls else _FINISH.get(d.get("done_reason") or "stop", "stop")


def _error(data: Any, status: int | None, raw: bytes | str) -> UpstreamError | None:
    if isinstance(data, dict) and data.get("error") is not None:
        return UpstreamError(status, {}, raw, in_stream=status is None)
    return None


def from_ollama(data: dict, model: str) -> dict:
    """A non-streamed `/api/chat` answer as an OpenAI chat.completion."""
    msg = data.get("message")
    if not isinstance(msg, dict):
        raise TransportError("protocol_error", "Ollama answered without a message")
    calls = _calls(msg)
    out: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ("" if not calls else None)}
    if msg.get("thinking"):
        out["reasoning_content"] = msg["thinking"]
    if calls:
        out["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": data.get("model") or model,
            "choices": [{"index": 0, "message": out, "finish_reason": _finish(data, bool(calls))}],
            "usage": _usage(data)}


class OllamaChunkStream(TranslatedChunkStream):
    """`/api/chat` with `stream: true` (NDJSON) -> OpenAI chunks. Complete only after the line
    with `"done": true`; an `{"error": ...}` line is an in-stream UpstreamError."""

    async def _iter(self) -> AsyncIterator[dict]:
        first, ntools = True, 0
        with stream_errors():
            async for line in self._response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    data = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise TransportError("malformed_chunk", f"not JSON: {line[:80]!r}") from None
                if not isinstance(data, dict):
                    raise TransportError("malformed_chunk", "line is not a JSON object")
                err = _error(data, None, line)
                if err is not None:
                    raise err
                msg = data.get("message") or {}
                if first:
                    first = False
                    yield self._chunk({"role": "assistant", "content": ""})
                if msg.get("thinking"):
                    yield self._chunk({"reasoning_content": msg["thinking"]})
                if msg.get("content"):
                    yield self._chunk({"content": msg["content"]})
                calls = _calls(msg, ntools)
                if calls:
                    ntools += len(calls)
                    yield self._chunk({"tool_calls": calls})
                if data.get("done"):
                    self.saw_done = True
                    yield self._chunk({}, _finish(data, ntools > 0))
                    usage = _usage(data)
                    if usage and self._include_usage:
                        yield self._usage_chunk(usage)
                    return


class OllamaNativeAdapter:
    """Speaks Ollama's native `/api/chat` (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @staticmethod
    def _url(opts: CallOptions, spec: ModelSpec) -> str:
        if not opts.base_url:
            raise TransportError("config", f"model {spec.name} has no base_url")
        return native_root(opts.base_url) + "/api/chat"

    @staticmethod
    def _headers(base: dict[str, str], opts: CallOptions) -> dict[str, str]:
        h = {**base, **opts.extra_headers}
        if opts.key:
            h["authorization"] = f"Bearer {opts.key}"  # an Ollama behind an authenticating proxy
        return h

    @guarded
    async def complete(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict:
        url = self._url(opts, spec)
        raw = await post(self._client, url, orjson.dumps(to_ollama(spec, body, stream=False)),
                         self._headers(_JSON, opts), opts)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TransportError("protocol_error", f"response is not JSON: {raw[:80]!r}") from None
        if not isinstance(data, dict):
            raise TransportError("protocol_error", "response is not a JSON object")
        err = _error(data, 200, raw)
        if err is not None:
            raise err
        return from_ollama(data, spec.upstream_model)

    @guarded
    async def open_stream(self, spec: ModelSpec, body: dict, opts: CallOptions) -> OllamaChunkStream:
        url = self._url(opts, spec)
        resp = await open_response(self._client, url, orjson.dumps(to_ollama(spec, body, stream=True)),
                                   self._headers(_NDJSON, opts), opts)
        return OllamaChunkStream(resp, spec.upstream_model, opts.include_usage)

    async def aclose(self) -> None:
        return None
