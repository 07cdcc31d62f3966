"""Shared by the chat gateway's plain, streaming and verified paths: headers, errors, held answers."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from starlette.responses import Response

from policyengine.api import decide
from policyengine.api.auth import Principal
from policyengine.api.errors import ApiError
from policyengine.dispatch.results import Attempt
from policyengine.types import Action, Decision, RuleHit

log = logging.getLogger("policyengine.api.chat")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# ---------------------------------------------------------------------------- helpers


def attempt_dicts(atts: list[Any] | None) -> list[dict[str, Any]]:
    return [a.as_json() if isinstance(a, Attempt) else dict(a) for a in atts or []]


def attempts_header(atts: list[dict[str, Any]]) -> str:
    """`model[#KEY_ENV]:status:class` per attempt, e.g. `qwen-72b#QWEN_KEY_1:429:retry, gemma-27b:200:ok`."""
    parts = []
    for a in atts:
        who = a["model"] + (f"#{a['key_id']}" if a.get("key_id") else "")
        if a.get("skipped"):
            parts.append(f"{who}:skipped:{a.get('reason') or '-'}")
        else:
            parts.append(f"{who}:{a.get('status') or '-'}:{a.get('error_class') or 'ok'}")
    return ", ".join(parts)


def response_headers(decision_id: str, decision: Decision, model: str | None, atts: list[dict[str, Any]],
             tags: list[str] | None = None) -> dict[str, str]:
    h = {"X-PolicyEngine-Decision-Id": decision_id, "X-PolicyEngine-Effect": decision.effect,
         "X-PolicyEngine-Policy-Hash": decision.policy_hash,
         "X-PolicyEngine-Attempts": attempts_header(atts), "X-PolicyEngine-Attempt-Count": str(len(atts))}
    if model:
        h["X-PolicyEngine-Model"] = model
    if tags:
        h["X-PolicyEngine-Tags"] = ",".join(tags)
    return h


def reasons(decision: Decision) -> str:
    hits = [r for r in decision.rules if r.effect == decision.effect] or decision.rules
    out = []
    for r in hits[:3]:
        where = f" ({r.span})" if r.span else ""
        because = f": {'; '.join(r.because)}" if r.because else ""
        out.append(f"{r.source or r.rule_id}{where}{because}")
    if decision.default_applied:
        out.append("no rule allows this action (default deny)")
    return " | ".join(out) or decision.effect


def deny_model_choice(decision: Decision, requested: str) -> Decision:
    allowed = decision.allowed_models
    because = (f"model {requested!r} is not on this caller's allowlist "
               f"({', '.join(allowed) if allowed else 'no models may be chosen; send model=auto'})")
    hit = RuleHit(rule_id="gateway:model-choice", kind="allow_choice", effect="deny", source="allow model choice",
                  because=[because])
    return decision.model_copy(update={"effect": "deny", "rules": [*decision.rules, hit]})


def dispatch_error(exc: Any, decision_id: str, atts: list[dict[str, Any]]) -> ApiError:
    cls, reason, status = exc.error_class, exc.reason, exc.status
    extra = {"decision_id": decision_id, "error_class": cls, "reason": reason, "attempts": atts}
    if cls == "fatal":
        # the upstream's own 4xx, unchanged in status and message
        upstream = exc.body if isinstance(exc.body, dict) else None
        message = exc.message or (str(exc.body) if exc.body else reason)
        if upstream and isinstance(upstream.get("error"), dict):
            message = upstream["error"].get("message") or message
        code = status if isinstance(status, int) and 400 <= status < 500 else 400
        return ApiError(code, message, code=reason, extra={**extra, "upstream": upstream,
                                                           "upstream_model": exc.model})
    headers = {}
    if cls == "retry":
        if exc.retry_after:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return ApiError(503, f"every model in the chain is unavailable ({reason})"
                        + (f": {exc.message}" if exc.message else ""), code=reason, extra=extra,
                        headers=headers, type="service_unavailable")
    return ApiError(502, f"every model in the chain failed ({reason})" + (f": {exc.message}" if exc.message else ""),
                    code=reason, extra=extra, type="upstream_error")


def rename_model(resp: dict[str, Any], model: str) -> dict[str, Any]:
    resp = dict(resp)
    resp["model"] = model
    return resp


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def completion_chunks(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """A complete chat.completion as stream chunks (used to stream a verified answer)."""
    base = {"id": resp.get("id"), "object": "chat.completion.chunk", "created": resp.get("created", 0),
            "model": resp.get("model")}
    chunks = []
    for ch in resp.get("choices") or []:
        msg = ch.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant"}
        if msg.get("content") is not None:
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg["tool_calls"])]
        chunks.append({**base, "choices": [{"index": ch.get("index", 0), "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": ch.get("index", 0), "delta": {},
                                            "finish_reason": ch.get("finish_reason") or "stop"}]})
    if resp.get("usage"):
        chunks.append({**base, "choices": [], "usage": resp["usage"]})
    return chunks


def count_attempts(s: Any, atts: list[dict[str, Any]]) -> None:
    for a in atts:
        if not a.get("skipped"):
            s.metrics.attempts.labels(a["model"], a.get("error_class") or "ok").inc()


async def held_response(s: Any, principal: Principal, action: Action, decision: Decision, decision_id: str, log: Any,
                t0: float, answers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                request_id: str | None = None) -> Response:
    await log(decision, extra={"outcome": "held", **(extra or {})},
              latency_ms=(time.perf_counter() - t0) * 1000)
    approval = await decide.hold(s, principal=principal, action=action, decision=decision,
                                 decision_id=decision_id, answers=answers, request_id=request_id)
    s.metrics.chat_requests.labels("-", "held").inc()
    msg = (f"held for human review ({decision.effect}): {reasons(decision)}"
           + (f"; approval {approval['approval_id']}" if approval else ""))
    raise ApiError(409, msg, code="approval_required", type="approval_required",
                   extra={"decision_id": decision_id, "effect": decision.effect, "approval": approval},
                   headers=response_headers(decision_id, decision, None, [], decision.tags))
