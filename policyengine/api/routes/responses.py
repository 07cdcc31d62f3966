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

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine.api.dialects import responses as dialect
from policyengine.api.routes.chat import dialect_chat

router = APIRouter(tags=["gateway"])

async def create_response(request: Request) -> Response:
    """A Responses API `create` (plain or streamed), routed by the policy."""
    return await dialect_chat(
        request, dialect.to_chat,
        lambda body, stream: dialect.ResponsesEvents(body, decision_id=stream.call.decision_id, model=stream.model),
        lambda body, done: dialect.to_response(done.response, body, decision_id=done.call.decision_id,
                                               model=done.model))


# Served straight from the ASGI call (policyengine.api.http); the FastAPI route documents it.
HOT_ROUTES = {"/v1/responses": create_response}


@router.post("/v1/responses", summary="OpenAI Responses API (stateless subset), routed by the policy")
async def create_response_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await create_response(request)
