"""Holding a decision for a human: the approval of a held, committed decision, and the reasons.

`hold(call)` is the one place the gateway creates an approval (step 6 of the commit order,
"act"); `reasons(decision)` is the one wording of why a decision came out as it did.
"""

from __future__ import annotations

import logging
from typing import Any

from policyengine import tracing
from policyengine.approvals.errors import ApprovalError
from policyengine.gateway.call import HELD, Call
from policyengine.gateway.errors import ApprovalsUnavailable
from policyengine.types import Decision

__all__ = ["hold", "reasons"]

log = logging.getLogger("policyengine.gateway")


def reasons(decision: Decision) -> str:
    """A one-line account of the rules behind `decision`'s effect (at most three)."""
    hits = [r for r in decision.rules if r.effect == decision.effect] or decision.rules
    out = []
    for r in hits[:3]:
        where = f" ({r.span})" if r.span else ""
        because = f": {'; '.join(r.because)}" if r.because else ""
        out.append(f"{r.source or r.rule_id}{where}{because}")
    if decision.default_applied:
        out.append("no rule allows this action (default deny)")
    return " | ".join(out) or decision.effect


async def hold(call: Call, *, callback_url: str | None = None, answers: dict[str, str] | None = None,
               request_id: str | None = None) -> dict[str, Any] | None:
    """Create the approval for a held, committed decision (step 5, "act").

    Returns the approval as JSON, or None when the decision is not held or no approvals
    service runs. An `ApprovalError` (the request is wrong, e.g. a refused callback URL)
    passes through unchanged; any other failure is `ApprovalsUnavailable`.
    """
    rt = call.runtime
    if call.decision.effect not in HELD or rt.approvals is None:
        return None
    try:
        with tracing.span("policyengine.approval created", lambda: {
                "policyengine.decision.id": call.decision_id, "policyengine.action": call.action.action,
                "policyengine.effect": call.decision.effect}) as sp:
            res = await rt.approvals.hold(action=call.action, decision=call.decision, principal=call.principal,
                                          callback_url=callback_url, answers=answers, decision_id=call.decision_id,
                                          request_id=request_id or call.request_id)
            if sp is not None:
                tracing.annotate(sp, {"policyengine.approval.id": res.approval_id,
                                      "policyengine.approval.state": str(res.state), "policyengine.approval.groups":
                                      list(res.groups), "policyengine.approval.created": res.created})
    except ApprovalError:
        raise
    except Exception:
        log.exception("approval hold failed for decision %s", call.decision_id)
        raise ApprovalsUnavailable(f"the decision {call.decision_id} was recorded ({call.decision.effect}) but "
                                   "its approval could not be created",
                                   decision_id=call.decision_id, decision=call.decision)
    return res.model_dump(mode="json") if hasattr(res, "model_dump") else dict(res)
