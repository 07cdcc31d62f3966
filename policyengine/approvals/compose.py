"""What to send when an approval changes: one rendered outbox row per channel.

Rows are written on the caller's connection, inside the transaction of the state
change that caused them, so a notification exists exactly when its cause does.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncConnection

from policyengine.approvals.errors import ApprovalInvalid
from policyengine.approvals.settings import ApprovalSettings
from policyengine.approvals.signing import LinkSigner
from policyengine.approvals.states import Via
from policyengine.approvals.tables import new_id, outbox_table
from policyengine.approvals.views import check_url, outcome, to_view
from policyengine.notifier import Notice, TemplateRenderer
from policyengine.notifier import email as email_channel
from policyengine.notifier import slack as slack_channel
from policyengine.notifier import teams as teams_channel
from policyengine.notifier import webhook as webhook_channel
from policyengine.store.redaction import Redactor


def destination(named: Mapping[str, str], target: str, environ: Mapping[str, str] | None = None) -> str:
    """Where a Teams / webhook channel of the policy delivers.

    A name configured in the settings wins; `env:NAME` (what the policy checker accepts
    for secret URLs) reads the URL from the environment at send time; anything else is
    taken as the URL itself (checked by the caller).
    """
    if target in named:
        return named[target]
    if target.startswith("env:"):
        name = target[4:].strip()
        value = (os.environ if environ is None else environ).get(name)
        if not value:
            raise ApprovalInvalid(f"destination {target!r}: environment variable {name} is not set")
        return value
    return target


class OutboxComposer:
    def __init__(
        self, settings: ApprovalSettings, renderer: TemplateRenderer, signer: LinkSigner, clock: Callable[[], Any],
        audit: Callable[..., Awaitable[None]], redactor: Redactor | None = None,
    ) -> None:
        """`redactor` hashes the deployment's redacted fields in every notice and stored callback."""
        self.settings, self.renderer, self.signer, self.clock, self.audit = settings, renderer, signer, clock, audit
        self.redactor = redactor

    def issue_link(self, approval_id: str, recipient: str, revision: int = 1, stage: int = 0) -> str:
        token = self.signer.issue(approval_id, recipient, revision, stage)
        return f"{self.settings.public_url}/review/{quote(token, safe='')}"

    def group_channels(self, group: str, fallback: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        configured = self.settings.group_channels.get(group)
        if configured is None:
            return list(fallback or [])
        return [c.model_dump() for c in configured]

    def notice(self, row: Any, purpose: str, review_url: str | None) -> Notice:
        view = to_view(row, self.redactor)  # redacted fields hashed: notices are stored and sent
        return Notice(
            approval_id=row.id, purpose=purpose, tenant=row.tenant, action_name=row.action_name, action=view.action,
            action_hash=row.action_hash, revision=row.revision, effect=row.effect, groups=list(row.groups or []),
            reasons=[r.model_dump() for r in view.reasons], signals=view.signals, answers=view.answers,
            answer=view.answer, answer_from=view.answer_from, already_answered=view.already_answered,
            requester=row.requester_subject or row.requester_actor, state=row.state, decided_by=row.decided_by,
            decision_reason=row.reason, review_url=review_url, status_url=f"{self.settings.public_url}/v1/approvals/{row.id}",
            timeout_at=row.timeout_at, on_timeout=row.on_timeout if row.escalate_to is None else f"escalate to {row.escalate_to}",
            reminders_sent=row.reminders_sent, policy_name=row.policy_name,
        )

    async def enqueue(self, conn: AsyncConnection, row: Any, kind: str, purpose: str, target: str, payload: dict[str, Any]) -> None:
        now = self.clock()
        await conn.execute(
            outbox_table.insert().values(
                id=new_id("ntf"), approval_id=row.id, kind=kind, purpose=purpose, target=target, payload=payload,
                state="pending", attempts=0, max_attempts=self.settings.delivery_max_attempts, next_attempt_at=now,
                created_at=now, version=1,
            )
        )

    async def enqueue_notices(self, conn: AsyncConnection, row: Any, purpose: str) -> None:
        """One outbox entry per channel of the approval, rendered now (what was sent is what is stored)."""
        for ch in row.channels or []:
            kind, target = ch["kind"], ch["target"]
            try:
                if kind == "email":  # one message and one personal link per address
                    for address in [a.strip() for a in target.split(",") if a.strip()]:
                        link = self.issue_link(row.id, f"email:{address}", row.revision, row.escalations)
                        payload = email_channel.compose(self.notice(row, purpose, link), self.renderer, address)
                        await self.enqueue(conn, row, "email", purpose, address, payload)
                elif kind == "slack":
                    link = self.issue_link(row.id, f"slack:{target}", row.revision, row.escalations)
                    payload = slack_channel.compose(self.notice(row, purpose, link), self.renderer, target)
                    await self.enqueue(conn, row, "slack", purpose, target, payload)
                elif kind == "teams":
                    url = destination(self.settings.teams_webhooks, target)
                    check_url(url, f"teams destination {target!r}")
                    link = self.issue_link(row.id, f"teams:{target}", row.revision, row.escalations)
                    payload = teams_channel.compose(self.notice(row, purpose, link), self.renderer)
                    await self.enqueue(conn, row, "teams", purpose, url, payload)
                elif kind == "webhook":
                    url = destination(self.settings.webhooks, target)
                    check_url(url, f"webhook destination {target!r}")
                    link = self.issue_link(row.id, f"webhook:{target}", row.revision, row.escalations)
                    payload = webhook_channel.compose(self.notice(row, purpose, link))
                    await self.enqueue(conn, row, "webhook", purpose, url, payload)
            except ApprovalInvalid as e:
                # A misconfigured channel must not lose the approval: record it and carry on.
                await self.audit(conn, row.id, "notify_failed", None, None, actor="system", via=Via.system, reason=e.message)

    async def on_terminal(self, conn: AsyncConnection, row: Any) -> None:
        """After a final state: update Slack messages, tell the other channels, call the app back."""
        for ch in row.channels or []:
            if ch["kind"] == "slack":
                payload = slack_channel.compose(self.notice(row, "decided", None), self.renderer, ch["target"])
                await self.enqueue(conn, row, "slack_update", "decided", ch["target"], payload)
            elif ch["kind"] == "webhook":
                try:
                    url = destination(self.settings.webhooks, ch["target"])
                except ApprovalInvalid as e:
                    await self.audit(conn, row.id, "notify_failed", None, None, actor="system", via=Via.system,
                                     reason=e.message)
                    continue
                await self.enqueue(conn, row, "webhook", "decided", url, webhook_channel.compose(self.notice(row, "decided", None)))
        if row.callback_url:
            # stored with redacted fields hashed; the worker fills in the exact action when it sends
            await self.enqueue(conn, row, "callback", "callback", row.callback_url,
                               outcome(row, self.redactor).model_dump(mode="json"))
