"""POST /v1/evaluate: an action in, the Decision out (logged before the response leaves)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import headers, json_object, require_principal
from policyengine.types import Action, Decision

router = APIRouter(tags=["evaluate"])

ENVELOPE = ("callback_url", "request_id", "answers")
# The longest idempotency key (approvals.request_id is String(100)).
REQUEST_ID_MAX = 100

_auth = require_principal("app")


async def evaluate(request: Request) -> Response:
    """Evaluate an action against the policy and log the decision."""
    principal = await _auth(request)
    t0 = time.perf_counter()
    rt = request.app.state.runtime
    data = await json_object(request)
    env: dict[str, Any] = {k: data.pop(k) for k in ENVELOPE if k in data}
    _check_envelope(env)
    request_id = env.get("request_id") or headers(request).get("idempotency-key")
    if request_id is not None and (len(request_id) > REQUEST_ID_MAX or "\x00" in request_id):
        raise ApiError(422, f"the idempotency key (request_id or Idempotency-Key) must be at most {REQUEST_ID_MAX} "
                            "characters, without NUL", code="invalid_request", param="request_id")
    action = gateway.make_action(data, principal)
    call = await gateway.open_call(rt, principal, action, kind="evaluate", t0=t0, request_id=request_id)
    done = await gateway.decide(call, callback_url=env.get("callback_url"), answers=env.get("answers"))
    body = {**call.dumped()[1], "decision_id": call.decision_id, "held": call.decision.effect in gateway.HELD}
    if done.approval is not None:
        body["approval"] = done.approval
    rt.metrics.request_latency.labels("evaluate").observe(time.perf_counter() - t0)
    return json_response(body, headers={"X-PolicyEngine-Decision-Id": call.decision_id,
                                        "X-PolicyEngine-Policy-Hash": call.decision.policy_hash})


def _check_envelope(env: dict[str, Any]) -> None:
    """The envelope's types: `callback_url` a string, `request_id` a string, `answers` an object of
    strings (422 naming the field otherwise)."""
    for name in ("callback_url", "request_id"):
        if env.get(name) is not None and not isinstance(env[name], str):
            raise ApiError(422, f"{name} must be a string", code="invalid_request", param=name)
    answers = env.get("answers")
    if answers is not None and not (isinstance(answers, dict)
                                    and all(isinstance(v, str) for v in answers.values())):
        raise ApiError(422, "answers must be an object of strings (question -> answer)", code="invalid_request",
                       param="answers")


# Served straight from the ASGI call (policyengine.api.http: no middleware stack, no route
# matching, no dependency solving; see benchmarks/service.md). The FastAPI route below documents
# it in the OpenAPI schema and serves it when the app is mounted without the hot path.
HOT_ROUTES = {"/v1/evaluate": evaluate}


@router.post("/v1/evaluate", summary="Evaluate an action against the policy and log the decision",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": Action.model_json_schema()}}}},
             responses={200: {"model": Decision}})
async def evaluate_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await evaluate(request)
