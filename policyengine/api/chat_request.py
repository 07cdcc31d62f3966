"""Turning an OpenAI chat request into the policy's Action, and checking it is well formed."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request

from policyengine.api.errors import ApiError

AUTO_MODELS = ("", "auto", "default", "policy")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Fields the gateway reads and never forwards upstream.
GATEWAY_ONLY = ("metadata",)


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)


def validate_chat(body: dict[str, Any]) -> None:
    msgs = body.get("messages")
    if msgs is None:
        raise _bad("'messages' is required: a non-empty list of {role, content} objects", "messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("'messages' must be a non-empty list", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise _bad(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}", f"messages[{i}].role")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(f"messages[{i}].content must be a string or a list of content parts",
                       f"messages[{i}].content")
        if content is None and role not in ("assistant", "tool", "function") :
            raise _bad(f"messages[{i}].content is required for role {role!r}", f"messages[{i}].content")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string (a model name, or 'auto' to let the policy route)", "model")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be true or false", "stream")
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("only n=1 is supported through the gateway (each choice would need its own decision)", "n")
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise _bad("'metadata' must be an object", "metadata")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def user_text(body: dict[str, Any]) -> str:
    """What the end user wrote (all user turns): the text escalation triggers look at."""
    return "\n".join(t for m in body["messages"] if m.get("role") == "user" and (t := _text_of(m.get("content"))))


def estimate_tokens(body: dict[str, Any], chars_per_token: float = 4.0) -> int:
    chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
    if body.get("tools"):
        import orjson

        chars += len(orjson.dumps(body["tools"]))
    return math.ceil(chars / chars_per_token)


def _pick(request: Request, header: str, meta: dict[str, Any], key: str) -> Any:
    from policyengine.api.body import headers

    v = headers(request).get(header)
    if v:
        return v
    return meta.get(key)


def action_fields(request: Request, body: dict[str, Any], default_use_case: str | None) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    model = body.get("model")
    requested = None if model is None or model.strip().lower() in AUTO_MODELS else model.strip()
    session = _pick(request, "x-policyengine-session", meta, "session_id") or body.get("user")
    data: dict[str, Any] = {
        "action": "chat",
        "use_case": _pick(request, "x-policyengine-use-case", meta, "use_case") or default_use_case,
        "session_id": session,
        "actor": _pick(request, "x-policyengine-actor", meta, "actor") or body.get("user"),
        "actor_role": _pick(request, "x-policyengine-actor-role", meta, "actor_role"),
        "channel": _pick(request, "x-policyengine-channel", meta, "channel"),
        "requested_model": requested,
        "text": user_text(body) or None,
        "prompt_tokens": estimate_tokens(body),
    }
    fields = meta.get("fields")
    if fields is not None:
        if not isinstance(fields, dict):
            raise _bad("metadata.fields must be an object", "metadata.fields")
        data["fields"] = fields
    signals = meta.get("signals")
    if signals is not None:
        if not isinstance(signals, dict):
            raise _bad("metadata.signals must be an object", "metadata.signals")
        data["signals"] = signals
    for k, v in list(data.items()):
        if v is not None and k in ("use_case", "session_id", "actor", "actor_role", "channel") and not isinstance(v, str):
            raise _bad(f"{k} must be a string", f"metadata.{k}")
    return {k: v for k, v in data.items() if v is not None}


def upstream_body(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in GATEWAY_ONLY}
