"""Shared builders for approval tests: a held refund decision, a service on a real database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policyengine.approvals.models import Reviewer
from policyengine.approvals.service import ApprovalService
from policyengine.approvals.settings import ApprovalSettings
from policyengine.store import Database, upgrade
from policyengine.types import Action, ApprovalObligation, Channel, Decision, RuleHit, SourceSpan

SECRET = "test-link-secret-0123456789abcdef"


@dataclass
class Principal:
    tenant: str | None
    key_id: str
    subject: str
    roles: list[str] = field(default_factory=lambda: ["reviewer"])
    groups: list[str] = field(default_factory=list)

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or any(r in self.roles for r in roles)


def refund_action(amount: str = "150 GBP", actor: str = "agent-7", tenant: str = "acme") -> Action:
    return Action(action="refund", tenant=tenant, actor=actor, fields={"amount": amount, "order": "A-1001"})


def refund_decision(
    channels: list[Channel] | None = None, *, timeout_s: float | None = 8 * 3600, remind_s: float | None = 3600,
    on_timeout: str = "deny", escalate_to: str | None = None, group: str = "refunds",
) -> Decision:
    return Decision(
        effect="require_approval",
        action="refund",
        rules=[
            RuleHit(
                rule_id="support-desk.policy:14", kind="require_approval", effect="require_approval",
                span=SourceSpan(file="support-desk.policy", line=14),
                source='require approval for refund when amount > 100 GBP', because=["amount 150 GBP > 100 GBP"],
            )
        ],
        obligations=[
            ApprovalObligation(
                group=group, channels=channels or [], remind_every_s=remind_s, timeout_s=timeout_s,
                on_timeout=on_timeout, escalate_to=escalate_to, rule_id="support-desk.policy:14",
            )
        ],
        policy_name="support-desk", policy_version=3, policy_hash="ab" * 32,
    )


def reviewer(subject: str = "rita", *, tenant: str | None = "acme", groups: tuple[str, ...] = ("refunds",),
             roles: tuple[str, ...] = ("reviewer",), key_id: str | None = None) -> Reviewer:
    return Reviewer(subject=subject, tenant=tenant, groups=frozenset(groups), roles=frozenset(roles),
                    key_id=key_id or f"key-{subject}")


def settings(**kw: Any) -> ApprovalSettings:
    base: dict[str, Any] = {"link_secret": SECRET, "callback_secret": "cb-secret-0123456789abcdef", "delivery_backoff_s": 0.05}
    base.update(kw)
    return ApprovalSettings(**base)


async def make_service(url: str, **kw: Any) -> tuple[ApprovalService, Database]:
    upgrade(url)
    db = Database.open(url)
    dispatcher = kw.pop("dispatcher", None)
    clock = kw.pop("clock", None)
    extra: dict[str, Any] = {"clock": clock} if clock else {}
    for name in ("evaluate", "redactor"):  # the policy serving (edits are re-evaluated), field redaction
        if name in kw:
            extra[name] = kw.pop(name)
    return ApprovalService(db.engine, settings(**kw), dispatcher=dispatcher, **extra), db
