"""POST /v1/completions: OpenAI's legacy Completions API, routed by the policy.

The prompt is sent as one user message (`policyengine.api.dialects.completions`) through the
same path as `/v1/chat/completions` (`routes.chat.run_chat`): routing, failover, standing
orders, holds and the decision log. The answer is a `text_completion`, or its stream chunks.
Errors keep OpenAI's error shape, so the openai SDK's `completions.create` raises its usual
exceptions.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine.api.dialects import completions as dialect
from policyengine.api.routes.chat import dialect_chat

router = APIRouter(tags=["gateway"])


async def create_completion(request: Request) -> Response:
    """A legacy completion (plain or streamed), routed by the policy."""
    return await dialect_chat(
        request, dialect.to_chat,
        lambda body, stream: dialect.CompletionEvents(decision_id=stream.call.decision_id, model=stream.model),
        lambda body, done: dialect.to_completion(done.response, decision_id=done.call.decision_id,
                                                 model=done.model))


# Served straight from the ASGI call (policyengine.api.http); the FastAPI route documents it.
HOT_ROUTES = {"/v1/completions": create_completion}


@router.post("/v1/completions", summary="OpenAI legacy Completions API (the prompt as one user message)")
async def create_completion_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await create_completion(request)
