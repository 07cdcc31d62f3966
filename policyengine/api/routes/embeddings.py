"""POST /v1/embeddings: OpenAI's embeddings API, routed by the policy to the fleet's embedding models.

The request becomes an `embeddings` Action (its text is the string input, so standing orders
such as `deny embeddings when text mentions pii` apply), the policy routes it through the
routes whose primary `serves [embeddings]`, and `gateway.embed` runs the chain (failover,
cooldowns, keys) and logs the decision and its outcome. Errors are in OpenAI's shape.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.api.dialects import embeddings as dialect
from policyengine.api.errors import ApiError, json_response, response_headers
from policyengine.api.http import headers, json_object, require_principal, translated
from policyengine.api.routes.chat import AUTO_MODELS, idempotency_key

router = APIRouter(tags=["gateway"])

_auth = require_principal("app")


def _fields(request: Request, body: dict, default_use_case: str | None) -> dict:
    h = headers(request)
    meta = body.get("metadata") or {}
    model = body.get("model")
    requested = None if model is None or model.strip().lower() in AUTO_MODELS else model.strip()
    data = {"action": "embeddings", "requested_model": requested, "text": dialect.action_text(body),
            "prompt_tokens": dialect.estimate_tokens(body),
            "use_case": h.get("x-policyengine-use-case") or meta.get("use_case") or default_use_case,
            "actor": h.get("x-policyengine-actor") or meta.get("actor") or body.get("user"),
            "session_id": h.get("x-policyengine-session") or meta.get("session_id"),
            "channel": h.get("x-policyengine-channel") or meta.get("channel"),
            "actor_role": h.get("x-policyengine-actor-role") or meta.get("actor_role")}
    for k in ("use_case", "actor", "session_id", "channel", "actor_role"):
        if data[k] is not None and not isinstance(data[k], str):
            raise ApiError(400, f"{k} must be a string", code="invalid_request", param=f"metadata.{k}")
    if isinstance(meta.get("fields"), dict):
        data["fields"] = meta["fields"]
    return {k: v for k, v in data.items() if v is not None}


async def embeddings(request: Request) -> Response:
    """OpenAI-compatible embeddings, routed by the policy."""
    principal = await _auth(request)
    t0 = time.perf_counter()
    rt = request.app.state.runtime
    body = await json_object(request)
    translated(dialect.validate, body)
    action = gateway.make_action(_fields(request, body, rt.settings.default_use_case), principal)
    call = await gateway.open_call(rt, principal, action, kind="embeddings", t0=t0,
                                   request_id=idempotency_key(headers(request)))
    result = await gateway.embed(call, dialect.upstream_body(body))
    h = response_headers(call.decision_id, call.decision, result.model, result.attempts, result.tags)
    return json_response(dialect.encode(result.response, body.get("encoding_format")), headers=h)


# Served straight from the ASGI call (policyengine.api.http); the FastAPI route documents it.
HOT_ROUTES = {"/v1/embeddings": embeddings}


@router.post("/v1/embeddings", summary="OpenAI-compatible embeddings, routed by the policy to embedding models")
async def embeddings_documented(request: Request) -> Response:
    """The documented twin of the hot route (same handler)."""
    return await embeddings(request)
