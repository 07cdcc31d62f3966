"""ApprovalService on a real SQLite database: lifecycle, authorisation, timers, revisions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from approvals.helpers import Principal, make_service, refund_action, refund_decision, reviewer
from policyengine.approvals.errors import (
    ApprovalConflict,
    ApprovalForbidden,
    ApprovalInvalid,
    ApprovalNotFound,
)
from policyengine.approvals.hashing import action_hash
from policyengine.approvals.service import utcnow
from policyengine.approvals.states import State


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def svc(tmp_path):
    clock = Clock()

    async def still_held(action):  # the policy serving, for edited revisions: holds every refund
        return refund_decision()

    service, db = await make_service(f"sqlite:///{tmp_path}/a.db", clock=clock, evaluate=still_held)
    service.test_clock = clock
    yield service
    await db.aclose()


async def test_hold_binds_the_exact_action(svc):
    action = refund_action()
    res = await svc.hold(action=action, decision=refund_decision(), principal=Principal("acme", "k1", "app"))
    assert res.state == State.pending and res.groups == ["refunds"]
    assert res.action_hash == action_hash(action)
    view = await svc.get(res.approval_id)
    assert view.action["fields"] == {"amount": "150 GBP", "order": "A-1001"}
    assert view.reasons[0].because == ["amount 150 GBP > 100 GBP"]
    assert view.timeout_at is not None and not view.released


async def test_hold_refuses_an_allow_decision(svc):
    d = refund_decision().model_copy(update={"effect": "allow"})
    with pytest.raises(ApprovalInvalid):
        await svc.hold(action=refund_action(), decision=d)


async def test_approve_releases_and_later_decisions_conflict(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    view = await svc.decide(res.approval_id, reviewer(), approve=True, reason="ok")
    assert view.state == State.approved and view.released and view.decided_by == "rita"
    with pytest.raises(ApprovalConflict):
        await svc.decide(res.approval_id, reviewer("sam"), approve=False, reason="no")
    trail = await svc.audit_trail(res.approval_id)
    assert [e.kind for e in trail] == ["created", "approved", "refused"]
    assert trail[1].actor == "rita" and trail[1].via == "api"


async def test_reject_needs_a_reason(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    with pytest.raises(ApprovalInvalid, match="reason is required"):
        await svc.decide(res.approval_id, reviewer(), approve=False, reason="  ")
    view = await svc.decide(res.approval_id, reviewer(), approve=False, reason="customer already refunded")
    assert view.state == State.rejected and not view.released


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (reviewer(groups=("legal",)), "group refunds"),
        (reviewer("support-bot"), "own action"),  # the requesting key's subject
        (reviewer(roles=("viewer",)), "roles"),
    ],
)
async def test_wrong_reviewers_are_refused_and_audited(svc, who, message):
    res = await svc.hold(action=refund_action(), decision=refund_decision(),
                         principal=Principal("acme", "k-app", "support-bot", roles=["app"]))
    with pytest.raises(ApprovalForbidden, match=message):
        await svc.decide(res.approval_id, who, approve=True)
    assert (await svc.get(res.approval_id)).state == State.pending
    trail = await svc.audit_trail(res.approval_id)
    assert trail[-1].kind == "refused" and message.split()[0] in (trail[-1].reason or "")


async def test_other_tenant_reviewer_sees_not_found_and_is_audited(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    with pytest.raises(ApprovalNotFound):
        await svc.decide(res.approval_id, reviewer(tenant="globex"), approve=True)
    trail = await svc.audit_trail(res.approval_id)
    assert trail[-1].kind == "refused" and "another tenant" in (trail[-1].reason or "")


async def test_requester_principal_cannot_self_approve(svc):
    res = await svc.hold(action=refund_action(actor=None), decision=refund_decision(),
                         principal=Principal("acme", "k1", "bob"))
    with pytest.raises(ApprovalForbidden, match="own action"):
        await svc.decide(res.approval_id, reviewer("bob"), approve=True)


async def test_edit_and_approve_records_a_new_revision(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    view = await svc.decide(res.approval_id, reviewer(), approve=True, reason="partial",
                            edited_action={"fields": {"amount": "90 GBP", "order": "A-1001"}})
    assert view.revision == 2 and view.edited
    assert view.original_action_hash == res.action_hash != view.action_hash
    assert view.action["fields"]["amount"] == "90 GBP"
    assert [e.kind for e in await svc.audit_trail(res.approval_id)] == ["created", "edited", "approved"]
    with pytest.raises(ApprovalInvalid):
        res2 = await svc.hold(action=refund_action(), decision=refund_decision())
        await svc.decide(res2.approval_id, reviewer(), approve=True, edited_action={"action": "delete_account"})


async def test_list_only_shows_the_reviewers_tenant_and_groups(svc):
    a = await svc.hold(action=refund_action(), decision=refund_decision())
    await svc.hold(action=refund_action(tenant="globex"), decision=refund_decision())
    await svc.hold(action=refund_action(), decision=refund_decision(group="legal"))
    ids = [v.id for v in await svc.list_for(reviewer())]
    assert ids == [a.approval_id]


async def test_timeout_deny_fires_once(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision(timeout_s=60, remind_s=None))
    assert await svc.sweep_timeouts() == 0
    svc.test_clock.advance(61)
    assert await svc.sweep_timeouts() == 1
    assert await svc.sweep_timeouts() == 0
    view = await svc.get(res.approval_id)
    assert view.state == State.expired and view.decided_by == "system:timeout"


async def test_timeout_approve_and_escalate(svc):
    a = await svc.hold(action=refund_action(), decision=refund_decision(timeout_s=60, remind_s=None, on_timeout="approve"))
    e = await svc.hold(action=refund_action(), decision=refund_decision(timeout_s=60, remind_s=None, on_timeout="escalate",
                                                                          escalate_to="finance-leads"))
    svc.test_clock.advance(61)
    assert await svc.sweep_timeouts() == 2
    assert (await svc.get(a.approval_id)).state == State.approved
    esc = await svc.get(e.approval_id)
    assert esc.state == State.pending and esc.groups == ["finance-leads"] and esc.escalations == 1
    with pytest.raises(ApprovalForbidden):
        await svc.decide(e.approval_id, reviewer(), approve=True)
    await svc.decide(e.approval_id, reviewer("fiona", groups=("finance-leads",)), approve=True)
    svc.test_clock.advance(61)
    assert await svc.sweep_timeouts() == 0


async def test_reminders_at_the_interval(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision(remind_s=3600, timeout_s=None))
    svc.test_clock.advance(3599)
    assert await svc.sweep_reminders() == 0
    svc.test_clock.advance(2)
    assert await svc.sweep_reminders() == 1
    assert await svc.sweep_reminders() == 0
    svc.test_clock.advance(3600)
    assert await svc.sweep_reminders() == 1
    assert (await svc.get(res.approval_id)).reminders_sent == 2


async def test_long_poll_wakes_on_decision(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    waiter = asyncio.create_task(svc.wait(res.approval_id, 30))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await svc.decide(res.approval_id, reviewer(), approve=True)
    view = await asyncio.wait_for(waiter, 10)
    assert view.state == State.approved
    short = await svc.wait((await svc.hold(action=refund_action(), decision=refund_decision())).approval_id, 0)
    assert short.state == State.pending


async def test_other_tenant_sees_not_found(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    with pytest.raises(ApprovalNotFound):
        await svc.get(res.approval_id, tenant="globex")


async def test_retried_hold_with_the_same_request_id_returns_the_same_approval(svc):
    first = await svc.hold(action=refund_action(), decision=refund_decision(), request_id="req-1")
    again = await svc.hold(action=refund_action(), decision=refund_decision(), request_id="req-1")
    assert again.approval_id == first.approval_id and first.created and not again.created
    with pytest.raises(ApprovalConflict, match="different action"):
        await svc.hold(action=refund_action(amount="999 GBP"), decision=refund_decision(), request_id="req-1")
    other_tenant = await svc.hold(action=refund_action(tenant="globex"), decision=refund_decision(), request_id="req-1")
    assert other_tenant.approval_id != first.approval_id


def test_without_a_link_secret_the_plugin_uses_a_random_one(monkeypatch):
    from pydantic import SecretStr

    from policyengine.approvals.plugin import load_settings

    monkeypatch.delenv("POLICYENGINE_APPROVALS_LINK_SECRET", raising=False)
    s = load_settings()
    assert isinstance(s.link_secret, SecretStr) and len(s.require_link_secret()) >= 32
    assert "*" not in repr(s.link_secret.get_secret_value()) and "**********" in repr(s)


async def test_escalation_moves_to_the_groups_channels_and_voids_old_links(tmp_path):
    from policyengine.approvals.errors import LinkRefused
    from policyengine.types import Channel

    clock = Clock()
    svc, db = await make_service(
        f"sqlite:///{tmp_path}/e.db", clock=clock,
        group_channels={"finance-leads": [{"kind": "email", "target": "leads@example.com"}]},
    )
    try:
        res = await svc.hold(action=refund_action(), decision=refund_decision(
            [Channel(kind="email", target="refunds@example.com")], timeout_s=60, remind_s=None,
            on_timeout="escalate", escalate_to="finance-leads"))
        old_link = svc.issue_link(res.approval_id, "email:refunds@example.com", 1, 0).rsplit("/", 1)[1]
        clock.advance(61)
        assert await svc.sweep_timeouts() == 1
        async with db.engine.connect() as conn:
            import sqlalchemy as sa
            targets = [r[0] for r in (await conn.execute(sa.text(
                "select target from notification_outbox where purpose='escalated'"))).all()]
        assert targets == ["leads@example.com"]
        with pytest.raises(LinkRefused, match="escalated"):
            await svc.decide_with_link(old_link, approve=True, reason=None)
        new_link = svc.issue_link(res.approval_id, "email:leads@example.com", 1, 1).rsplit("/", 1)[1]
        assert (await svc.decide_with_link(new_link, approve=True, reason=None)).state == State.approved
    finally:
        await db.aclose()


async def test_callbacks_only_to_allowed_hosts_and_per_key_default(tmp_path):
    svc, db = await make_service(f"sqlite:///{tmp_path}/c.db", callback_allowed_hosts=["*.example.com"])
    try:
        with pytest.raises(ApprovalInvalid, match=r"not in|metadata"):
            await svc.hold(action=refund_action(), decision=refund_decision(), callback_url="http://169.254.169.254/x")
        with pytest.raises(ApprovalInvalid, match="http"):
            await svc.hold(action=refund_action(), decision=refund_decision(), callback_url="file:///etc/passwd")
        p = Principal("acme", "k1", "app")
        p.attributes = {"callback_url": "https://hooks.example.com/pe"}
        res = await svc.hold(action=refund_action(), decision=refund_decision(), principal=p)
        async with db.engine.connect() as conn:
            import sqlalchemy as sa
            url = (await conn.execute(sa.text("select callback_url from approvals where id=:i"), {"i": res.approval_id})).scalar()
        assert url == "https://hooks.example.com/pe"
    finally:
        await db.aclose()


async def test_callbacks_are_refused_when_they_could_not_be_signed(tmp_path):
    svc, db = await make_service(f"sqlite:///{tmp_path}/u.db", callback_secret=None)
    try:
        with pytest.raises(ApprovalInvalid, match="CALLBACK_SECRET"):
            await svc.hold(action=refund_action(), decision=refund_decision(),
                           callback_url="https://hooks.example.com/pe")
        # without a callback the action is still held (the app polls instead)
        res = await svc.hold(action=refund_action(), decision=refund_decision())
        assert res.state == "pending"
    finally:
        await db.aclose()


def test_migration_matches_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import policyengine.store.approvals_models  # noqa: F401
    from policyengine.store import upgrade
    from policyengine.store.base import Base
    from policyengine.store.db import make_sync_engine

    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    engine = make_sync_engine(url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    mine = [d for d in diffs if "approval" in str(d) or "notification_outbox" in str(d)]
    assert mine == []


async def test_rules_without_channels_use_the_default_channels_and_emails_are_per_address(tmp_path):
    from policyengine.types import Channel

    svc, db = await make_service(
        f"sqlite:///{tmp_path}/dc.db", default_group="duty", default_channels=[{"kind": "email", "target": "duty@example.com"}])
    try:
        bare = refund_decision().model_copy(update={"effect": "escalate", "obligations": []})
        res = await svc.hold(action=refund_action(), decision=bare)
        assert res.groups == ["duty"]
        two = await svc.hold(action=refund_action(), decision=refund_decision(
            [Channel(kind="email", target="a@example.com, b@example.com")]))
        async with db.engine.connect() as conn:
            import sqlalchemy as sa
            rows = (await conn.execute(sa.text("select approval_id, target from notification_outbox order by target"))).all()
        assert [(r[0] == res.approval_id, r[1]) for r in rows] == [
            (False, "a@example.com"), (False, "b@example.com"), (True, "duty@example.com")]
        assert two.approval_id
    finally:
        await db.aclose()


async def test_malformed_answers_are_refused(svc):
    with pytest.raises(ApprovalInvalid, match="answers"):
        await svc.hold(action=refund_action(), decision=refund_decision(), answers=["not", "a", "dict"])
