"""Admin endpoints (role admin): policy reload and status, API keys of the admin's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import json_object, require_principal
from policyengine.errors import describe_validation
from policyengine.types import Principal

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/policy/reload", summary="Reload the policy directory atomically (refused if lint fails)")
async def reload_policy(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    from policyengine.api.app import reload_policies

    s = request.app.state.runtime
    res = await reload_policies(s, f"admin:{principal.subject}")
    return json_response(res.model_dump(mode="json"), 200 if res.ok else 422)


@router.get("/policy", summary="The policy set serving, and the recent versions")
async def policy_status(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    s = request.app.state.runtime
    p = s.policies.current
    versions = await s.policy_versions.list(limit=20)
    return json_response({
        "name": p.name, "version": p.version, "hash": p.hash, "files": sorted(p.sources),
        "models": sorted(p.models), "paths": s.policies.paths,
        "last_reload": s.policies.last_result.model_dump(mode="json") if s.policies.last_result else None,
        "history": [{"hash": v.hash, "name": v.name, "version": v.version, "first_loaded_at": v.first_loaded_at,
                     "last_loaded_at": v.last_loaded_at, "loaded_by": v.loaded_by} for v in versions],
    })


class KeyCreate(BaseModel):
    model_config = {"extra": "forbid"}
    roles: list[str] = Field(min_length=1)
    subject: str = Field(min_length=1, max_length=200)
    groups: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None


def _key_json(k: Any) -> dict[str, Any]:
    return {"key_id": k.key_id, "tenant": k.tenant, "subject": k.subject, "roles": sorted(k.roles),
            "groups": sorted(k.groups), "attributes": k.attributes, "created_at": k.created_at,
            "revoked_at": k.revoked_at, "description": k.description}


@router.post("/keys", summary="Create an API key in the admin's tenant (the token is shown once)")
async def create_key(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    from pydantic import ValidationError

    s = request.app.state.runtime
    try:
        body = KeyCreate.model_validate(await json_object(request))
    except ValidationError as exc:
        msg, param = describe_validation(list(exc.errors()))
        raise ApiError(422, f"invalid key: {msg}", code="invalid_request", param=param)
    try:
        info, token = await s.keys.create(tenant=principal.tenant, roles=set(body.roles), subject=body.subject,
                                          groups=set(body.groups), attributes=body.attributes,
                                          description=body.description)
    except ValueError as exc:
        raise ApiError(422, str(exc), code="invalid_request")
    return json_response({**_key_json(info), "token": token}, 201)


@router.get("/keys", summary="API keys of the admin's tenant (hashes are never shown)")
async def list_keys(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    s = request.app.state.runtime
    return json_response({"data": [_key_json(k) for k in await s.keys.list(principal.tenant)]})


@router.delete("/keys/{key_id}", summary="Revoke an API key of the admin's tenant")
async def revoke_key(key_id: str, request: Request,
                     principal: Principal = Depends(require_principal("admin"))) -> Response:
    s = request.app.state.runtime
    if not await s.keys.revoke(key_id, tenant=principal.tenant):
        raise ApiError(404, f"no active key {key_id!r} in tenant {principal.tenant!r}", code="not_found")
    s.key_cache.invalidate()
    return json_response({"key_id": key_id, "revoked": True})
