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
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from policyengine import tracing
from policyengine.approvals.compose import OutboxComposer
from policyengine.approvals.delivery import OutboxWorker
from policyengine.approvals.errors import (
    ApprovalConflict,
    ApprovalError,
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
from policyengine.approvals.signing import (
    LinkClaims,
    LinkError,
    LinkSigner,
    SignatureError,
    verify_reviewer,
)
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
from policyengine.approvals.views import (
    apply_edit,
    check_url,
    choose_answer,
    outcome,
    redact_action,
    redact_decision,
    restore_redacted,
    to_view,
)
from policyengine.errors import PolicyEngineError
from policyengine.notifier import OutboxSender, TemplateRenderer
from policyengine.store.approval_chain import append_approval_event
from policyengine.store.approvals_models import APPROVAL_TABLES
from policyengine.store.logger import redact_rules
from policyengine.store.redaction import Redactor
from policyengine.types import Action, Decision

log = logging.getLogger("policyengine.approvals")

HELD_EFFECTS = ("require_approval", "escalate")
OTHER_TENANT = "this approval belongs to another tenant"
SELF_APPROVAL = "the requester cannot approve their own action"
# Prefixes naming the channel an identity came through ("email:alice@acme", "slack:U123").
CHANNEL_PREFIXES = frozenset({"email", "slack", "teams", "webhook", "key", "api"})
MAX_REVIEWER_ID = 200

Evaluate = Callable[[Action], Awaitable[Decision]]


def identity_forms(name: str | None) -> set[str]:
    """The forms under which an identity is compared for self-approval.

    Case-folded and stripped; without a channel prefix (`email:`, `slack:`, `webhook:` ...);
    and the local part of an address (`alice@acme` -> `alice`). Two identities are the same
    person when their forms meet. This errs on the side of refusing: `alice@acme` and
    `alice@globex` count as one person (within one tenant, which is where reviewers decide).
    """
    if not name or not name.strip():
        return set()
    n = name.strip().lower()
    out = {n}
    kind, sep, rest = n.partition(":")
    if sep and kind in CHANNEL_PREFIXES and rest:
        n = rest
        out.add(n)
    local = n.split("@", 1)[0]
    if local:
        out.add(local)
    return out


def _requester_forms(row: Any) -> set[str]:
    """The requester's identity: the subject of the API key that created the approval (never
    the action's free-text `actor`, which is context only)."""
    return identity_forms(row.requester_subject)


def _answer_details(text: str, model: str | None, by_reviewer: bool) -> dict[str, Any]:
    """What the decision's audit event says about the released answer: whose it is, how it was
    chosen, its digest and length, and the text itself when it is the reviewer's edit."""
    out: dict[str, Any] = {"from": model, "edited": model is None,
                           "chosen": "reviewer" if by_reviewer else "default (the first answer)",
                           "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "chars": len(text)}
    if model is None:
        out["text"] = text
    return out


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
        evaluate: Evaluate | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        """`evaluate(action) -> Decision` is the policy serving now: every edited revision is
        evaluated with it before it can be approved (without it, edits are refused).
        `redactor` hashes the fields the deployment redacts (`settings.redact_fields`) in every
        copy the approvals store or send, except the held action itself (see `get`)."""
        self.engine = engine
        self.evaluate = evaluate
        self.redactor = redactor if redactor else None
        self.metrics = metrics
        self.settings = settings or ApprovalSettings()
        self.dispatcher = dispatcher
        self.renderer = renderer or TemplateRenderer(self.settings.templates_dir)
        self.signer = LinkSigner(self.settings.require_link_secret())
        self.clock = clock
        self._waiters: dict[str, asyncio.Event] = {}
        self.composer = OutboxComposer(self.settings, self.renderer, self.signer, clock, self._audit, self.redactor)
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
            "decision_json": redact_decision(decision.model_dump(mode="json"), self.redactor),
            "answers_json": dict(answers) if answers else None,
            "groups": groups,
            "channels": channels,
            "requester_actor": redact_action(view, self.redactor).get("actor"),  # context, hashed if redacted
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
            requester = getattr(principal, "subject", None) or action.actor
            await conn.execute(
                revisions_table.insert().values(
                    approval_id=approval_id, revision=1, action_json=redact_action(view, self.redactor),
                    action_hash=digest, created_at=now, created_by=requester,
                )
            )
            await self._audit(
                conn, approval_id, "created", None, State.pending, actor=requester, via=Via.api,
                details={"effect": decision.effect, "groups": groups, "action_hash": digest,
                         "key_id": getattr(principal, "key_id", None),
                         "actor": redact_action(view, self.redactor).get("actor")},
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

    def view(self, row: Any, *, reveal: bool = False, for_key: str | None = None) -> ApprovalView:
        """`row` as the API shows it. Redacted fields are hashed in `action` unless `reveal`, or
        `for_key` is the API key that requested the approval (the application needs the exact
        action it will run, and checks it against `action_hash`)."""
        exact = reveal or (for_key is not None and for_key == row.requester_key_id)
        return to_view(row, None if exact else self.redactor)

    async def get(self, approval_id: str, *, tenant: str | type[Ellipsis] | None = ..., reveal: bool = False,
                  for_key: str | None = None) -> ApprovalView:
        """One approval; pass `tenant` to refuse (as not found) another tenant's approval.
        Redacted fields are hashed unless `reveal` or `for_key` is the requesting key (see `view`)."""
        async with self.engine.connect() as conn:
            row = await self._row(conn, approval_id)
        if tenant is not ... and row.tenant != tenant:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return self.view(row, reveal=reveal, for_key=for_key)

    async def find_request(self, tenant: str | None, request_id: str, *, for_key: str | None = None) -> ApprovalView | None:
        """The approval a client request created, by the request's id (its Idempotency-Key) in this
        tenant, or None. Lets a resent request pick up its approval instead of opening another."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(approvals_table).where(
                approvals_table.c.request_id == request_id,
                approvals_table.c.tenant.is_(None) if tenant is None else approvals_table.c.tenant == tenant,
            ))).first()
        return None if row is None else self.view(row, for_key=for_key)

    async def for_decision(self, tenant: str | None, decision_id: str) -> ApprovalView | None:
        """The approval a decision of `tenant` opened (the newest, when a chat opened more), or None.
        Reads without an index on `decision_id`: for pages showing one decision, not for loops."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(approvals_table).where(
                approvals_table.c.decision_id == decision_id,
                approvals_table.c.tenant.is_(None) if tenant is None else approvals_table.c.tenant == tenant,
            ).order_by(approvals_table.c.created_at.desc()).limit(1))).first()
        return None if row is None else self.view(row)

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
                out += [self.view(r) for r in rows
                        if not r.groups or "*" in reviewer.groups or set(r.groups) & reviewer.groups]
                if len(rows) < page:
                    break
                offset += page
        return out[:limit]

    async def wait(self, approval_id: str, timeout_s: float, *, tenant: str | type[Ellipsis] | None = ...,
                   for_key: str | None = None) -> ApprovalView:
        """Long poll: return as soon as the approval leaves `pending`, or after `timeout_s`.

        Decisions taken in this process wake the waiter at once; decisions taken by
        another replica are seen by re-reading the row (every 0.25 s rising to 1 s).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        pause = 0.25
        while True:
            view = await self.get(approval_id, tenant=tenant, for_key=for_key)
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

    async def refusal_for(self, approval_id: str, reviewer: Reviewer) -> str | None:
        """Why `reviewer` may not decide this approval now (self-approval, another group, another
        tenant, already decided, a missing role), or None. Reads only and audits nothing: a page's
        hint before a form is shown; `decide` checks again and audits a refusal."""
        async with self.engine.connect() as conn:
            row = await self._row(conn, approval_id)
        refusal = self._refusal(row, reviewer)
        return None if refusal is None else refusal[0]

    @staticmethod
    def is_requester(row: Any, reviewer: Reviewer) -> bool:
        """True when `reviewer` is the one who asked: the same API key, or the same subject in
        any of its forms (`identity_forms`: case, channel prefix, address local part), also
        under the reviewer's aliases (Slack user names, a link's addressee). The action's
        `actor` text is not an identity and plays no part."""
        if reviewer.key_id is not None and reviewer.key_id == row.requester_key_id:
            return True
        mine = _requester_forms(row)
        if not mine:
            return False
        theirs: set[str] = set()
        for name in (reviewer.subject, *reviewer.aliases):
            theirs |= identity_forms(name)
        return bool(mine & theirs)

    def _authorise(self, row: Any, reviewer: Reviewer) -> str | None:
        """Why this reviewer may not decide this approval, or None."""
        if self.is_requester(row, reviewer):
            return SELF_APPROVAL
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

    async def decide(self, approval_id: str, reviewer: Reviewer, *, approve: bool, **kw: Any) -> ApprovalView:
        """`_decide` (below) in a `policyengine.approval decided` span when tracing is on: the
        approval and decision ids, the state reached, how (`via`); a refusal sets `error.type`."""
        with tracing.span("policyengine.approval decided", lambda: {
                "policyengine.approval.id": approval_id, "policyengine.approval.via": reviewer.via,
                "policyengine.approval.approve": approve}) as sp:
            view = await self._decide(approval_id, reviewer, approve=approve, **kw)
            tracing.annotate(sp, {"policyengine.approval.state": view.state.value,
                                  "policyengine.decision.id": view.decision_id})
            return view

    async def _decide(
        self,
        approval_id: str,
        reviewer: Reviewer,
        *,
        approve: bool,
        reason: str | None = None,
        edited_action: dict[str, Any] | None = None,
        link_nonce: str | None = None,
        details: dict[str, Any] | None = None,
        answer_from: str | None = None,
        answer: str | None = None,
    ) -> ApprovalView:
        """Approve or reject. First decision wins; later ones raise ApprovalConflict (409).

        For an approval holding model answers (a held chat's divergent dual answers), approving
        releases `answer_from`'s answer (a model name, a key of `answers`) or `answer`, the
        reviewer's edited text (text only: it is not evaluated against the policy again); with
        neither, the first answer. The released text is stored (`ApprovalView.answer`) and named
        in the decision's audit event; a choice naming an unknown model, or made on an approval
        without answers, is refused (`ApprovalInvalid`, 422, audited).

        `edited_action` (approve only) is a replacement for the action's `fields`
        (and optionally `text`): it is evaluated again with the policy serving now and
        approved only when the policy would still hold it (require_approval / escalate) or
        allow it; a deny refuses the approval (`ApprovalInvalid`, 422, naming the rule). The
        revision is recorded with its new hash, and the application is told to run it.
        A redacted field sent back as the digest the reviewer was shown keeps its value.
        `details` are added to the decision's audit event.
        """
        reason = (reason or "").strip() or None
        if not approve and not reason:
            raise ApprovalInvalid("a reason is required to reject")
        if reason and len(reason) > 2000:
            raise ApprovalInvalid("reason is too long (max 2000 characters)")
        if edited_action is not None and not approve:
            raise ApprovalInvalid("an edited action can only be approved")
        if (answer_from is not None or answer is not None) and not approve:
            raise ApprovalInvalid("an answer can only be chosen when approving")
        checked: tuple[str, dict[str, Any], str, str] | None = None  # (from hash, view, hash, effect)
        for _ in range(20):  # retry only when a concurrent reminder bumped the version
            async with self.engine.connect() as conn:
                row = await self._row(conn, approval_id)
            refusal = self._refusal(row, reviewer)
            if refusal is not None:
                why, exc = refusal
                await self._refuse(row, reviewer, why)  # audited in its own transaction, then refused
                raise exc
            try:
                chosen = choose_answer(row.answers_json, answer_from, answer) if approve else None
            except ApprovalInvalid as exc:
                await self._refuse(row, reviewer, exc.message)
                raise
            if edited_action is not None and (checked is None or checked[0] != row.action_hash):
                new_view = apply_edit(row.action_json, restore_redacted(row.action_json, edited_action, self.redactor))
                new_hash = action_hash(new_view)
                effect = "" if new_hash == row.action_hash else await self._reevaluate(row, reviewer, new_view)
                checked = (row.action_hash, new_view, new_hash, effect)
            async with self.engine.begin() as conn:
                values: dict[str, Any] = {}
                new_state = State.approved if approve else State.rejected
                now = self.clock()
                if checked is not None and checked[2] != row.action_hash:
                    values.update(action_json=checked[1], action_hash=checked[2], revision=row.revision + 1)
                values.update(
                    state=new_state.value, decided_at=now, decided_by=reviewer.subject, decided_via=reviewer.via,
                    decided_ip=reviewer.ip, reason=reason, updated_at=now, version=row.version + 1,
                    next_reminder_at=None,
                )
                event = dict(details or {})
                if chosen is not None:
                    text, model, by_reviewer = chosen
                    values.update(released_answer=text, released_answer_from=model)
                    event["released_answer"] = _answer_details(text, model, by_reviewer)
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
                    assert checked is not None
                    await conn.execute(
                        revisions_table.insert().values(
                            approval_id=approval_id, revision=values["revision"],
                            action_json=redact_action(values["action_json"], self.redactor),
                            action_hash=values["action_hash"], created_at=now, created_by=reviewer.subject,
                        )
                    )
                    await self._audit(
                        conn, approval_id, "edited", State.pending, State.pending, actor=reviewer.subject, via=reviewer.via,
                        ip=reviewer.ip, ua=reviewer.user_agent, reason=reason,
                        details={"from_hash": row.action_hash, "to_hash": values["action_hash"], "revision": values["revision"],
                                 "re_evaluated": checked[3]},
                    )
                await self._audit(
                    conn, approval_id, new_state.value, State.pending, new_state, actor=reviewer.subject, via=reviewer.via,
                    ip=reviewer.ip, ua=reviewer.user_agent, reason=reason, details=event or None,
                )
                decided = await self._row(conn, approval_id)
                await self.composer.on_terminal(conn, decided)
            self._wake(approval_id)
            self.kick_delivery()
            log.info("approval %s %s by %s via %s", approval_id, new_state.value, reviewer.subject, reviewer.via)
            return self.view(decided)
        raise ApprovalConflict(f"approval {approval_id} is changing too fast; retry")

    async def _reevaluate(self, row: Any, reviewer: Reviewer, new_view: dict[str, Any]) -> str:
        """The serving policy's effect on an edited revision; refuses (audited) one it would deny.

        The original decision's signal values go with it when the text is unchanged (they are
        the evidence the reviewer saw); an edited text has its signals computed afresh.
        """
        if self.evaluate is None:
            why = "an edited action must be evaluated again, and this service has no policy to re-evaluate it"
            await self._refuse(row, reviewer, why)
            raise ApprovalInvalid(f"{why}: approve the action as held, or reject it")
        data = dict(new_view)
        signals = (row.decision_json or {}).get("signals") or {}
        if signals and data.get("text") == (row.action_json or {}).get("text"):
            data["signals"] = {k: v for k, v in signals.items()
                               if not (isinstance(v, str) and v.startswith("redacted:sha256:"))}
        try:
            decision = await self.evaluate(Action.model_validate(data))
        except (PolicyEngineError, ValueError, TypeError, KeyError) as exc:
            why = f"the edited action could not be evaluated against the policy: {exc}"
            await self._refuse(row, reviewer, why[:1000])
            raise ApprovalInvalid(why)
        if decision.effect == "deny":
            rules = redact_rules(self.redactor, [r.model_dump(mode="json") for r in decision.rules]) if self.redactor \
                else [r.model_dump(mode="json") for r in decision.rules]
            named = []
            for hit in rules:
                if hit.get("effect") != "deny":
                    continue
                span = hit.get("span") or {}
                where = f" ({span['file']}:{span['line']})" if span.get("file") else ""
                because = f" because {'; '.join(hit['because'])}" if hit.get("because") else ""
                named.append(f"`{hit.get('source') or hit.get('rule_id')}`{where}{because}")
            if not named and decision.default_applied:
                named.append("no rule allows it (default deny)")
            why = "the edited action is denied by the policy: " + ("; ".join(named) or "deny")
            await self._refuse(row, reviewer, why[:1000])
            raise ApprovalInvalid(why)
        return decision.effect

    async def cancel(
        self, approval_id: str, principal: Any, *, reason: str | None = None, ip: str | None = None,
        user_agent: str | None = None,
    ) -> ApprovalView:
        """The requester withdraws a pending approval.

        Only the API key that created it (its `requester_key_id`) or an admin key of the same
        tenant may cancel: another key of the tenant gets `ApprovalForbidden` (403, audited),
        another tenant `ApprovalNotFound` (404). A decided approval raises `ApprovalConflict`.
        """
        tenant = getattr(principal, "tenant", None)
        key_id = getattr(principal, "key_id", None)
        subject = str(getattr(principal, "subject", None) or key_id or "unknown")
        roles = set(getattr(principal, "roles", None) or ())
        async with self.engine.connect() as conn:
            row = await self._row(conn, approval_id)
        if row.tenant != tenant:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        if "admin" not in roles and (key_id is None or key_id != row.requester_key_id):
            why = "only the requester (the API key that created this approval) or an admin may cancel it"
            await self._refuse(row, Reviewer(subject=subject, tenant=tenant, key_id=key_id, via=Via.api.value, ip=ip,
                                             user_agent=user_agent), why)
            raise ApprovalForbidden(why)
        async with self.engine.begin() as conn:
            now = self.clock()
            res = await conn.execute(
                approvals_table.update()
                .where(approvals_table.c.id == approval_id, approvals_table.c.state == State.pending.value)
                .values(state=State.cancelled.value, decided_at=now, decided_by=subject, decided_via=Via.api.value,
                        decided_ip=ip, reason=reason, updated_at=now, version=approvals_table.c.version + 1,
                        next_reminder_at=None)
            )
            if res.rowcount != 1:
                current = await self._row(conn, approval_id)
                raise ApprovalConflict(f"approval {approval_id} was already {current.state}")
            await self._audit(conn, approval_id, "cancelled", State.pending, State.cancelled, actor=subject, via=Via.api,
                              ip=ip, ua=user_agent, reason=reason,
                              details={"key_id": key_id, "admin": key_id != row.requester_key_id})
            decided = await self._row(conn, approval_id)
            await self.composer.on_terminal(conn, decided)
        self._wake(approval_id)
        self.kick_delivery()
        return self.view(decided, for_key=key_id)

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
        user_agent: str | None = None, reviewer: str | None = None, reviewer_signature: str | None = None,
        answer_from: str | None = None, answer: str | None = None,
    ) -> ApprovalView:
        """POST from the review page: signature, expiry, single use, then `decide` (with the
        reviewer's choice of answer, `answer_from` / `answer`, for an approval holding answers).

        The decision is recorded as the link's addressee (`email:<address>`, `teams:<name>`).
        A webhook link is addressed to a system, not a person: a decision through it must
        name the person in `reviewer`, vouched for by `reviewer_signature`
        (`signing.sign_reviewer(token, reviewer, POLICYENGINE_APPROVALS_WEBHOOK_SECRET)`),
        and is recorded as `webhook:<reviewer>`; without it the decision is refused
        (`ApprovalInvalid`), with a bad signature too (`ApprovalForbidden`). Other links
        ignore `reviewer`.
        """
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
        subject, aliases = claims.recipient, frozenset({claims.recipient.split(":", 1)[-1]})
        if claims.recipient.startswith("webhook:"):
            via = Via.webhook
            person = self._vouched_person(token, reviewer, reviewer_signature)
            if isinstance(person, ApprovalError):
                await self._refuse(current, Reviewer(subject=claims.recipient, via=via.value, ip=ip, user_agent=user_agent),
                                   person.message)
                raise person
            subject, aliases = f"webhook:{person}", frozenset({person})
        who = Reviewer(subject=subject, via=via.value, ip=ip, user_agent=user_agent, vouched_by_channel=True,
                       aliases=aliases)
        return await self.decide(claims.approval_id, who, approve=approve, reason=reason, link_nonce=claims.nonce,
                                 details={"link_recipient": claims.recipient}, answer_from=answer_from, answer=answer)

    def _vouched_person(self, token: str, reviewer: str | None, signature: str | None) -> str | ApprovalError:
        """The reviewer a webhook receiver vouches for, or the error refusing the attempt."""
        if not reviewer or not reviewer.strip():
            return ApprovalInvalid(
                "a decision through a webhook link must name the reviewer: send `reviewer` and `reviewer_signature` "
                "(HMAC of the link token and the reviewer with POLICYENGINE_APPROVALS_WEBHOOK_SECRET)")
        person = reviewer.strip()
        if len(person) > MAX_REVIEWER_ID or any(ord(c) < 32 for c in person):
            return ApprovalInvalid(f"reviewer must be at most {MAX_REVIEWER_ID} printable characters")
        secret = self.settings.webhook_secret
        if secret is None:
            return ApprovalInvalid("decisions through webhook links need POLICYENGINE_APPROVALS_WEBHOOK_SECRET "
                                   "(it signs the reviewer's identity)")
        try:
            verify_reviewer(token, reviewer, signature, secret.get_secret_value(),  # as signed, unstripped
                            tolerance_s=self.settings.callback_tolerance_s)
        except SignatureError as e:
            return ApprovalForbidden(f"the reviewer's identity is not vouched for: bad signature ({e})")
        return person

    async def decide_from_slack(
        self, approval_id: str, *, user_id: str, user_names: Sequence[str | None], approve: bool, reason: str | None,
        channel_id: str | None, message_ts: str | None = None, ip: str | None = None,
        answer_from: str | None = None,
    ) -> ApprovalView:
        """A verified Slack button click, bound to a message actually posted for this approval
        ("Approve A" / "Approve B" name the model whose answer is released: `answer_from`).

        The click's channel id and message ts must be those recorded when a message of this
        approval was delivered (`chat.postMessage`'s answer, in the outbox); otherwise the
        click is refused (`ApprovalForbidden`, audited): it cannot decide an approval of
        another tenant, or one whose message was never posted.
        """
        async with self.engine.connect() as conn:
            row = await self._row(conn, approval_id)
            posted = (await conn.execute(
                sa.select(outbox_table.c.result).where(outbox_table.c.approval_id == approval_id,
                                                       outbox_table.c.kind == "slack",
                                                       outbox_table.c.state == "delivered")
            )).all()
        messages = {((p.result or {}).get("channel"), (p.result or {}).get("ts")) for p in posted}
        if not channel_id or not message_ts or (channel_id, message_ts) not in messages:
            reviewer = Reviewer(subject=f"slack:{user_id}", via=Via.slack.value, ip=ip)
            await self._refuse(row, reviewer, "the Slack click is not on a message posted for this approval")
            raise ApprovalForbidden("this Slack message was not posted for this approval")
        allowed = [self.settings.slack_reviewers[g] for g in (row.groups or []) if g in self.settings.slack_reviewers]
        if allowed and not any(user_id in ids for ids in allowed):
            await self._refuse(row, Reviewer(subject=f"slack:{user_id}", via="slack", ip=ip),
                               f"Slack user is not a reviewer of group {', '.join(row.groups)}")
            raise ApprovalForbidden(f"you are not a reviewer of group {', '.join(row.groups)}")
        reviewer = Reviewer(
            subject=f"slack:{user_id}", via=Via.slack.value, ip=ip, vouched_by_channel=True,
            aliases=frozenset(n for n in user_names if n),
        )
        return await self.decide(approval_id, reviewer, approve=approve, reason=reason,
                                 details={"slack_channel": channel_id, "slack_ts": message_ts}, answer_from=answer_from)

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
                tracing.event("policyengine.approval decided" if to_state.terminal else "policyengine.approval escalated",
                              lambda r=fresh: {"policyengine.approval.id": r.id, "policyengine.decision.id": r.decision_id,
                                               "policyengine.approval.state": r.state,
                                               "policyengine.approval.via": Via.timer.value,
                                               "policyengine.approval.groups": list(r.groups or [])})
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
                # the next reminder is due an interval after this one is recorded, and the event
                # carries that same instant: a sweep that stalled after choosing its rows cannot
                # leave the next one due before this one's time (two replicas never remind
                # closer than `remind_every_s`)
                at = self.clock()
                if not await self._update_pending(conn, approval_id, version, {
                    "next_reminder_at": at + timedelta(seconds=row.remind_every_s),
                    "reminders_sent": row.reminders_sent + 1, "version": version + 1, "updated_at": at,
                }):
                    continue
                await self._audit(conn, approval_id, "reminded", State.pending, State.pending, actor="system:timer", via=Via.timer,
                                  details={"reminder": row.reminders_sent + 1}, at=at)
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
        reason: str | None = None, details: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> None:
        if self.metrics is not None:
            self.metrics.transition(kind)
        # on the approval-event hash chain (verify-log checks it), in the caller's transaction
        await append_approval_event(
            conn, approval_id=approval_id, at=at or self.clock(), kind=kind,
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
