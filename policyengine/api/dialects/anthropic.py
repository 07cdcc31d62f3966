"""Anthropic's Messages API at the edge: requests in, messages and SSE events out, errors.

- `to_chat(body)`: a Messages request (`system`, `messages` of content blocks, `tools`,
  `tool_choice`, `max_tokens`, `stop_sequences`, `temperature`, `top_p`, `metadata.user_id`,
  `stream`) as the OpenAI chat request the gateway routes. Text, images (base64 or URL),
  `tool_use` and `tool_result` blocks are translated; `thinking` / `redacted_thinking` blocks
  of earlier turns and `cache_control` marks are dropped (an OpenAI-compatible upstream has
  no use for them); server tools and document blocks are refused with a 400 naming them.
- `to_message(resp, ...)`: an OpenAI `chat.completion` as an Anthropic `message` (text and
  `tool_use` blocks, `stop_reason`, `usage`).
- `AnthropicEvents`: a `policyengine.gateway.StreamEncoder` that writes the gateway's OpenAI
  chunks as Anthropic's events (`message_start`, `ping`, `content_block_start` / `_delta` /
  `_stop` with `text_delta` and `input_json_delta`, `message_delta` with `stop_reason` and
  `usage`, `message_stop`; `error` for a stream that broke). One instance per stream.
- `error_body(status, message, extra)`: Anthropic's error shape, whose `error.type` follows
  the HTTP status the way Anthropic's API sets it, so the anthropic SDK raises its usual
  exception (`BadRequestError`, `AuthenticationError`, `PermissionDeniedError`,
  `NotFoundError`, `RateLimitError`, `InternalServerError`, ...).
"""

from __future__ import annotations

from typing import Any

import orjson

from policyengine.adapters.base import NATIVE_KEY
from policyengine.api.dialects import DialectError

__all__ = ["AnthropicEvents", "error_body", "error_type", "stop_reason", "to_chat", "to_message"]

# OpenAI finish_reason -> Anthropic stop_reason
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
         "content_filter": "refusal"}
# HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors)
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 409: "invalid_request_error", 413: "request_too_large",
                415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                500: "api_error", 502: "api_error", 503: "overloaded_error", 504: "api_error",
                529: "overloaded_error"}
# Anthropic request fields with no OpenAI counterpart that are dropped without harm
_IGNORED = ("top_k", "thinking", "service_tier", "container", "mcp_servers", "context_management")


def stop_reason(finish_reason: str | None) -> str | None:
    """Anthropic's `stop_reason` for an OpenAI `finish_reason` (None stays None)."""
    if finish_reason is None:
        return None
    return _STOP.get(finish_reason, "end_turn")


def error_type(status: int) -> str:
    """Anthropic's `error.type` for an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(status: int, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`{"type": "error", "error": {"type": ..., "message": ...}}`; `extra` (the gateway's
    `code`, `decision_id`, attempts...) is kept beside them in `error`."""
    err: dict[str, Any] = {"type": error_type(status), "message": message}
    for k, v in (extra or {}).items():
        if k not in err and v is not None:
            err[k] = v
    return {"type": "error", "error": err}


# ------------------------------------------------------------------------------ requests


def _text_blocks(value: Any, where: str) -> str:
    """The text of a `system` or `tool_result` content: a string, or a list of text blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for i, b in enumerate(value):
            if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
                raise DialectError(f"{where}[{i}] must be a text block ({{type: text, text: ...}})", f"{where}[{i}]")
            out.append(b["text"])
        return "\n".join(out)
    raise DialectError(f"{where} must be a string or a list of text blocks", where)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    src = block.get("source")
    if not isinstance(src, dict):
        raise DialectError(f"{where}.source must be an object", f"{where}.source")
    if src.get("type") == "base64":
        media, data = src.get("media_type"), src.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise DialectError(f"{where}.source needs media_type and data", f"{where}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if src.get("type") == "url" and isinstance(src.get("url"), str):
        return {"type": "image_url", "image_url": {"url": src["url"]}}
    raise DialectError(f"{where}.source.type must be base64 or url", f"{where}.source.type")


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    tid = block.get("tool_use_id")
    if not isinstance(tid, str) or not tid:
        raise DialectError(f"{where}.tool_use_id is required", f"{where}.tool_use_id")
    content = block.get("content", "")
    if isinstance(content, list):  # images inside a tool result: only their text survives
        content = [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
    text = _text_blocks(content, f"{where}.content")
    if block.get("is_error"):
        text = f"[tool error] {text}"
    return {"role": "tool", "tool_call_id": tid, "content": text}


def _block_type(b: Any, where: str) -> str:
    """The `type` of content block `b` at `where`; DialectError unless it is an object with a string type."""
    if not isinstance(b, dict) or not isinstance(b.get("type"), str):
        raise DialectError(f"{where} must be a content block with a string 'type'", where)
    return b["type"]


def _block_text(b: dict[str, Any], where: str) -> str:
    """The `text` of text block `b` at `where`; DialectError unless it is a string."""
    if not isinstance(b.get("text"), str):
        raise DialectError(f"{where}.text must be a string", f"{where}.text")
    return b["text"]


def _user(content: list[Any], where: str) -> list[dict[str, Any]]:
    """One Anthropic user turn as OpenAI messages: its tool results first (one `tool` message
    each, in order), then one user message with the rest."""
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        w = f"{where}.content[{j}]"
        t = _block_type(b, w)
        if t == "text":
            parts.append({"type": "text", "text": _block_text(b, w)})
        elif t == "image":
            parts.append(_image(b, w))
        elif t == "tool_result":
            out.append(_tool_result(b, w))
        elif t in ("thinking", "redacted_thinking"):
            continue
        else:
            raise DialectError(f"{w}: content blocks of type {t!r} are not supported through the gateway "
                               "(text, image, tool_use and tool_result are)", f"{w}.type")
    if parts:
        text_only = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if text_only else parts})
    return out


def _assistant(content: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(content):
        w = f"{where}.content[{j}]"
        t = _block_type(b, w)
        if t == "text":
            texts.append(_block_text(b, w))
        elif t == "tool_use":
            if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                raise DialectError(f"{w} needs a string id and name", w)
            calls.append({"id": b["id"], "type": "function",
                          "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input") or {}).decode()}})
        elif t in ("thinking", "redacted_thinking"):
            continue
        else:
            raise DialectError(f"{w}: assistant blocks of type {t!r} are not supported through the gateway",
                               f"{w}.type")
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise DialectError("'tools' must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise DialectError(f"tools[{i}] must be an object with a string 'name'", f"tools[{i}]")
        if t.get("type") not in (None, "custom"):
            raise DialectError(f"tools[{i}]: Anthropic server tools ({t.get('type')}) are not supported through the "
                               "gateway; declare client tools with name, description and input_schema",
                               f"tools[{i}].type")
        fn: dict[str, Any] = {"name": t["name"], "parameters": t.get("input_schema") or {"type": "object"}}
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(tc: Any, body: dict[str, Any]) -> None:
    if not isinstance(tc, dict) or tc.get("type") not in ("auto", "any", "tool", "none"):
        raise DialectError("'tool_choice' must be {type: auto | any | tool | none}", "tool_choice")
    kind = tc["type"]
    if kind == "tool":
        if not isinstance(tc.get("name"), str):
            raise DialectError("tool_choice {type: tool} needs a 'name'", "tool_choice.name")
        body["tool_choice"] = {"type": "function", "function": {"name": tc["name"]}}
    else:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if tc.get("disable_parallel_tool_use") is True:
        body["parallel_tool_calls"] = False


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request for a Messages request; raises `DialectError` naming the field.

    `metadata.user_id` becomes `user` (the actor and session the policy sees when no header
    says otherwise); the rest of `metadata` (e.g. `use_case`, `fields`) is the gateway's, as on
    `/v1/chat/completions`."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise DialectError("'model' must be a string", "model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise DialectError("'max_tokens' is required", "max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise DialectError("'max_tokens' must be a positive integer", "max_tokens")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise DialectError("'messages' must be a non-empty list of {role, content}", "messages")
    out_msgs: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _text_blocks(system, "system")
        if text:
            out_msgs.append({"role": "system", "content": text})
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise DialectError(f"{where}.role must be 'user' or 'assistant'", f"{where}.role")
        content = m.get("content")
        if isinstance(content, str):
            out_msgs.append({"role": m["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise DialectError(f"{where}.content must be a string or a list of content blocks", f"{where}.content")
        if m["role"] == "user":
            out_msgs.extend(_user(content, where))
        else:
            out_msgs.append(_assistant(content, where))
    chat: dict[str, Any] = {"model": model or "auto", "messages": out_msgs, "max_tokens": max_tokens}
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise DialectError("'stop_sequences' must be a list of strings", "stop_sequences")
        if stop:
            chat["stop"] = stop
    for k in ("temperature", "top_p"):
        v = body.get(k)
        if v is not None:
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise DialectError(f"'{k}' must be a number", k)
            chat[k] = v
    if "stream" in body:
        if not isinstance(body["stream"], bool):
            raise DialectError("'stream' must be true or false", "stream")
        chat["stream"] = body["stream"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            raise DialectError("'metadata' must be an object", "metadata")
        uid = meta.get("user_id")
        if uid is not None:
            if not isinstance(uid, str):
                raise DialectError("metadata.user_id must be a string", "metadata.user_id")
            chat["user"] = uid
        rest = {k: v for k, v in meta.items() if k != "user_id"}
        if rest:
            chat["metadata"] = rest
    # the original request, for an Anthropic-compatible upstream to receive natively (adapters/anthropic.py)
    chat[NATIVE_KEY] = {"anthropic": dict(body)}
    return chat


# ------------------------------------------------------------------------------ answers


def message_id(decision_id: str) -> str:
    """The Anthropic message id of a decision's answer."""
    return "msg_" + decision_id.replace("-", "")


def _usage(usage: Any) -> dict[str, int]:
    u = usage if isinstance(usage, dict) else {}
    return {"input_tokens": int(u.get("prompt_tokens") or 0), "output_tokens": int(u.get("completion_tokens") or 0)}


def _input_of(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        v = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"_raw_arguments": arguments}
    return v if isinstance(v, dict) else {"value": v}


def to_message(resp: dict[str, Any], *, decision_id: str, model: str | None) -> dict[str, Any]:
    """An OpenAI `chat.completion` as an Anthropic `message`. The gateway's own report (tool-call
    verdicts, a review case) stays in `policyengine`."""
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    blocks: list[dict[str, Any]] = []
    content = msg.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        blocks.append({"type": "text", "text": content})
    for tc in msg.get("tool_calls") or ():
        fn = (tc or {}).get("function") or {}
        blocks.append({"type": "tool_use", "id": tc.get("id") or "", "name": fn.get("name") or "",
                       "input": _input_of(fn.get("arguments"))})
    out: dict[str, Any] = {"id": message_id(decision_id), "type": "message", "role": "assistant",
                           "model": model or resp.get("model") or "", "content": blocks,
                           "stop_reason": stop_reason(choice.get("finish_reason") or "stop"), "stop_sequence": None,
                           "usage": _usage(resp.get("usage"))}
    if resp.get("policyengine"):
        out["policyengine"] = resp["policyengine"]
    return out


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicEvents:
    """OpenAI chunks written as Anthropic's stream events (a `StreamEncoder`; one per stream).

    Invariants: `message_start` (then one `ping`) comes first, before any block; a block is
    opened by `content_block_start` and closed by `content_block_stop` before the next opens;
    text goes out as `text_delta`, a tool call as a `tool_use` block whose arguments are
    `input_json_delta`s; `done()` closes the open block, then `message_delta` (stop_reason,
    usage) and `message_stop`. An in-band error is an `error` event and nothing follows it.
    """

    __slots__ = ("_block", "_index", "_model", "_msg_id", "_pe", "_started", "_stop", "_tool_index", "_usage")

    def __init__(self, *, decision_id: str, model: str | None) -> None:
        self._msg_id, self._model = message_id(decision_id), model
        self._started = False
        self._index = -1  # index of the last block opened
        self._block: str | None = None  # "text" | "tool_use" while a block is open
        self._tool_index: int | None = None  # the OpenAI tool_calls index of the open tool_use block
        self._stop: str | None = None
        self._usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        self._pe: dict[str, Any] | None = None

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        model = self._model or chunk.get("model") or ""
        return [_event("message_start", {"type": "message_start", "message": {
                    "id": self._msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": None, "stop_sequence": None, "usage": dict(self._usage)}}),
                _event("ping", {"type": "ping"})]

    def _close(self) -> list[bytes]:
        if self._block is None:
            return []
        self._block, self._tool_index = None, None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _open(self, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._block = block["type"]
        out.append(_event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                  "content_block": block}))
        return out

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """The events for one OpenAI chunk (or an in-band error object)."""
        if "error" in obj and "choices" not in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            status = 503 if err.get("type") == "service_unavailable" else 500
            extra = {k: v for k, v in err.items() if k not in ("message", "type")}
            return _event("error", error_body(status, str(err.get("message") or "stream failed"), extra))
        out = self._start(obj)
        if isinstance(obj.get("policyengine"), dict):
            self._pe = {**(self._pe or {}), **obj["policyengine"]}
        if isinstance(obj.get("usage"), dict):
            self._usage = _usage(obj["usage"])
        for ch in obj.get("choices") or ():
            if not isinstance(ch, dict) or ch.get("index", 0) != 0:
                continue
            delta = ch.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block != "text":
                    out += self._open({"type": "text", "text": ""})
                out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                          "delta": {"type": "text_delta", "text": text}}))
            for tc in delta.get("tool_calls") or ():
                if not isinstance(tc, dict):
                    continue
                fn = tc.get("function") or {}
                idx = tc.get("index", 0)
                if self._block != "tool_use" or (tc.get("id") and idx != self._tool_index):
                    out += self._open({"type": "tool_use", "id": tc.get("id") or f"toolu_{idx}",
                                       "name": fn.get("name") or "", "input": {}})
                    self._tool_index = idx
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    out.append(_event("content_block_delta", {
                        "type": "content_block_delta", "index": self._index,
                        "delta": {"type": "input_json_delta", "partial_json": args}}))
            if ch.get("finish_reason"):
                self._stop = stop_reason(ch["finish_reason"])
        return b"".join(out)

    def done(self) -> bytes:
        """The end of a complete answer: the open block closed, `message_delta`, `message_stop`."""
        out = self._start({})
        out += self._close()
        delta: dict[str, Any] = {"type": "message_delta",
                                 "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": self._usage["output_tokens"],
                                           "input_tokens": self._usage["input_tokens"]}}
        if self._pe:
            delta["policyengine"] = self._pe
        out.append(_event("message_delta", delta))
        out.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def comment(self, text: str) -> bytes:
        """An SSE comment (a keep-alive while a held stream waits for its reviewer)."""
        return b": " + text.replace("\n", " ").encode() + b"\n\n"
