"""Fleet state (role admin): models, deployments, cooldowns, breakers, load; clear a cooldown or a breaker.

    GET  /v1/fleet                          every model of the serving policy and each deployment's state
    POST /v1/fleet/cooldowns/clear          {"scope": "model:qwen-72b" | "key:qwen-72b/QWEN_KEY_1"}
    POST /v1/fleet/breakers/reset           {"state_id": "qwen-72b" | "qwen-72b@eu-1"}

Cooldowns and breakers are shared by every replica when the state store is Redis; the load
figures (requests in flight, latency) are this replica's. A scope or state id the serving
policy does not have is a 404 naming the known ones.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import json_object, require_principal
from policyengine.errors import describe_validation
from policyengine.gateway.fleet import FleetError, clear_cooldown, fleet_status, reset_breaker
from policyengine.types import Principal

log = logging.getLogger("policyengine.api")

router = APIRouter(prefix="/v1/fleet", tags=["fleet"])


class ClearCooldown(BaseModel):
    """The cooldown to clear."""

    model_config = ConfigDict(extra="forbid")
    scope: str = Field(min_length=1, max_length=500)


class ResetBreaker(BaseModel):
    """The breaker to close."""

    model_config = ConfigDict(extra="forbid")
    state_id: str = Field(min_length=1, max_length=500)


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(await json_object(request))
    except ValidationError as exc:
        msg, param = describe_validation(list(exc.errors()))
        raise ApiError(422, f"invalid request: {msg}", code="invalid_request", param=param)


@router.get("", summary="Models and deployments of the serving policy: health, cooldowns, breakers, load")
async def get_fleet(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    return json_response(await fleet_status(request.app.state.runtime))


@router.post("/cooldowns/clear", summary="Clear one cooldown (a model, deployment or key scope)")
async def post_clear(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    body = await _body(request, ClearCooldown)
    try:
        out = await clear_cooldown(request.app.state.runtime, body.scope)  # type: ignore[attr-defined]
    except FleetError as exc:
        raise ApiError(404, str(exc), code="not_found", param="scope")
    log.warning("fleet: cooldown %s cleared by %s (tenant %s)", out["scope"], principal.subject, principal.tenant)
    return json_response(out)


@router.post("/breakers/reset", summary="Close one breaker (a model or one of its deployments)")
async def post_reset(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    body = await _body(request, ResetBreaker)
    try:
        out = await reset_breaker(request.app.state.runtime, body.state_id)  # type: ignore[attr-defined]
    except FleetError as exc:
        raise ApiError(404, str(exc), code="not_found", param="state_id")
    log.warning("fleet: breaker %s reset by %s (tenant %s)", out["state_id"], principal.subject, principal.tenant)
    return json_response(out)
