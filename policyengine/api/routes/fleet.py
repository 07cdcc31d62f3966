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
from collections.abc import Awaitable, Callable
from typing import Any

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


async def _fleet_action(request: Request, principal: Principal, model: type[BaseModel], field: str,
                        action: Callable[[Any, str], Awaitable[dict[str, Any]]], what: str) -> Response:
    """Validate the body against `model`, run `action(runtime, body.<field>)`, log who did it.

    An unknown target (FleetError) is a 404 naming `field`; every successful action is logged at
    WARNING with the admin's subject and tenant (an operator changed the fleet's state)."""
    body = await _body(request, model)
    try:
        out = await action(request.app.state.runtime, getattr(body, field))
    except FleetError as exc:
        raise ApiError(404, str(exc), code="not_found", param=field)
    log.warning("fleet: %s %s by %s (tenant %s)", what, out[field], principal.subject, principal.tenant)
    return json_response(out)


@router.post("/cooldowns/clear", summary="Clear one cooldown (a model, deployment or key scope)")
async def post_clear(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    return await _fleet_action(request, principal, ClearCooldown, "scope", clear_cooldown, "cooldown cleared:")


@router.post("/breakers/reset", summary="Close one breaker (a model or one of its deployments)")
async def post_reset(request: Request, principal: Principal = Depends(require_principal("admin"))) -> Response:
    return await _fleet_action(request, principal, ResetBreaker, "state_id", reset_breaker, "breaker reset:")
