"""What a hold means for a chat request, and how a held chat resumes.

Each held rule says, for chat (`on chat hold | review | block`, compiled into its obligation's
`chat`): **hold** the request before any model is called until a reviewer decides; **review**:
answer, tag the answer `under-review` and open a review case with it; **block**: refuse. When
several held rules apply, block wins over hold, and hold over review. An escalation that names
no action defaults to review (lint warns, W250); every other hold defaults to hold.

A held chat is answered `409 approval_required` naming its approval, unless the request asked
to wait (`X-PolicyEngine-Hold-Wait: SECONDS`, capped by `chat_hold_max_wait_s`): then it gets
the completion as soon as a reviewer approves (a stream gets SSE keep-alive comments meanwhile).
It resumes, without a second hold, when it is sent again with the same `Idempotency-Key` or
with `X-PolicyEngine-Approval-Id`: the approval must have been made for this very request (its
action hash); approved -> the answer (for a held pair of dual-model answers: the one the reviewer
released, without calling the models again); rejected, expired or cancelled -> `ApprovalRefused`;
still pending -> the same 409 (or the wait).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policyengine.approvals.errors import ApprovalConflict
from policyengine.approvals.hashing import action_hash
from policyengine.gateway.call import Call
from policyengine.gateway.errors import ApprovalRefused, ApprovalRequired
from policyengine.gateway.hold import reasons
from policyengine.types import Decision

__all__ = ["Held", "chat_mode", "find", "refused", "required"]

_RANK = {"review": 0, "hold": 1, "block": 2}


def chat_mode(decision: Decision) -> str:
    """hold, review or block: what `decision` (held) means for a chat request."""
    modes = [ob.chat for ob in decision.obligations] or ["hold"]
    return max(modes, key=_RANK.__getitem__)


@dataclass(slots=True)
class Held:
    """A chat's approval as the gateway follows it: its id and state, the dual answers it holds
    and the one released, and its JSON for the client."""

    approval_id: str
    state: str
    answers: dict[str, str] | None
    answer: str | None
    json: dict[str, Any]

    @classmethod
    def of_view(cls, view: Any) -> Held:
        """From an ApprovalView."""
        return cls(view.id, str(view.state.value if hasattr(view.state, "value") else view.state), view.answers,
                   view.answer, {"approval_id": view.id, "state": str(getattr(view.state, "value", view.state)),
                                 "status_url": f"/v1/approvals/{view.id}", "decided_by": view.decided_by,
                                 "reason": view.reason})

    @classmethod
    def of_hold(cls, res: dict[str, Any], answers: dict[str, str] | None) -> Held:
        """From the JSON of a HoldResult just created (or found again)."""
        return cls(res["approval_id"], str(res.get("state") or "pending"), answers, None, res)

    @property
    def approved(self) -> bool:
        """A reviewer released it."""
        return self.state == "approved"

    @property
    def pending(self) -> bool:
        """Nobody has decided yet."""
        return self.state == "pending"

    def released_answer(self) -> str | None:
        """The answer to deliver for a held dual answer: the reviewer's choice, else the first."""
        if self.answer is not None:
            return self.answer
        return next(iter(self.answers.values())) if self.answers else None


async def find(call: Call) -> Held | None:
    """The approval this request resumes: the one it names (`resume_id`), or the one an earlier
    request with the same Idempotency-Key created; None when there is none. Refuses
    (`ApprovalConflict`, 409) an approval made for a different request."""
    rt = call.runtime
    if rt.approvals is None or not (call.resume_id or call.request_id):
        return None
    tenant, key = call.principal.tenant, call.principal.key_id
    if call.resume_id:
        view = await rt.approvals.get(call.resume_id, tenant=tenant, for_key=key)
    else:
        view = await rt.approvals.find_request(tenant, call.request_id or "", for_key=key)
        if view is None:
            return None
    if view.original_action_hash != action_hash(call.action):
        raise ApprovalConflict(f"approval {view.id} was made for a different request: resend the request it "
                               "held, unchanged, to resume it")
    return Held.of_view(view)


async def wait(call: Call, held: Held, seconds: float) -> Held:
    """`held` once a reviewer decides, or as it is after `seconds`."""
    rt = call.runtime
    assert rt.approvals is not None
    view = await rt.approvals.wait(held.approval_id, seconds, tenant=call.principal.tenant,
                                   for_key=call.principal.key_id)
    return Held.of_view(view)


def required(call: Call, held: Held | None) -> ApprovalRequired:
    """The 409 for a chat still waiting for its reviewer (no new approval is made on a resend)."""
    d = call.decision
    msg = (f"held for human review ({d.effect}): {reasons(d)}"
           + (f"; approval {held.approval_id}: wait for it, then resend with the same Idempotency-Key or "
              f"X-PolicyEngine-Approval-Id: {held.approval_id}" if held else ""))
    return ApprovalRequired(msg, decision_id=call.decision_id, decision=d,
                            extra={"effect": d.effect, "approval": held.json if held else None})


def refused(call: Call, held: Held) -> ApprovalRefused:
    """The refusal for a chat whose approval ended without releasing it."""
    by = f" by {held.json.get('decided_by')}" if held.json.get("decided_by") else ""
    why = f": {held.json.get('reason')}" if held.json.get("reason") else ""
    return ApprovalRefused(f"approval {held.approval_id} was {held.state}{by}{why}; the request is not answered",
                           decision_id=call.decision_id, decision=call.decision,
                           extra={"approval": held.json})
