"""POST /v1/chat/completions: the OpenAI-compatible gateway.

The route translates HTTP and OpenAI's chat format into a gateway call and back: it reads
and checks the body (policyengine.api.chat_request), opens the Call, hands it to
`policyengine.gateway.chat`, and writes the Completion as JSON or the ChatStream as
server-sent events. Everything between (the decision, the model chain, the decision rows,
holds) is the gateway's.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.api.auth import require_principal
from policyengine.api.body import headers, json_object
from policyengine.api.chat_request import action_fields, upstream_body, validate_chat
from policyengine.api.errors import json_response, response_headers
from policyengine.api.sse import OPENAI_EVENTS, SSE_HEADERS, SSEResponse

router = APIRouter(tags=["gateway"])

_auth = require_principal("app")


async def chat_completions(request: Request) -> Response:
    """OpenAI-compatible chat completions, routed by the policy."""
    principal = await _auth(request)
    t0 = time.perf_counter()
    rt = request.app.state.runtime
    body = await json_object(request)
    validate_chat(body)
    action = gateway.make_action(action_fields(request, body, rt.settings.default_use_case), principal)
    call = await gateway.open_call(rt, principal, action, kind="chat", t0=t0,
                                   request_id=headers(request).get("idempotency-key"))
    result = await gateway.chat(call, upstream_body(body), stream=bool(body.get("stream")))
    h = response_headers(call.decision_id, call.decision, result.model, result.attempts, result.tags)
    if result.divergence is not None:
        h["X-PolicyEngine-Divergence"] = f"{result.divergence:.4f}"
    if isinstance(result, gateway.ChatStream):
        return SSEResponse(result.relay(OPENAI_EVENTS), headers={**SSE_HEADERS, **h})
    return json_response(result.response, headers=h)


# Served straight from the ASGI call (policyengine.api.hotpath); the FastAPI route documents it.
HOT_ROUTES = {"/v1/chat/completions": chat_completions}


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completions, routed by the policy")
async def chat_completions_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await chat_completions(request)
