"""GET /v1/decisions and /v1/decisions/{id}: query and explain past decisions (tenant-scoped)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from policyengine import gateway
from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import require_principal
from policyengine.dispatch.explain import describe as describe_attempt
from policyengine.store import DecisionQuery, decision_view
from policyengine.types import Principal

router = APIRouter(tags=["decisions"])

# A chat decision row whose outcome is in a follow-up row (policyengine.gateway, step 7).
OUTCOME_PENDING = ("dispatched", "streaming", "verifying", "held", "resumed")
# Row kinds whose outcome is always a follow-up row: an MCP tool call's (policyengine.mcpgate).
FOLLOWED = ("mcp_tool_call",)


# The largest `seq` a database column holds (a signed 64-bit integer): a larger cursor is a 422.
SEQ_MAX = 2**63 - 1


def _check_text(value: str | None, name: str) -> None:
    """A text filter the database can compare: no NUL (PostgreSQL text cannot hold one), at most 1,000
    characters (every column filtered on is shorter)."""
    if value is not None and ("\x00" in value or len(value) > 1000):
        raise ApiError(422, f"{name} must be at most 1000 characters, without NUL", code="invalid_request",
                       param=name)


def _time(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        t = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(t):
            raise ApiError(422, f"{name} must be a finite number of epoch seconds, got {value!r}",
                           code="invalid_request", param=name)
        return t
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        raise ApiError(422, f"{name} must be epoch seconds or an ISO 8601 time, got {value!r}",
                       code="invalid_request", param=name)


@router.get("/v1/decisions", summary="Query past decisions of the caller's tenant, newest first")
async def list_decisions(
    request: Request,
    principal: Principal = Depends(require_principal("app", "reviewer")),
    action: str | None = None, effect: str | None = None, actor: str | None = None,
    session_id: str | None = None, model: str | None = None, kind: str | None = None,
    policy_hash: str | None = None, since: str | None = None, until: str | None = None,
    before: int | None = Query(None, ge=0, le=SEQ_MAX, description="cursor: only decisions with seq < before"),
    limit: int = Query(50, ge=1, le=1000),
) -> Response:
    if effect is not None and effect not in ("allow", "deny", "require_approval", "escalate"):
        raise ApiError(422, f"effect must be allow, deny, require_approval or escalate, got {effect!r}",
                       code="invalid_request", param="effect")
    for name, value in (("action", action), ("actor", actor), ("session_id", session_id), ("model", model),
                        ("kind", kind), ("policy_hash", policy_hash)):
        _check_text(value, name)
    s = request.app.state.runtime
    rows = await s.decisions.query(DecisionQuery(
        tenant=principal.tenant, action=action, effect=effect, actor=actor, session_id=session_id, model=model,
        kind=kind, policy_hash=policy_hash, since=_time(since, "since"), until=_time(until, "until"),
        before_seq=before, limit=limit))
    data = [decision_view(r, full=False) for r in rows]
    nxt = data[-1]["seq"] if len(data) == limit else None
    return json_response({"object": "list", "data": data, "next_before": nxt})


def explain(rec: dict[str, Any]) -> list[str]:
    """A readable account of why the decision came out as it did."""
    lines = []
    effect = rec.get("effect")
    if rec.get("default_applied"):
        lines.append(f"{effect}: no rule names action {rec.get('action')!r}, so the default (deny) applied")
    for r in rec.get("rules") or []:
        where = ""
        span = r.get("span")
        if span:
            where = f" ({span.get('file')}:{span.get('line')})"
        because = f" because {'; '.join(r['because'])}" if r.get("because") else ""
        eff = f" -> {r['effect']}" if r.get("effect") else ""
        lines.append(f"{r.get('kind')}{eff}: {r.get('source') or r.get('rule_id')}{where}{because}")
    for r in rec.get("shadow") or []:
        span = r.get("span") or {}
        where = f" ({span.get('file')}:{span.get('line')})" if span else ""
        because = f" because {'; '.join(r['because'])}" if r.get("because") else ""
        lines.append(f"shadow {r.get('kind')} -> {r.get('effect')} (not enforced): {r.get('source')}{where}{because}")
    if rec.get("shadow_effect"):
        lines.append(f"with the shadow rules enforced the effect would be {rec['shadow_effect']}")
    chain = (rec.get("routing") or {}).get("chain") or []
    if chain:
        lines.append("model chain: " + " -> ".join(chain))
    for a in rec.get("attempts") or []:
        lines.append(describe_attempt(a))
    if rec.get("model"):
        lines.append(f"answered by {rec['model']}")
    ver = (rec.get("extra") or {}).get("verification")
    if isinstance(ver, dict) and isinstance(ver.get("judge"), dict):
        j = ver["judge"]
        said = (f"{'divergent' if j.get('divergent') else 'same'}: {j.get('reason') or '(no reason given)'}"
                if j.get("status") == "ok" else f"{j.get('error')}; the embedded comparator decided "
                f"(divergence {ver.get('embedded_divergence')})")
        lines.append(f"verification judge {j.get('answered_by') or j.get('model')} ({j.get('status')}): {said}")
    for v in (rec.get("extra") or {}).get("tool_calls") or []:
        apr = (v.get("approval") or {}).get("approval_id")
        lines.append(f"tool call {v.get('name')} -> {v.get('effect')} (decision {v.get('decision_id')}"
                     + (f", approval {apr}" if apr else "") + f"): {v.get('reason')}")
    chat = (rec.get("extra") or {}).get("chat_decision_id") if rec.get("kind") == "tool_call" else None
    if chat:
        lines.append(f"a tool call the model returned in chat decision {chat}")
    mcp = (rec.get("extra") or {}).get("mcp") if rec.get("kind") == "mcp_tool_call" else None
    if isinstance(mcp, dict):
        ex = rec.get("extra") or {}
        status = f", upstream {ex['upstream_status']}" if ex.get("upstream_status") else ""
        apr = f", approval {ex['approval_id']}" if ex.get("approval_id") else ""
        lines.append(f"MCP tool call {mcp.get('tool')} on {mcp.get('server')}: {ex.get('outcome', 'no outcome yet')}"
                     f"{status}{apr}")
    if rec.get("tags"):
        lines.append("tags: " + ", ".join(rec["tags"]))
    lines.append(f"final effect: {effect} (policy {rec.get('policy_name')} v{rec.get('policy_version')}, "
                 f"hash {str(rec.get('policy_hash'))[:12]})")
    return lines


async def decision_detail(s: Any, tenant: str, decision_id: str) -> dict[str, Any] | None:
    """One decision of `tenant` with everything logged about it (its outcome or verdict row merged
    in) and its explanation; None when the tenant has no such decision."""
    row = None if "\x00" in decision_id else await s.decisions.get(tenant, decision_id)
    if row is None:
        return None
    out = decision_view(row, full=True)
    rec = orjson.loads(row.record)
    if (row.kind == "chat" and (rec.get("extra") or {}).get("outcome") in OUTCOME_PENDING) or row.kind in FOLLOWED:
        done = await s.decisions.get(tenant, gateway.outcome_id(row.id))
        if done is not None:  # what the answer told: final model, attempts, usage, a decision made on it
            done_rec = orjson.loads(done.record)
            out["outcome_row"] = decision_view(done, full=True)
            out["outcome"] = (done_rec.get("extra") or {}).get("outcome")
            rec = gateway.merged_record(rec, done_rec)
            out.update(model=rec["model"], effect=rec["effect"], tags=rec.get("tags", []))
            if (rec.get("extra") or {}).get("tool_calls"):  # the chain: chat -> each tool call -> approval
                out["tool_calls"] = rec["extra"]["tool_calls"]
    out["explanation"] = explain(rec)
    out["merged"] = rec
    return out


@router.get("/v1/decisions/{decision_id}", summary="One decision, everything logged about it, and why")
async def get_decision(decision_id: str, request: Request,
                       principal: Principal = Depends(require_principal("app", "reviewer"))) -> Response:
    out = await decision_detail(request.app.state.runtime, principal.tenant, decision_id)
    if out is None:
        raise ApiError(404, f"no decision {decision_id!r} in tenant {principal.tenant!r}", code="not_found")
    out.pop("merged")
    return json_response(out)
