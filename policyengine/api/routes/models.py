"""GET /v1/models: the models this caller may choose (OpenAI list format)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.api.errors import json_response
from policyengine.api.http import require_principal
from policyengine.types import Principal

router = APIRouter(tags=["gateway"])


@router.get("/v1/models", summary="Models the caller may pick (the user-switchable allowlist)")
async def list_models(request: Request, principal: Principal = Depends(require_principal("app"))) -> Response:
    s = request.app.state.runtime
    policy = s.policies.current
    q = request.query_params
    fields = {k: v for k, v in (("use_case", q.get("use_case") or request.headers.get("x-policyengine-use-case")),
                                ("actor", q.get("actor") or request.headers.get("x-policyengine-actor")),
                                ("actor_role", q.get("actor_role")
                                 or request.headers.get("x-policyengine-actor-role"))) if v}
    action = gateway.make_action({"action": "chat", **fields}, principal)
    allowed = list(policy.allowed_models(action))
    routing = policy.route(action)
    data = [{"id": "auto", "object": "model", "created": 0, "owned_by": principal.tenant,
             "description": "let the policy route: " + " -> ".join(routing.chain)}]
    for name in dict.fromkeys([*allowed]):
        spec = policy.models.get(name)
        data.append({"id": name, "object": "model", "created": 0, "owned_by": principal.tenant,
                     "provider": str(spec.provider) if spec else None,
                     "self_hosted": spec.self_hosted if spec else None,
                     "context": spec.context if spec else None,
                     "serves": list(spec.serves) if spec else None})
    return json_response({"object": "list", "data": data, "default_chain": routing.chain,
                          "policy_hash": policy.hash})
