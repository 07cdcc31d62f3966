"""Admin endpoints (role admin): policy reload and status, API keys of the admin's tenant."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, field_validator
from starlette.responses import Response

from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import json_object, require_principal
from policyengine.errors import describe_validation
from policyengine.types import Principal

router = APIRouter(prefix="/v1/admin", tags=["admin"])


# A refused reload's stable codes, by the class that refused it (the detail stays in the server log).
_RELOAD_CODES = {"FileNotFoundError": "policy_path_not_found", "EmbeddingsNotInstalled": "embeddings_not_installed"}


def display_path(path: str, roots: list[str]) -> str:
    """`path` as a client may see it: relative to the policy directory it is in (a policy file
    given directly: its name), never the server's absolute path."""
    p = os.path.abspath(path)
    for r in roots:
        root = os.path.abspath(r)
        if p == root:
            return os.path.basename(p) or p
        if p.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.relpath(p, root)
    return os.path.basename(p)


def public_reload(res: Any, roots: list[str]) -> dict[str, Any]:
    """A reload result without server paths or exception names: file names relative to the policy
    directories, and for a refused set a stable `error_code` with a message that says what to fix."""
    out = res.model_dump(mode="json")
    out["files"] = [display_path(f, roots) for f in out.get("files") or []]
    out["diagnostics"] = [{**d, "file": display_path(d["file"], roots)} if isinstance(d.get("file"), str) else d
                          for d in out.get("diagnostics") or []]
    if out.get("error"):
        kind, _, _ = str(out["error"]).partition(":")
        if out["diagnostics"]:
            n = sum(1 for d in out["diagnostics"] if d.get("severity", "error") == "error")
            code, msg = "policy_invalid", f"the policy set does not lint: {n} error(s), see diagnostics"
        elif str(out["error"]).startswith("could not record policy version"):
            code, msg = "policy_version_not_recorded", ("the policy set compiled but its version could not be "
                                                        "recorded in the database")
        elif kind in _RELOAD_CODES:
            code = _RELOAD_CODES[kind]
            msg = ("a configured policy path does not exist" if code == "policy_path_not_found" else
                   "the policy uses sentiment or divergence, which need `pip install 'policyengine-llm[embeddings]'`")
        else:
            code, msg = "policy_load_failed", "the policy set could not be loaded (the service log has the detail)"
        out.update(error=msg + "; the previous set keeps serving", error_code=code)
    return out


@router.post("/policy/reload", summary="Reload the policy directory atomically (refused if lint fails)")
async def reload_policy(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    from policyengine.api.app import reload_policies

    s = request.app.state.runtime
    res = await reload_policies(s, f"admin:{principal.subject}")
    return json_response(public_reload(res, s.policies.paths), 200 if res.ok else 422)


@router.get("/policy", summary="The policy set serving, and the recent versions")
async def policy_status(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    s = request.app.state.runtime
    p = s.policies.current
    versions = await s.policy_versions.list(limit=20)
    roots = s.policies.paths
    return json_response({
        "name": p.name, "version": p.version, "hash": p.hash, "files": sorted(display_path(f, roots) for f in p.sources),
        "models": sorted(p.models), "paths": [display_path(r, roots) for r in roots],
        "last_reload": public_reload(s.policies.last_result, roots) if s.policies.last_result else None,
        "history": [{"hash": v.hash, "name": v.name, "version": v.version, "first_loaded_at": v.first_loaded_at,
                     "last_loaded_at": v.last_loaded_at, "loaded_by": v.loaded_by} for v in versions],
    })


class KeyCreate(BaseModel):
    model_config = {"extra": "forbid"}
    roles: list[str] = Field(min_length=1)
    subject: str = Field(min_length=1, max_length=200)
    groups: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    attributes: dict[str, Any] = Field(default_factory=dict)
    description: str | None = Field(None, max_length=1000)

    @field_validator("subject", "description")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("must not contain a NUL character")
        return v

    @field_validator("roles", "groups")
    @classmethod
    def _no_nul_items(cls, v: list[str]) -> list[str]:
        if any("\x00" in x for x in v):
            raise ValueError("must not contain a NUL character")
        return v


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
    if "\x00" in key_id or not await s.keys.revoke(key_id, tenant=principal.tenant):
        raise ApiError(404, f"no active key {key_id!r} in tenant {principal.tenant!r}", code="not_found")
    s.key_cache.invalidate()
    return json_response({"key_id": key_id, "revoked": True})
