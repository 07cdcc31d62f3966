"""The approvals service: hold, decide, wait, and the timer / delivery sweeps.

The API calls::

    result: HoldResult = await services.approvals.hold(
        action=action, decision=decision, principal=principal,
        callback_url=None, answers=None, decision_id=None, request_id=None,
    )

for every `require_approval` / `escalate` decision and returns
``result.model_dump(mode="json")`` under ``"approval"`` in its response.

Every state change is a compare-and-set on ``approvals.version`` (and
``state='pending'``), committed in the same transaction as its audit event
and its outbox rows, so a decision, a timeout or a reminder happens exactly
once however many replicas sweep, and a notification is never lost: it is in
the outbox before the transaction commits and is retried until delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from policyengine.approvals.compose import OutboxComposer
from policyengine.approvals.delivery import OutboxWorker
from policyengine.approvals.errors import (
    ApprovalConflict,
    ApprovalForbidden,
    ApprovalInvalid,
    ApprovalNotFound,
    LinkRefused,
)
from policyengine.approvals.hashing import action_hash, action_view
from policyengine.approvals.metrics import ApprovalMetrics
from policyengine.approvals.models import (
    ApprovalView,
    AuditEvent,
    HoldResult,
    Reviewer,
)
from policyengine.approvals.settings import ApprovalSettings
from policyengine.approvals.signing import LinkClaims, LinkError, LinkSigner
from policyengine.approvals.states import State, Via
from policyengine.approvals.tables import (
    approvals_table,
    events_table,
    link_uses_table,
    new_id,
    outbox_table,
    revisions_table,
    utcnow,
)
from policyengine.approvals.views import apply_edit, check_url, outcome, to_view
from policyengine.notifier import OutboxSender, TemplateRenderer
from policyengine.store.approval_chain import append_approval_event
from policyengine.store.approvals_models import APPROVAL_TABLES
from policyengine.types import Action, Decision

log = logging.getLogger("policyengine.approvals")

HELD_EFFECTS = ("require_approval", "escalate")
OTHER_TENANT = "this approval belongs to another tenant"


def _aliases(row: Any) -> set[str]:
    return {x.lower() for x in (row.requester_actor, row.requester_subject) if x}


class ApprovalService:
    """One per process. Safe to run in every replica against one database."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: ApprovalSettings | None = None,
        *,
        dispatcher: OutboxSender | None = None,
        renderer: TemplateRenderer | None = None,
        clock: Any = utcnow,
        metrics: ApprovalMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.settings = settings or ApprovalSettings()
        self.dispatcher = dispatcher
        self.renderer = renderer or TemplateRenderer(self.settings.templates_dir)
        self.signer = LinkSigner(self.settings.require_link_secret())
        self.clock = clock
        self._waiters: dict[str, asyncio.Event] = {}
        self.composer = OutboxComposer(self.settings, self.renderer, self.signer, clock, self._audit)
        self.worker = OutboxWorker(engine, dispatcher, self.settings, clock, metrics)

    # ------------------------------------------------------------------ schema

    async def create_tables(self) -> None:
        """Create the approval tables directly (tests / embedded use; production runs migrations)."""
        from policyengine.store.base import Base

        async with self.engine.begin() as conn:
            await conn.run_sync(lambda c: Base.metadata.create_all(c, tables=APPROVAL_TABLES))

    # -------------------------------------------------------------------- hold

    async def hold(
        self,
        *,
        action: Action,
        decision: Decision,
        principal: Any | None = None,
        callback_url: str | None = None,
        answers: dict[str, str] | None = None,
        decision_id: str | None = None,
        request_id: str | None = None,
    ) -> HoldResult:
        """Create a pending approval bound to the exact action, notify its reviewers.

        `principal` is the caller (anything with tenant / subject / key_id, e.g. the
        API's Principal). `answers` are the model outputs a divergence escalation
        compared (model name -> text), shown side by side to the reviewer.
        `callback_url` receives the signed outcome once decided.
        """
        if decision.effect not in HELD_EFFECTS:
            raise ApprovalInvalid(f"only require_approval / escalate decisions are held, not {decision.effect!r}")
        if answers is not None and (
            not isinstance(answers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in answers.items())
        ):
            raise ApprovalInvalid("answers must be an object of model name -> answer text")
        if callback_url is None:  # a callback registered on the API key
            attrs = getattr(principal, "attributes", None) or {}
            callback_url = attrs.get("callback_url") if isinstance(attrs.get("callback_url"), str) else None
        if callback_url is not None:
            check_url(callback_url, "callback_url", purpose="callback")
            if self.settings.callback_secret is None:
                # An unsigned outcome could be forged by anyone who can reach the app.
                raise ApprovalInvalid("callback_url needs signed callbacks: set POLICYENGINE_APPROVALS_CALLBACK_SECRET "
                                      "on the service (or poll GET /v1/approvals/{id} instead)")
            allowed = self.settings.callback_allowed_hosts
            host = (urlparse(callback_url).hostname or "").lower()
            if allowed and not any(fnmatch.fnmatch(host, pat.lower()) for pat in allowed):
                raise ApprovalInvalid(f"callback host {host!r} is not in POLICYENGINE_APPROVALS_CALLBACK_ALLOWED_HOSTS")
        now = self.clock()
        tenant = action.tenant if action.tenant is not None else getattr(principal, "tenant", None)
        view = action_view(action.model_copy(update={"tenant": tenant}))
        digest = action_hash(view)

        groups: list[str] = []
        channels: list[dict[str, Any]] = []
        remind: float | None = None
        timeout: float | None = None
        on_timeout, escalate_to = "deny", None
        for ob in decision.obligations:
            if ob.group and ob.group not in groups:
                groups.append(ob.group)
            for ch in ob.channels:
                c = ch.model_dump()
                if c not in channels:
                    channels.append(c)
            if ob.remind_every_s and (remind is None or ob.remind_every_s < remind):
                remind = ob.remind_every_s
            if ob.timeout_s and (timeout is None or ob.timeout_s < timeout):
                timeout, on_timeout, escalate_to = ob.timeout_s, ob.on_timeout, ob.escalate_to
        if not groups and self.settings.default_group:
            groups.append(self.settings.default_group)
        if not channels:  # a rule that names no channel: the deployment's default (or the group's) channels
            for ch in (self.settings.group_channels.get(groups[0]) if groups else None) or self.settings.default_channels:
                channels.append(ch.model_dump())
        if timeout is None and self.settings.default_timeout_s:
            timeout = self.settings.default_timeout_s
        if on_timeout == "escalate" and not escalate_to:
            on_timeout = "deny"

        if request_id is not None:
            existing = await self._existing_hold(tenant, request_id, digest)
            if existing is not None:
                return existing
        approval_id = new_id("apr")
        row = {
            "id": approval_id,
            "tenant": tenant,
            "state": State.pending.value,
            "effect": decision.effect,
            "action_name": action.action,
            "action_json": view,
            "action_hash": digest,
            "original_action_hash": digest,
            "revision": 1,
            "decision_json": decision.model_dump(mode="json"),
            "answers_json": dict(answers) if answers else None,
            "groups": groups,
            "channels": channels,
            "requester_actor": action.actor,
            "requester_subject": getattr(principal, "subject", None),
            "requester_key_id": getattr(principal, "key_id", None),
            "remind_every_s": remind,
            "timeout_s": timeout,
            "on_timeout": on_timeout,
            "escalate_to": escalate_to,
            "timeout_at": now + timedelta(seconds=timeout) if timeout else None,
            "next_reminder_at": now + timedelta(seconds=remind) if remind else None,
            "reminders_sent": 0,
            "escalations": 0,
            "created_at": now,
            "updated_at": now,
            "callback_url": callback_url,
            "policy_name": decision.policy_name or None,
            "policy_hash": decision.policy_hash or None,
            "decision_id": decision_id,
            "request_id": request_id,
            "version": 1,
        }
        try:
            await self._insert_hold(row, action, principal, decision, digest, groups)
        except IntegrityError:
            existing = await self._existing_hold(tenant, request_id, digest) if request_id is not None else None
            if existing is None:
                raise
            return existing
        self.kick_delivery()
        log.info("approval %s created: %s %s for groups %s", approval_id, decision.effect, action.action, groups)
        return HoldResult(
            approval_id=approval_id,
            action_hash=digest,
            groups=groups,
            timeout_at=row["timeout_at"],
            on_timeout=on_timeout if timeout else None,
            status_url=f"/v1/approvals/{approval_id}",
        )

    async def _existing_hold(self, tenant: str | None, request_id: str, digest: str) -> HoldResult | None:
        """An earlier hold with the same request_id (a client retry) — refused if the action differs."""
        async with self.engine.connect() as conn:
            q = sa.select(approvals_table).where(
                approvals_table.c.request_id == request_id,
                approvals_table.c.tenant.is_(None) if tenant is None else approvals_table.c.tenant == tenant,
            )
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        if row.original_action_hash != digest:
            raise ApprovalConflict(f"request_id {request_id!r} was already used for a different action")
        return HoldResult(
            approval_id=row.id, state=State(row.state), action_hash=row.action_hash, groups=list(row.groups or []),
            timeout_at=row.timeout_at, on_timeout=row.on_timeout if row.timeout_s else None,
            status_url=f"/v1/approvals/{row.id}", created=False,
        )

    async def _insert_hold(
        self, row: dict[str, Any], action: Action, principal: Any, decision: Decision, digest: str, groups: list[str]
    ) -> None:
        approval_id, view, now = row["id"], row["action_json"], row["created_at"]
        async with self.engine.begin() as conn:
            await conn.execute(approvals_table.insert().values(**row))
            await conn.execute(
                revisions_table.insert().values(
                    approval_id=approval_id, revision=1, action_json=view, action_hash=digest, created_at=now,
                    created_by=action.actor or getattr(principal, "subject", None),
                )
            )
            await self._audit(
                conn, approval_id, "created", None, State.pending, actor=action.actor or getattr(principal, "subject", None),
                via=Via.api, details={"effect": decision.effect, "groups": groups, "action_hash": digest},
            )
            approval = (await conn.execute(
                sa.select(approvals_table).where(approvals_table.c.id == approval_id)
            )).one()
            await self.composer.enqueue_notices(conn, approval, "request")

    # ------------------------------------------------------------------- read

    async def _row(self, conn: AsyncConnection, approval_id: str) -> Any:
        row = (await conn.execute(
            sa.select(approvals_table).where(approvals_table.c.id == approval_id)
        )).one_or_none()
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return row

    async def get(self, approval_id: str, *, tenant: str | type[Ellipsis] | None = ...) -> ApprovalView:
        """One approval; pass `tenant` to refuse (as not found) another tenant's approval."""
        async with self.engine.connect() as conn:
            row = await self._row(conn, approval_id)
        if tenant is not ... and row.tenant != tenant:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return to_view(row)

    async def audit_trail(self, approval_id: str) -> list[AuditEvent]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(events_table).where(events_table.c.approval_id == approval_id)
                .order_by(events_table.c.id)
            )).all()
        return [AuditEvent.model_validate(r._mapping, from_attributes=True) for r in rows]

    async def list_for(self, reviewer: Reviewer, *, state: State | None = State.pending, limit: int = 100) -> list[ApprovalView]:
        """Approvals this reviewer may decide: their tenant, one of their groups (newest first)."""
        limit = max(1, min(limit, 1000))
        base = sa.select(approvals_table).where(
            approvals_table.c.tenant.is_(None) if reviewer.tenant is None
            else approvals_table.c.tenant == reviewer.tenant
        )
        if state is not None:
            base = base.where(approvals_table.c.state == state.value)
        base = base.order_by(approvals_table.c.created_at.desc(), approvals_table.c.id)
        out: list[ApprovalView] = []
        page, offset = 500, 0
        async with self.engine.connect() as conn:
            while len(out) < limit:
                rows = (await conn.execute(base.limit(page).offset(offset))).all()
                out += [to_view(r) for r in rows
                        if not r.groups or "*" in reviewer.groups or set(r.groups) & reviewer.groups]
                if len(rows) < page:
                    break
                offset += page
        return out[:limit]

    async def wait(self, approval_id: str, timeout_s: float, *, tenant: str | type[Ellipsis] | None = ...) -> ApprovalView:
        """Long poll: return as soon as the approval leaves `pending`, or after `timeout_s`.

        Decisions taken in this process wake the waiter at once; decisions taken by
        another replica are seen by re-reading the row (every 0.25 s rising to 1 s).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        pause = 0.25
        while True:
            view = await self.get(approval_id, tenant=tenant)
            remaining = deadline - loop.time()
            if view.state.terminal or remaining <= 0:
                return view
            ev = self._waiters.setdefault(approval_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), timeout=min(pause, remaining))
            pause = min(1.0, pause * 1.5)

    # ------------------------------------------------------------ authorising

    def _refusal(self, row: Any, reviewer: Reviewer) -> tuple[str, Exception] | None:
        """Why (and with which error) this reviewer may not decide this approval now, or None."""
        if not reviewer.vouched_by_channel and row.tenant != reviewer.tenant:
            # do not reveal that another tenant's approval exists
            return OTHER_TENANT, ApprovalNotFound(f"no approval {row.id!r}")
        if row.state != State.pending.value:
            by = f" by {row.decided_by}" if row.decided_by else ""
            return f"already {row.state}", ApprovalConflict(f"approval {row.id} was already {row.state}{by}")
        why = self._authorise(row, reviewer)
        if why:
            return why, ApprovalForbidden(why)
        return None

    def _authorise(self, row: Any, reviewer: Reviewer) -> str | None:
        """Why this reviewer may not decide this approval, or None."""
        names = {reviewer.subject.lower(), *(a.lower() for a in reviewer.aliases)}
        bare = {n.split(":", 1)[1] if ":" in n else n for n in names}
        if _aliases(row) & (names | bare):
            return "the requester cannot approve their own action"
        if reviewer.vouched_by_channel:
            return None
        if row.tenant != reviewer.tenant:
            return OTHER_TENANT
        if self.settings.reviewer_roles and not (set(self.settings.reviewer_roles) & reviewer.roles):
            return f"reviewing needs one of the roles {sorted(self.settings.reviewer_roles)}"
        if row.groups and "*" not in reviewer.groups and not (set(row.groups) & reviewer.groups):
            return f"only reviewers of group {', '.join(row.groups)} may decide this approval"
        return None

    # ---------------------------------------------------------------- decide

    async def decide(
        self,
        approval_id: str,
        reviewer: Reviewer,
        *,
        approve: bool,
        reason: str | None = None,
        edited_action: dict[str, Any] | None = None,
        link_nonce: str | None = None,
    ) -> ApprovalView:
        """Approve or reject. First decision wins; later ones raise ApprovalConflict (409).

        `edited_action` (approve only) is a replacement for the action's `fields`
        (and optionally `text`): it is recorded as a new revision with a new hash,
        and the application is told to run that revision.
        """
        reason = (reason or "").strip() or None
        if not approve and not reason:
            raise ApprovalInvalid("a reason is required to reject")
        if reason and len(reason) > 2000:
            raise ApprovalInvalid("reason is too long (max 2000 characters)")
        if edited_action is not None and not approve:
            raise ApprovalInvalid("an edited action can only be approved")
        for _ in range(20):  # retry only when a concurrent reminder bumped the version
            async with self.engine.connect() as conn:
                row = await self._row(conn, approval_id)
            refusal = self._refusal(row, reviewer)
            if refusal is not None:
                why, exc = refusal
                await self._refuse(row, reviewer, why)  # audited in its own transaction, then refused
                raise exc
            async with self.engine.begin() as conn:
                values: dict[str, Any] = {}
                new_state = State.approved if approve else State.rejected
                now = self.clock()
                if edited_action is not None:
                    new_view = apply_edit(row.action_json, edited_action)
                    new_hash = action_hash(new_view)
                    if new_hash != row.action_hash:
                        values.update(action_json=new_view, action_hash=new_hash, revision=row.revision + 1)
                values.update(
                    state=new_state.value, decided_at=now, decided_by=reviewer.subject, decided_via=reviewer.via,
                    decided_ip=reviewer.ip, reason=reason, updated_at=now, version=row.version + 1,
                    next_reminder_at=None,
                )
                if not await self._update_pending(conn, approval_id, row.version, values):
                    continue  # lost the race: re-read (409 if someone decided, retry if a reminder fired)
                if link_nonce is not None:
                    try:
                        async with conn.begin_nested():
                            await conn.execute(
                                link_uses_table.insert().values(nonce=link_nonce, approval_id=approval_id, used_at=now,
                                                                recipient=reviewer.subject, ip=reviewer.ip)
                            )
                    except IntegrityError:
                        raise LinkRefused("this review link has already been used")
                if "revision" in values:
                    await conn.execute(
                        revisions_table.insert().values(
                            approval_id=approval_id, revision=values["revision"], action_json=values["action_json"],
                            action_hash=values["action_hash"], created_at=now, created_by=reviewer.subject,
                        )
                    )
                    await self._audit(
                        conn, approval_id, "edited", State.pending, State.pending, actor=reviewer.subject, via=reviewer.via,
                        ip=reviewer.ip, ua=reviewer.user_agent, reason=reason,
                        details={"from_hash": row.action_hash, "to_hash": values["action_hash"], "revision": values["revision"]},
                    )
                await self._audit(
                    conn, approval_id, new_state.value, State.pending, new_state, actor=reviewer.subject, via=reviewer.via,
                    ip=reviewer.ip, ua=reviewer.user_agent, reason=reason,
                )
                decided = await self._row(conn, approval_id)
                await self.composer.on_terminal(conn, decided)
            self._wake(approval_id)
            self.kick_delivery()
            log.info("approval %s %s by %s via %s", approval_id, new_state.value, reviewer.subject, reviewer.via)
            return to_view(decided)
        raise ApprovalConflict(f"approval {approval_id} is changing too fast; retry")

    async def cancel(self, approval_id: str, *, actor: str, reason: str | None = None, tenant: str | None = None) -> ApprovalView:
        """The requester withdraws a pending approval."""
        async with self.engine.begin() as conn:
            row = await self._row(conn, approval_id)
            if row.tenant != tenant:
                raise ApprovalNotFound(f"no approval {approval_id!r}")
            now = self.clock()
            res = await conn.execute(
                approvals_table.update()
                .where(approvals_table.c.id == approval_id, approvals_table.c.state == State.pending.value)
                .values(state=State.cancelled.value, decided_at=now, decided_by=actor, decided_via=Via.api.value,
                        reason=reason, updated_at=now, version=approvals_table.c.version + 1,
                        next_reminder_at=None)
            )
            if res.rowcount != 1:
                raise ApprovalConflict(f"approval {approval_id} was already {row.state}")
            await self._audit(conn, approval_id, "cancelled", State.pending, State.cancelled, actor=actor, via=Via.api, reason=reason)
            decided = await self._row(conn, approval_id)
            await self.composer.on_terminal(conn, decided)
        self._wake(approval_id)
        self.kick_delivery()
        return to_view(decided)

    # ------------------------------------------------------------ review links

    def issue_link(self, approval_id: str, recipient: str, revision: int = 1, stage: int = 0) -> str:
        return self.composer.issue_link(approval_id, recipient, revision, stage)

    async def open_link(self, token: str) -> tuple[LinkClaims, ApprovalView]:
        """Verify a link for display (GET): signature and expiry; says if it was already used."""
        try:
            claims = self.signer.load(token, max_age_s=self.settings.link_ttl_s)
        except LinkError as e:
            raise LinkRefused(e.reason)
        view = await self.get(claims.approval_id)
        return claims, view

    async def link_used(self, nonce: str) -> bool:
        async with self.engine.connect() as conn:
            used = (await conn.execute(
                sa.select(link_uses_table.c.nonce).where(link_uses_table.c.nonce == nonce)
            )).first()
        return used is not None

    async def decide_with_link(
        self, token: str, *, approve: bool, reason: str | None, via: Via = Via.review_page, ip: str | None = None,
        user_agent: str | None = None,
    ) -> ApprovalView:
        """POST from the review page: signature, expiry, single use, then `decide`."""
        try:
            claims = self.signer.load(token, max_age_s=self.settings.link_ttl_s)
        except LinkError as e:
            await self._refuse_link(token, e.reason, ip)
            raise LinkRefused(e.reason)
        if await self.link_used(claims.nonce):
            async with self.engine.connect() as conn:
                row = (await conn.execute(
                    sa.select(approvals_table).where(approvals_table.c.id == claims.approval_id)
                )).one_or_none()
            if row is not None:
                await self._refuse(row, Reviewer(subject=claims.recipient, via=via.value, ip=ip), "reused review link")
            raise LinkRefused("this review link has already been used")
        async with self.engine.connect() as conn:
            current = await self._row(conn, claims.approval_id)
        if claims.stage != current.escalations and current.state == State.pending.value:
            await self._refuse(current, Reviewer(subject=claims.recipient, via=via.value, ip=ip), "link from before an escalation")
            raise LinkRefused("this approval has been escalated since this link was sent; it now needs "
                              f"a reviewer of {', '.join(current.groups)}")
        reviewer = Reviewer(
            subject=claims.recipient, via=via.value, ip=ip, user_agent=user_agent, vouched_by_channel=True,
            aliases=frozenset({claims.recipient.split(":", 1)[-1]}),
        )
        return await self.decide(claims.approval_id, reviewer, approve=approve, reason=reason, link_nonce=claims.nonce)

    async def decide_from_slack(
        self, approval_id: str, *, user_id: str, user_names: Sequence[str], approve: bool, reason: str | None,
        channel_id: str | None, ip: str | None = None,
    ) -> ApprovalView:
        """A verified Slack button click: the approval must have been posted to that Slack channel."""
        async with self.engine.connect() as conn:
            row = await self._row(conn, approval_id)
            posted = (await conn.execute(
                sa.select(outbox_table.c.result).where(outbox_table.c.approval_id == approval_id,
                                                       outbox_table.c.kind == "slack",
                                                       outbox_table.c.state == "delivered")
            )).all()
        channels = {(p.result or {}).get("channel") for p in posted}
        if not any(c["kind"] == "slack" for c in row.channels or []) or (channel_id and channels and channel_id not in channels):
            reviewer = Reviewer(subject=f"slack:{user_id}", via=Via.slack.value, ip=ip)
            await self._refuse(row, reviewer, "approval was not sent to this Slack channel")
            raise ApprovalForbidden("this approval was not sent to this Slack channel")
        allowed = [self.settings.slack_reviewers[g] for g in (row.groups or []) if g in self.settings.slack_reviewers]
        if allowed and not any(user_id in ids for ids in allowed):
            await self._refuse(row, Reviewer(subject=f"slack:{user_id}", via="slack", ip=ip),
                               f"Slack user is not a reviewer of group {', '.join(row.groups)}")
            raise ApprovalForbidden(f"you are not a reviewer of group {', '.join(row.groups)}")
        reviewer = Reviewer(
            subject=f"slack:{user_id}", via=Via.slack.value, ip=ip, vouched_by_channel=True,
            aliases=frozenset(n for n in user_names if n),
        )
        return await self.decide(approval_id, reviewer, approve=approve, reason=reason)

    async def _refuse_link(self, token: str, why: str, ip: str | None) -> None:
        log.info("review link refused: %s (ip=%s)", why, ip)

    @staticmethod
    async def _update_pending(conn: AsyncConnection, approval_id: str, version: int, values: dict[str, Any]) -> bool:
        """Write `values` to an approval that is still pending at `version` (optimistic lock).
        False when another writer (a reviewer, a timer, another replica) got there first."""
        res = await conn.execute(
            approvals_table.update()
            .where(approvals_table.c.id == approval_id, approvals_table.c.state == State.pending.value,
                   approvals_table.c.version == version)
            .values(**values)
        )
        return res.rowcount == 1

    # ----------------------------------------------------------------- sweeps

    async def _due(self, column: sa.Column, now: datetime, limit: int) -> Sequence[sa.Row]:
        """(id, version) of the pending approvals whose `column` time has come, earliest first."""
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(approvals_table.c.id, approvals_table.c.version)
                    .where(approvals_table.c.state == State.pending.value, column <= now)
                    .order_by(column).limit(limit)
                )
            ).all()

    async def sweep_timeouts(self, *, limit: int = 200) -> int:
        """Apply the policy's timeout outcome to every overdue approval. Returns how many this call applied."""
        now = self.clock()
        due = await self._due(approvals_table.c.timeout_at, now, limit)
        fired = 0
        for approval_id, version in due:
            async with self.engine.begin() as conn:
                row = await self._row(conn, approval_id)
                if row.version != version or row.state != State.pending.value:
                    continue
                if row.on_timeout == "escalate" and row.escalate_to and row.escalate_to not in (row.groups or []):
                    values = {
                        "groups": [row.escalate_to], "escalations": row.escalations + 1, "updated_at": now,
                        "channels": self.composer.group_channels(row.escalate_to, row.channels),
                        "timeout_at": now + timedelta(seconds=row.timeout_s) if row.timeout_s else None,
                        "on_timeout": "deny",  # an escalated approval that times out again is denied
                        "next_reminder_at": now + timedelta(seconds=row.remind_every_s) if row.remind_every_s else None,
                        "version": version + 1,
                    }
                    kind, to_state = "escalated", State.pending
                else:
                    to_state = State.approved if row.on_timeout == "approve" else State.expired
                    values = {
                        "state": to_state.value, "decided_at": now, "decided_by": "system:timeout",
                        "decided_via": Via.timer.value, "reason": f"no decision within {row.timeout_s:g}s: {row.on_timeout}",
                        "updated_at": now, "next_reminder_at": None, "version": version + 1,
                    }
                    kind = "timed_out"
                if not await self._update_pending(conn, approval_id, version, values):
                    continue  # another replica (or a reviewer) got there first
                await self._audit(
                    conn, approval_id, kind, State.pending, to_state, actor="system:timeout", via=Via.timer,
                    reason=values.get("reason") or f"escalated to {row.escalate_to}",
                    details={"on_timeout": row.on_timeout, "timeout_s": row.timeout_s},
                )
                fresh = await self._row(conn, approval_id)
                log.info("approval %s %s (%s after %ss)", approval_id, kind, row.on_timeout, row.timeout_s)
                if to_state.terminal:
                    await self.composer.on_terminal(conn, fresh)
                else:
                    await self.composer.enqueue_notices(conn, fresh, "escalated")
                fired += 1
            self._wake(approval_id)
        if fired:
            self.kick_delivery()
        return fired

    async def sweep_reminders(self, *, limit: int = 200) -> int:
        now = self.clock()
        due = await self._due(approvals_table.c.next_reminder_at, now, limit)
        sent = 0
        for approval_id, version in due:
            async with self.engine.begin() as conn:
                row = await self._row(conn, approval_id)
                if row.version != version or not row.remind_every_s:
                    continue
                if not await self._update_pending(conn, approval_id, version, {
                    "next_reminder_at": now + timedelta(seconds=row.remind_every_s),
                    "reminders_sent": row.reminders_sent + 1, "version": version + 1, "updated_at": now,
                }):
                    continue
                await self._audit(conn, approval_id, "reminded", State.pending, State.pending, actor="system:timer", via=Via.timer,
                                  details={"reminder": row.reminders_sent + 1})
                await self.composer.enqueue_notices(conn, await self._row(conn, approval_id), "reminder")
                sent += 1
        if sent:
            self.kick_delivery()
        return sent

    async def run_sweeps(self) -> dict[str, int]:
        """One round of every sweep (what the scheduler runs every interval)."""
        out = {"timeouts": await self.sweep_timeouts(), "reminders": await self.sweep_reminders()}
        out["delivered"] = await self.deliver_due()
        if self.metrics is not None:
            backlog = await self.backlog()
            self.metrics.pending.set(backlog["pending"])
            self.metrics.dead.set(backlog["dead_deliveries"])
        return out

    async def backlog(self) -> dict[str, int]:
        """How many approvals wait for a reviewer and how many deliveries gave up."""
        return await self.worker.backlog()

    async def deliver_due(self, *, limit: int = 100) -> int:
        return await self.worker.deliver_due(limit=limit)

    async def redeliver(self, outbox_ids: Sequence[str] | None = None) -> int:
        """Put dead deliveries back in the queue (all, or the given ids) with a fresh attempt budget."""
        return await self.worker.redeliver(outbox_ids)

    def kick_delivery(self) -> None:
        self.worker.kick()

    async def drain(self) -> None:
        """Wait for background deliveries (tests, shutdown)."""
        await self.worker.drain()

    # ---------------------------------------------------------------- helpers

    def _wake(self, approval_id: str) -> None:
        ev = self._waiters.pop(approval_id, None)
        if ev is not None:
            ev.set()

    async def _audit(
        self, conn: AsyncConnection, approval_id: str, kind: str, from_state: State | None, to_state: State | None, *,
        actor: str | None, via: Via | str | None, ip: str | None = None, ua: str | None = None,
        reason: str | None = None, details: dict[str, Any] | None = None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.transition(kind)
        # on the approval-event hash chain (verify-log checks it), in the caller's transaction
        await append_approval_event(
            conn, approval_id=approval_id, at=self.clock(), kind=kind,
            from_state=from_state.value if from_state else None, to_state=to_state.value if to_state else None,
            actor=actor, via=str(via.value if isinstance(via, Via) else via) if via else None, ip=ip,
            user_agent=(ua or None) and ua[:400], reason=reason, details=details,
        )

    async def _refuse(self, row: Any, reviewer: Reviewer, why: str) -> None:
        """Record a refused attempt in the audit trail, in its own transaction.

        Callers must not hold a connection while calling this (pool exhaustion under contention).
        """
        async with self.engine.begin() as c2:
            await self._audit(c2, row.id, "refused", State(row.state), None, actor=reviewer.subject, via=reviewer.via,
                              ip=reviewer.ip, ua=reviewer.user_agent, reason=why)


__all__: Sequence[str] = ["ApprovalService", "HoldResult", "Reviewer", "outcome", "to_view", "utcnow"]
