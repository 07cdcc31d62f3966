"""POST /v1/messages: Anthropic's Messages API, routed by the policy.

The request is translated to an OpenAI chat request at the edge
(`policyengine.api.dialects.anthropic`) and goes through the same path as
`/v1/chat/completions` (`routes.chat.run_chat`): routing, failover, standing orders,
tool-call decisions on the `tool_use` blocks, holds and the decision log. The answer is
written back as an Anthropic `message`, or as Anthropic's SSE events. Every error, the
gateway's included, is in Anthropic's error shape with the status the gateway chose, so the
anthropic SDK raises its usual exception. The key may come as `x-api-key` (the anthropic
SDK's `api_key`) or `Authorization: Bearer` (its `auth_token`).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine.api.dialects import anthropic as dialect
from policyengine.api.errors import json_response, to_api_error
from policyengine.api.http import json_object, require_principal, translated
from policyengine.api.routes.chat import dialect_chat, estimate_tokens
from policyengine.errors import PolicyEngineError

router = APIRouter(tags=["gateway"])
log = logging.getLogger("policyengine.api")

_auth = require_principal("app")


def anthropic_error(exc: PolicyEngineError) -> Response:
    """Any engine error as Anthropic's error response (status and headers as the gateway maps them)."""
    err = to_api_error(exc)
    extra = {"code": err.code, "param": err.param, **err.extra}
    return json_response(dialect.error_body(err.status, err.message, extra), err.status, err.headers)


async def messages(request: Request) -> Response:
    """Anthropic Messages, routed by the policy."""
    try:
        return await dialect_chat(
            request, dialect.to_chat,
            lambda body, stream: dialect.AnthropicEvents(decision_id=stream.call.decision_id, model=stream.model),
            lambda body, done: dialect.to_message(done.response, decision_id=done.call.decision_id, model=done.model))
    except PolicyEngineError as exc:
        return anthropic_error(exc)
    except Exception:
        log.exception("unhandled error in POST /v1/messages")
        return json_response(dialect.error_body(500, "internal server error"), 500)


async def count_tokens(request: Request) -> Response:
    """Anthropic's `count_tokens`: the gateway's estimate of the request's input tokens (characters
    / `chars_per_token` over the messages, system and tools: the same estimate the policy's
    context-window routing uses), without a model call or a decision."""
    try:
        await _auth(request)
        body = await json_object(request)
        chat = translated(dialect.to_chat, {"max_tokens": 1, **body})
        return json_response({"input_tokens": estimate_tokens(chat)})
    except PolicyEngineError as exc:
        return anthropic_error(exc)


# Served straight from the ASGI call (policyengine.api.http); the FastAPI route documents it.
HOT_ROUTES = {"/v1/messages": messages, "/v1/messages/count_tokens": count_tokens}


@router.post("/v1/messages", summary="Anthropic Messages API, routed by the policy")
async def messages_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await messages(request)


@router.post("/v1/messages/count_tokens", summary="Anthropic count_tokens: the gateway's estimate of the input tokens")
async def count_tokens_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await count_tokens(request)
