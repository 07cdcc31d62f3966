"""Limit and budget usage: `GET /v1/usage[?tenant=...][&window=current|previous|all]`.

Any key sees its own tenant's counters (the current window of every limit that counted one of
its requests; `window=previous` the window before it, `all` both: each counter says which in
`window_state`). An admin key sees every tenant's, and the service-wide counters (limits with no
`per`, or `per model` alone); `?tenant=` narrows it to one. The figures are the ones the limits
decide on (shared by every replica when the counters are in Redis).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import require_principal
from policyengine.gateway.limits import WINDOWS, usage_report
from policyengine.types import Principal

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", summary="Live limit and budget counters (tenant-scoped; admins see every tenant)")
async def get_usage(request: Request, principal: Principal = Depends(require_principal())) -> Response:
    asked = request.query_params.get("tenant")
    if principal.has("admin"):
        tenant = asked or None
    else:
        if asked is not None and asked != principal.tenant:
            raise ApiError(403, f"tenant {asked!r} is not this key's tenant", code="tenant_mismatch", param="tenant")
        tenant = principal.tenant
    window = request.query_params.get("window", "current")
    if window not in WINDOWS:
        raise ApiError(422, f"window must be one of {', '.join(WINDOWS)}, got {window[:40]!r}",
                       code="invalid_request", param="window")
    report = await usage_report(request.app.state.runtime, tenant, window)
    return json_response({"object": "usage", "tenant": tenant, "window": window, **report})
