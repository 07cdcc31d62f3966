"""Pydantic shapes at the approvals boundary: what `hold` returns, what the API shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from policyengine.approvals.states import State


class HoldResult(BaseModel):
    """What the service puts in the response of a held decision."""

    approval_id: str
    state: State = State.pending
    action_hash: str
    groups: list[str] = Field(default_factory=list)
    timeout_at: datetime | None = None
    on_timeout: str | None = None
    status_url: str  # GET (long poll with ?wait=seconds)
    created: bool = True  # False when an identical pending hold already existed (idempotent retry)


class Reason(BaseModel):
    rule_id: str
    kind: str = ""
    source: str = ""
    where: str | None = None
    because: list[str] = Field(default_factory=list)


class ApprovalView(BaseModel):
    """An approval as the API shows it to the requester and to reviewers."""

    id: str
    state: State
    released: bool
    tenant: str | None
    effect: str
    action_name: str
    action: dict[str, Any]
    action_hash: str
    revision: int
    original_action_hash: str
    edited: bool
    groups: list[str]
    reasons: list[Reason]
    signals: dict[str, Any]
    tags: list[str] = Field(default_factory=list)
    answers: dict[str, str] | None = None
    # the answer the reviewer released for a held chat with dual answers (the chosen one, or their
    # edit); None: the first model's answer is released on approval
    answer: str | None = None
    # the model whose answer `answer` is (a key of `answers`); None for a reviewer's edit
    answer_from: str | None = None
    # a chat answered before review (`on chat review`): the client already has the first answer
    already_answered: bool = False
    requester: str | None = None  # the requesting API key's subject (the authenticated identity)
    actor: str | None = None  # the action's `actor` as the application wrote it: context, not an identity
    created_at: datetime
    updated_at: datetime
    timeout_at: datetime | None
    on_timeout: str
    escalate_to: str | None
    next_reminder_at: datetime | None
    reminders_sent: int
    escalations: int
    decided_at: datetime | None
    decided_by: str | None
    decided_via: str | None
    reason: str | None
    policy_name: str | None
    policy_hash: str | None
    decision_id: str | None
    version: int


class AuditEvent(BaseModel):
    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    actor: str | None
    via: str | None
    ip: str | None
    user_agent: str | None = None
    reason: str | None
    details: dict[str, Any] | None = None


class Outcome(BaseModel):
    """The signed body of an application callback (and of `wait_for_approval`)."""

    event: Literal["approval.decided"] = "approval.decided"
    approval_id: str
    state: State
    released: bool
    action_hash: str  # the approved revision's hash (what may run)
    original_action_hash: str
    revision: int
    action: dict[str, Any]
    decided_at: datetime | None
    decided_by: str | None
    decided_via: str | None
    reason: str | None


@dataclass(frozen=True)
class Reviewer:
    """Who is deciding, as far as approvals are concerned."""

    subject: str  # e.g. "alice", "email:refunds@example.com", "slack:U123"
    tenant: str | None = None
    key_id: str | None = None  # the API key deciding (REST); None for link / Slack reviewers
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    via: str = "api"
    ip: str | None = None
    user_agent: str | None = None
    # Set for link / Slack reviewers: the channel the approval was sent to vouches for them.
    vouched_by_channel: bool = False
    aliases: frozenset[str] = field(default_factory=frozenset)  # other names (slack username, email)

    @classmethod
    def from_principal(cls, principal: Any, *, ip: str | None = None, user_agent: str | None = None) -> Reviewer:
        return cls(
            subject=str(getattr(principal, "subject", None) or getattr(principal, "key_id", "")),
            tenant=getattr(principal, "tenant", None),
            key_id=getattr(principal, "key_id", None),
            groups=frozenset(getattr(principal, "groups", None) or ()),
            roles=frozenset(getattr(principal, "roles", None) or ()),
            via="api",
            ip=ip,
            user_agent=user_agent,
        )
