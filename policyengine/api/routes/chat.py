"""POST /v1/chat/completions: the OpenAI-compatible gateway.

policy decision -> (deny: 403 | held: 409 + approval | verify: both models, divergence,
re-evaluate) -> dispatch (failover chain) -> decision row committed -> response.

Streaming (policyengine.api.chat_stream): the decision row commits while the first chunk is
obtained (failover happens before it); both are needed before the first byte; then the stream
is relayed, and an outcome row (final model, attempts, usage) follows through the same group
commit.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine.api import decide
from policyengine.api.auth import Principal, require_principal
from policyengine.api.body import headers, json_object
from policyengine.api.chat_common import (
    attempt_dicts,
    count_attempts,
    deny_model_choice,
    dispatch_error,
    held_response,
    reasons,
    rename_model,
    response_headers,
)
from policyengine.api.chat_request import action_fields, upstream_body, validate_chat
from policyengine.api.chat_stream import stream_response
from policyengine.api.errors import ApiError, json_response
from policyengine.api.verification import verified_response
from policyengine.types import Action, Decision

router = APIRouter(tags=["gateway"])


# ---------------------------------------------------------------------------- the route


_auth = require_principal("app")


async def chat_completions(request: Request) -> Response:
    """OpenAI-compatible chat completions, routed by the policy."""
    principal: Principal = await _auth(request)
    t0 = time.perf_counter()
    ts = time.time()
    s = request.app.state.services
    body = await json_object(request)
    validate_chat(body)
    action = decide.make_action(action_fields(request, body, s.settings.default_use_case), principal)
    snap = s.policies.snapshot()
    policy, dispatcher = snap.policy, snap.dispatcher
    decision = await decide.evaluate(s, policy, action)
    decision_id = decide.new_decision_id()
    stream = bool(body.get("stream"))

    def log(decision: Decision, **kw: Any) -> decide.PendingCommit:  # queued now; await it to wait
        return decide.begin_commit(s, kind="chat", principal=principal, action=action, decision=decision,
                                   decision_id=decision_id, ts=ts, **kw)

    requested = action.requested_model
    if requested and requested not in decision.allowed_models:
        if decision.effect != "deny":
            decision = deny_model_choice(decision, requested)
        allowed = decision.allowed_models
        msg = (f"model {requested!r} is not on this caller's allowlist "
               f"({'allowed: ' + ', '.join(allowed) if allowed else 'no models may be chosen; send model=auto'})")
        await log(decision, extra={"outcome": "model_not_allowed"})
        s.metrics.chat_requests.labels("-", "denied").inc()
        raise ApiError(403, msg, code="model_not_allowed", param="model",
                       extra={"decision_id": decision_id, "allowed_models": allowed},
                       headers=response_headers(decision_id, decision, None, []))
    if decision.effect == "deny":
        await log(decision, extra={"outcome": "denied"})
        s.metrics.chat_requests.labels("-", "denied").inc()
        raise ApiError(403, f"denied by policy: {reasons(decision)}", code="policy_denied",
                       extra={"decision_id": decision_id}, headers=response_headers(decision_id, decision, None, []))
    if decision.effect in decide.HELD:
        return await held_response(s, principal, action, decision, decision_id, log, t0,
                           request_id=headers(request).get("idempotency-key"))
    if decision.verification is not None:
        return await verified_response(s, principal, policy, dispatcher, body, action, decision, decision_id, log, t0,
                               stream)
    if not decision.routing.chain:
        await log(decision, extra={"outcome": "no_route"})
        raise ApiError(503, "the policy gives no model chain for this request (add a `route default -> ...`)",
                       code="no_route", extra={"decision_id": decision_id})
    if dispatcher is None:
        raise ApiError(503, "no dispatcher is configured", code="dispatch_unavailable")
    up = upstream_body(body)
    if stream:
        return await stream_response(s, principal, dispatcher, policy, up, action, decision, decision_id, log, t0)
    return await complete_response(s, dispatcher, up, action, decision, decision_id, log, t0)


# Served straight from the ASGI call (policyengine.api.hotpath); the FastAPI route documents it.
HOT_ROUTES = {"/v1/chat/completions": chat_completions}


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completions, routed by the policy")
async def chat_completions_documented(request: Request) -> Response:
    return await chat_completions(request)


async def complete_response(s: Any, dispatcher: Any, up: dict[str, Any], action: Action, decision: Decision,
                    decision_id: str, log: Any, t0: float) -> Response:
    from policyengine.dispatch import DispatchError

    try:
        result = await dispatcher.complete(up, decision.routing, session_id=action.session_id,
                                           prompt_tokens=action.prompt_tokens)
    except DispatchError as exc:
        atts = attempt_dicts(exc.attempts)
        count_attempts(s, atts)
        await log(decision, attempts=atts, latency_ms=(time.perf_counter() - t0) * 1000,
                  extra={"outcome": "upstream_failed", "error_class": exc.error_class, "reason": exc.reason})
        s.metrics.chat_requests.labels(exc.model or "-", f"failed_{exc.error_class}").inc()
        err = dispatch_error(exc, decision_id, atts)
        err.headers.update(response_headers(decision_id, decision, None, atts))
        raise err
    atts = attempt_dicts(result.attempts)
    count_attempts(s, atts)
    latency = (time.perf_counter() - t0) * 1000
    await log(decision, model=result.model, attempts=atts, latency_ms=latency,
              extra={"outcome": "ok", "usage": result.usage, "finish_reason": result.finish_reason,
                     "upstream_latency_ms": round(result.latency_ms, 3)})
    s.metrics.chat_requests.labels(result.model, "ok").inc()
    s.metrics.upstream_latency.labels(result.model).observe(result.latency_ms / 1000)
    s.metrics.request_latency.labels("chat").observe(time.perf_counter() - t0)
    return json_response(rename_model(result.response, result.model),
                         headers=response_headers(decision_id, decision, result.model, atts, decision.tags))
