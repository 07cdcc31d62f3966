"""POST /v1/responses: OpenAI's Responses API (the stateless subset), routed by the policy.

The request is translated at the edge (`policyengine.api.dialects.responses`) and goes
through the same path as `/v1/chat/completions` (`routes.chat.run_chat`): routing,
failover, standing orders, tool-call decisions on the function calls, holds and the
decision log. The answer is a `response` object, or the Responses stream events. Errors
keep OpenAI's error shape (`policyengine.api.errors`), so the openai SDK raises its usual
exceptions; a request that needs stored state (`previous_response_id`, `store: true`) is a
400 saying the API is stateless here.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.api.dialects import responses as dialect
from policyengine.api.errors import json_response
from policyengine.api.http import json_object, require_principal, translated
from policyengine.api.routes.chat import result_headers, run_chat
from policyengine.api.sse import SSE_HEADERS, SSEResponse

router = APIRouter(tags=["gateway"])

_auth = require_principal("app")


async def create_response(request: Request) -> Response:
    """A Responses API `create` (plain or streamed), routed by the policy."""
    principal = await _auth(request)
    t0 = time.perf_counter()
    body = await json_object(request)
    chat = translated(dialect.to_chat, body)
    result = await run_chat(request, principal, chat, t0)
    h = result_headers(result)
    decision_id = result.call.decision_id
    if isinstance(result, gateway.ChatStream):
        enc = dialect.ResponsesEvents(body, decision_id=decision_id, model=result.model)
        return SSEResponse(result.relay(enc), headers={**SSE_HEADERS, **h})
    return json_response(dialect.to_response(result.response, body, decision_id=decision_id, model=result.model),
                         headers=h)


# Served straight from the ASGI call (policyengine.api.http); the FastAPI route documents it.
HOT_ROUTES = {"/v1/responses": create_response}


@router.post("/v1/responses", summary="OpenAI Responses API (stateless subset), routed by the policy")
async def create_response_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await create_response(request)
