"""Approvals API: the application polls / long-polls its approval; reviewers list and decide.

    GET  /v1/approvals?state=pending          reviewer: their tenant and groups only
    GET  /v1/approvals/{id}?wait=30           requester or reviewer of the tenant; long poll up to 60 s
    GET  /v1/approvals/{id}/audit             reviewer / admin of the tenant: every transition
    POST /v1/approvals/{id}/approve           {"reason"?, "action"?: {"fields": {...}, "text"?}}  (edit-and-approve)
                                              a held chat's answers: + "answer_from": "<model>" or "answer": "<text>"
    POST /v1/approvals/{id}/reject            {"reason": "..."} (required)
    POST /v1/approvals/{id}/cancel            the requesting key (or an admin) withdraws it

The first decision wins; a later one gets 409 with who decided. Bodies are read with a
running size count against `max_body_bytes` (413 past it, never buffered whole). The exact
action (redacted fields included) is shown only to the key that requested the approval;
everyone else sees redacted fields hashed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import read_body, require_principal
from policyengine.approvals.models import Reviewer
from policyengine.approvals.plugin import lifespan
from policyengine.approvals.service import ApprovalService
from policyengine.approvals.states import State
from policyengine.approvals.views import MAX_ANSWER_CHARS
from policyengine.types import Principal

router = APIRouter(tags=["approvals"], lifespan=lifespan)

MAX_WAIT_S = 60.0


class EditedAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fields: dict[str, Any] | None = None
    text: str | None = None


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)
    action: EditedAction | None = None
    # for an approval holding model answers: the model whose answer is released, or the reviewer's edit
    answer_from: str | None = Field(default=None, min_length=1, max_length=200)
    answer: str | None = Field(default=None, max_length=MAX_ANSWER_CHARS)


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000)


def service_of(request: Request) -> ApprovalService:
    svc = request.app.state.runtime.approvals
    if svc is None:
        raise ApiError(503, "the approvals service is not running", code="approvals_unavailable", retry=True)
    return svc


def _reviewer(principal: Principal, request: Request) -> Reviewer:
    return Reviewer.from_principal(principal, ip=request.client.host if request.client else None,
                                   user_agent=request.headers.get("user-agent"))


async def _json(request: Request, model: type[BaseModel], *, empty_ok: bool) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        if empty_ok:
            return model()
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValueError as exc:
        errors = getattr(exc, "errors", lambda: [])()
        msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())) or 'body'}: {e.get('msg')}" for e in errors) or str(exc)
        raise ApiError(422, f"invalid request body: {msg}", code="invalid_request")


@router.get("/v1/approvals", summary="Approvals a reviewer may decide (their tenant and groups)")
async def list_approvals(
    request: Request,
    state: str | None = Query("pending", description="pending, approved, rejected, expired, cancelled or all"),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require_principal("reviewer")),
) -> Response:
    if state not in (None, "all", *State.__members__):
        raise ApiError(422, f"state must be one of {', '.join(State.__members__)} or all", code="invalid_request", param="state")
    st = None if state in (None, "all") else State(state)
    views = await service_of(request).list_for(_reviewer(principal, request), state=st, limit=limit)
    return json_response({"object": "list", "data": [v.model_dump(mode="json") for v in views]})


@router.get("/v1/approvals/{approval_id}", summary="One approval; ?wait=N long-polls until decided")
async def get_approval(
    request: Request, approval_id: str,
    wait: float = Query(0, ge=0, le=MAX_WAIT_S, description="seconds to wait for a decision (long poll)"),
    principal: Principal = Depends(require_principal()),
) -> Response:
    svc = service_of(request)
    view = await (svc.wait(approval_id, wait, tenant=principal.tenant, for_key=principal.key_id) if wait > 0
                  else svc.get(approval_id, tenant=principal.tenant, for_key=principal.key_id))
    return json_response(view.model_dump(mode="json"))


@router.get("/v1/approvals/{approval_id}/audit", summary="Every transition of an approval")
async def audit(request: Request, approval_id: str, principal: Principal = Depends(require_principal("reviewer"))) -> Response:
    svc = service_of(request)
    await svc.get(approval_id, tenant=principal.tenant)
    events = await svc.audit_trail(approval_id)
    return json_response({"object": "list", "data": [e.model_dump(mode="json") for e in events]})


@router.post("/v1/approvals/{approval_id}/approve", summary="Approve (optionally an edited revision)")
async def approve(request: Request, approval_id: str, principal: Principal = Depends(require_principal("reviewer"))) -> Response:
    body: ApproveBody = await _json(request, ApproveBody, empty_ok=True)
    edited = body.action.model_dump(exclude_unset=True) if body.action is not None else None
    view = await service_of(request).decide(approval_id, _reviewer(principal, request), approve=True,
                                            reason=body.reason, edited_action=edited or None,
                                            answer_from=body.answer_from, answer=body.answer)
    return json_response(view.model_dump(mode="json"))


@router.post("/v1/approvals/{approval_id}/reject", summary="Reject (a reason is required)")
async def reject(request: Request, approval_id: str, principal: Principal = Depends(require_principal("reviewer"))) -> Response:
    body: RejectBody = await _json(request, RejectBody, empty_ok=False)
    view = await service_of(request).decide(approval_id, _reviewer(principal, request), approve=False, reason=body.reason)
    return json_response(view.model_dump(mode="json"))


@router.post("/v1/approvals/{approval_id}/cancel", summary="The requesting key (or an admin) withdraws a pending approval")
async def cancel(request: Request, approval_id: str, principal: Principal = Depends(require_principal("app"))) -> Response:
    body: CancelBody = await _json(request, CancelBody, empty_ok=True)
    view = await service_of(request).cancel(approval_id, principal, reason=body.reason,
                                            ip=request.client.host if request.client else None,
                                            user_agent=request.headers.get("user-agent"))
    return json_response(view.model_dump(mode="json"))
