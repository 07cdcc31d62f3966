"""POST /v1/chat/completions: the OpenAI-compatible gateway.

The route translates HTTP and OpenAI's chat format into a gateway call and back: it reads
and checks the body (`validate_chat`, `action_fields`), opens the Call, hands it to
`policyengine.gateway.chat`, and writes the Completion as JSON or the ChatStream as
server-sent events. Everything between (the decision, the model chain, the decision rows,
holds) is the gateway's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.adapters.base import NATIVE_KEY
from policyengine.api.errors import ApiError, json_response, response_headers
from policyengine.api.http import headers, json_object, require_principal, translated
from policyengine.api.sse import OPENAI_EVENTS, SSE_HEADERS, SSEResponse

router = APIRouter(tags=["gateway"])

# ------------------------------------------------------------------------------ OpenAI's chat request

AUTO_MODELS = ("", "auto", "default", "policy")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Fields the gateway reads and never forwards upstream.
GATEWAY_ONLY = ("metadata",)


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)


def validate_chat(body: dict[str, Any]) -> None:
    """Refuse (400, naming the field) a chat body the gateway cannot read: messages, their roles and
    content (a string, or content parts whose text parts hold strings), model, stream, n, metadata, tools."""
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
        if isinstance(content, list):
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _bad(f"{where} must be an object with a string 'type'", where)
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    raise _bad(f"{where}.text must be a string", f"{where}.text")
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
        return " ".join(t for p in content if isinstance(p, dict) and p.get("type") == "text"
                        and isinstance(t := p.get("text"), str))
    return ""


def user_text(body: dict[str, Any]) -> str:
    """What the end user wrote (all user turns): the text escalation triggers look at."""
    return "\n".join(t for m in body["messages"] if m.get("role") == "user" and (t := _text_of(m.get("content"))))


def estimate_tokens(body: dict[str, Any], chars_per_token: float = 4.0) -> int:
    chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
    if body.get("tools"):
        chars += len(orjson.dumps(body["tools"]))
    return math.ceil(chars / chars_per_token)


def _pick(request: Request, header: str, meta: dict[str, Any], key: str) -> Any:
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


# ------------------------------------------------------------------------------ the route


def _hold_options(h: dict[str, str], max_wait_s: float) -> tuple[str | None, float]:
    """`X-PolicyEngine-Approval-Id` (the approval a resent held chat resumes) and
    `X-PolicyEngine-Hold-Wait` (seconds to wait for the reviewer, capped at `max_wait_s`)."""
    resume = h.get("x-policyengine-approval-id") or None
    if resume is not None and (len(resume) > 100 or not resume.isprintable()):
        raise ApiError(400, "X-PolicyEngine-Approval-Id must be an approval id (apr_...)", code="invalid_request",
                       param="X-PolicyEngine-Approval-Id")
    raw = h.get("x-policyengine-hold-wait")
    if raw is None:
        return resume, 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        raise ApiError(400, f"X-PolicyEngine-Hold-Wait must be a number of seconds, got {raw!r}",
                       code="invalid_request", param="X-PolicyEngine-Hold-Wait")
    return resume, min(wait, max_wait_s)

_auth = require_principal("app")


def idempotency_key(h: dict[str, str]) -> str | None:
    """The request's `Idempotency-Key` (1 to 100 printable characters), or None."""
    key = h.get("idempotency-key")
    if key is not None and (not 0 < len(key) <= 100 or not key.isprintable()):  # approvals.request_id: 100
        raise ApiError(400, "Idempotency-Key must be 1 to 100 printable characters", code="invalid_request",
                       param="Idempotency-Key")
    return key


async def run_chat(request: Request, principal: Any, body: dict[str, Any], t0: float) -> Any:
    """An OpenAI chat request (already read; from any dialect) through the gateway: validated,
    made an Action, decided, dispatched. Returns the `Completion` or `ChatStream`; raises the
    gateway's errors. Every dialect's route goes through here, so all share one policy path."""
    rt = request.app.state.runtime
    validate_chat(body)
    action = gateway.make_action(action_fields(request, body, rt.settings.default_use_case), principal)
    h = headers(request)
    call = await gateway.open_call(rt, principal, action, kind="chat", t0=t0, request_id=idempotency_key(h))
    call.resume_id, call.hold_wait_s = _hold_options(h, rt.settings.chat_hold_max_wait_s)
    return await gateway.chat(call, upstream_body(body), stream=bool(body.get("stream")))


def result_headers(result: Any) -> dict[str, str]:
    """The `X-PolicyEngine-*` headers of a chat result (decision, model, attempts, tags, divergence)."""
    call = result.call
    h = response_headers(call.decision_id, call.decision, result.model, result.attempts, result.tags)
    if result.divergence is not None:
        h["X-PolicyEngine-Divergence"] = f"{result.divergence:.4f}"
    return h


async def dialect_chat(request: Request, translate: Callable[[dict[str, Any]], dict[str, Any]],
                       events: Callable[[dict[str, Any], Any], Any],
                       answer: Callable[[dict[str, Any], Any], dict[str, Any]]) -> Response:
    """A chat in another client dialect through the one policy path.

    Authenticates an app key, reads the body, `translate`s it to an OpenAI chat request (its
    `DialectError` a 400), runs it (`run_chat`), and writes the result back in the dialect:
    `events(body, stream)` is the SSE encoder of a `ChatStream`, `answer(body, completion)` the
    JSON answer of a `Completion`. Raises the gateway's errors for the route to shape."""
    principal = await _auth(request)
    t0 = time.perf_counter()
    body = await json_object(request)
    result = await run_chat(request, principal, translated(translate, body), t0)
    h = result_headers(result)
    if isinstance(result, gateway.ChatStream):
        return SSEResponse(result.relay(events(body, result)), headers={**SSE_HEADERS, **h})
    return json_response(answer(body, result), headers=h)


async def chat_completions(request: Request) -> Response:
    """OpenAI-compatible chat completions, routed by the policy."""
    principal = await _auth(request)
    t0 = time.perf_counter()
    body = await json_object(request)
    body.pop(NATIVE_KEY, None)  # only a dialect at the edge may set it, never the caller
    result = await run_chat(request, principal, body, t0)
    h = result_headers(result)
    if isinstance(result, gateway.ChatStream):
        return SSEResponse(result.relay(OPENAI_EVENTS), headers={**SSE_HEADERS, **h})
    return json_response(result.response, headers=h)


# Served straight from the ASGI call (policyengine.api.http); the FastAPI route documents it.
HOT_ROUTES = {"/v1/chat/completions": chat_completions}


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completions, routed by the policy")
async def chat_completions_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await chat_completions(request)
