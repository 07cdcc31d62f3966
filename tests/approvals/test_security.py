"""Security issue #15 (and #8, #2/#4): who may do what to an approval, and what is stored.

Each test here failed before its fix:

1. an edited revision is evaluated again; one the policy denies cannot be approved (422);
2. only the requesting key (or an admin) cancels;
3. self-approval is judged on the authenticated identity (key, subject), not on `actor` text;
4. a Slack click must match a message actually delivered for that approval;
5. a decision through a webhook link records the person the receiver vouches for;
6. redacted fields never reach `because`, the approvals rows or the outbox;
7. the approvals JSON body and the Slack body are read with a limit (413, no buffering).
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from approvals.helpers import Principal, make_service, refund_action, reviewer
from policyengine.approvals.errors import ApprovalForbidden, ApprovalInvalid
from policyengine.approvals.models import Reviewer
from policyengine.approvals.states import State
from policyengine.dsl import compile_sources
from policyengine.types import Action, Channel

POLICY = """\
policy "sec" version 1

require approval for refund when amount > 100 GBP {
  reviewers group "refunds"    notify email "refunds@example.com"
  timeout 8h -> deny
}
deny refund when amount > 1000 GBP
authorize refund
"""


@pytest.fixture(scope="module")
def policy() -> Any:
    return compile_sources({"sec.policy": POLICY})


def evaluator(policy: Any) -> Any:
    async def evaluate(action: Action) -> Any:
        return policy.evaluate(action)

    return evaluate


def with_channels(decision: Any, *channels: Channel) -> Any:
    obligations = [ob.model_copy(update={"channels": list(channels)}) for ob in decision.obligations]
    return decision.model_copy(update={"obligations": obligations})


class FakeDispatcher:
    """Delivers everything; Slack posts answer like chat.postMessage (channel id + ts)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.slack_down = False

    async def send(self, kind: str, target: str, payload: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        from policyengine.notifier.errors import DeliveryError

        if self.slack_down and kind == "slack":
            raise DeliveryError("slack chat.postMessage: channel_not_found", retriable=False)
        self.sent.append((kind, target, payload))
        if kind in ("slack", "slack_update"):
            return {"channel": "C0REFUNDS", "ts": "1700000000.000100"}
        return {"status": 200}


# ------------------------------------------------------------------ 1. edits are re-evaluated


async def test_an_edited_revision_the_policy_denies_cannot_be_approved(tmp_path, policy):
    svc, db = await make_service(f"sqlite:///{tmp_path}/e.db", evaluate=evaluator(policy))
    try:
        action = refund_action("150 GBP")
        decision = policy.evaluate(action)
        assert decision.effect == "require_approval"
        res = await svc.hold(action=action, decision=decision, principal=Principal("acme", "k-app", "support-bot"))
        with pytest.raises(ApprovalInvalid, match=r"deny refund when amount > 1000 GBP") as exc:
            await svc.decide(res.approval_id, reviewer(), approve=True, reason="sure",
                             edited_action={"fields": {"amount": "50000 GBP", "order": "A-1001"}})
        assert exc.value.status_code == 422 and "sec.policy:7" in exc.value.message
        view = await svc.get(res.approval_id)
        assert view.state == State.pending and view.revision == 1 and view.action["fields"]["amount"] == "150 GBP"
        trail = await svc.audit_trail(res.approval_id)
        assert trail[-1].kind == "refused" and "denied" in (trail[-1].reason or "")

        # still held by the policy: fine; the re-evaluation is recorded with the edit
        ok = await svc.decide(res.approval_id, reviewer(), approve=True, reason="partial",
                              edited_action={"fields": {"amount": "500 GBP", "order": "A-1001"}})
        assert ok.state == State.approved and ok.revision == 2 and ok.action["fields"]["amount"] == "500 GBP"
        edited = next(e for e in await svc.audit_trail(res.approval_id) if e.kind == "edited")
        assert (edited.details or {}).get("re_evaluated") == "require_approval"

        # plainly allowed by the policy: fine too
        res2 = await svc.hold(action=action, decision=decision, principal=Principal("acme", "k-app", "support-bot"))
        small = await svc.decide(res2.approval_id, reviewer(), approve=True,
                                 edited_action={"fields": {"amount": "40 GBP", "order": "A-1001"}})
        assert small.state == State.approved and small.action["fields"]["amount"] == "40 GBP"
    finally:
        await db.aclose()


async def test_without_the_policy_an_edit_is_refused_not_released(tmp_path, policy):
    svc, db = await make_service(f"sqlite:///{tmp_path}/n.db")
    try:
        action = refund_action("150 GBP")
        res = await svc.hold(action=action, decision=policy.evaluate(action))
        with pytest.raises(ApprovalInvalid, match="re-evaluate"):
            await svc.decide(res.approval_id, reviewer(), approve=True,
                             edited_action={"fields": {"amount": "50000 GBP"}})
        assert (await svc.get(res.approval_id)).state == State.pending
        # approving the revision as held needs no re-evaluation
        assert (await svc.decide(res.approval_id, reviewer(), approve=True)).state == State.approved
    finally:
        await db.aclose()


# ------------------------------------------------------------------ 2. cancel: requester or admin


async def test_only_the_requesting_key_or_an_admin_cancels(tmp_path, policy):
    svc, db = await make_service(f"sqlite:///{tmp_path}/c.db")
    try:
        action = refund_action()
        requester = Principal("acme", "k-app-1", "support-bot", roles=["app"])
        other_app = Principal("acme", "k-app-2", "billing-bot", roles=["app"])
        admin = Principal("acme", "k-admin", "ops", roles=["admin"])
        a = await svc.hold(action=action, decision=policy.evaluate(action), principal=requester)
        with pytest.raises(ApprovalForbidden, match="requester"):
            await svc.cancel(a.approval_id, other_app, reason="not mine")
        assert (await svc.get(a.approval_id)).state == State.pending
        assert (await svc.audit_trail(a.approval_id))[-1].kind == "refused"
        done = await svc.cancel(a.approval_id, requester, reason="withdrawn")
        assert done.state == State.cancelled and done.decided_by == "support-bot"
        b = await svc.hold(action=action, decision=policy.evaluate(action), principal=requester)
        assert (await svc.cancel(b.approval_id, admin)).state == State.cancelled
    finally:
        await db.aclose()


# ------------------------------------------------------------------ 3. self-approval


async def test_self_approval_is_judged_on_the_authenticated_identity_not_the_actor_text(tmp_path, policy):
    svc, db = await make_service(f"sqlite:///{tmp_path}/s.db")
    try:
        # alice asks with her own key (subject "alice@acme"), naming someone else as the actor
        alice_key = Principal("acme", "k-alice-app", "alice@acme", roles=["app", "reviewer"], groups=["refunds"])
        action = refund_action(actor="agent-7")
        res = await svc.hold(action=action, decision=policy.evaluate(action), principal=alice_key)
        for who in (reviewer("alice", key_id="k-alice-reviewer"),            # a variant of her subject
                    reviewer("ALICE@acme", key_id="k-other"),               # case
                    reviewer("someone-else", key_id="k-alice-app"),          # the very key
                    Reviewer(subject="slack:U0ALICE", via="slack", vouched_by_channel=True,
                             aliases=frozenset({"alice"}))):                 # her Slack username
            with pytest.raises(ApprovalForbidden, match="own action"):
                await svc.decide(res.approval_id, who, approve=True)
        assert (await svc.get(res.approval_id)).state == State.pending

        # the actor string is context only: it neither makes rita the requester nor hides alice
        named = refund_action(actor="rita")
        res2 = await svc.hold(action=named, decision=policy.evaluate(named),
                              principal=Principal("acme", "k-app", "support-bot", roles=["app"]))
        assert (await svc.decide(res2.approval_id, reviewer("rita"), approve=True)).state == State.approved
    finally:
        await db.aclose()


# ------------------------------------------------------------------ 4. Slack decisions are bound to a delivered message


async def test_a_slack_click_must_match_a_delivered_message_of_that_approval(tmp_path, policy):
    dispatcher = FakeDispatcher()
    svc, db = await make_service(f"sqlite:///{tmp_path}/sl.db", dispatcher=dispatcher)
    try:
        action = refund_action()
        decision = with_channels(policy.evaluate(action), Channel(kind="slack", target="#refunds"))
        posted = await svc.hold(action=action, decision=decision, principal=Principal("acme", "k", "support-bot"))
        await svc.drain()
        await svc.deliver_due()
        assert any(k == "slack" for k, _, _ in dispatcher.sent)
        # another tenant's approval whose Slack message could not be posted
        dispatcher.slack_down = True
        unposted = await svc.hold(action=refund_action(tenant="globex"), decision=decision,
                                  principal=Principal("globex", "k2", "globex-bot"))
        await svc.drain()
        await svc.deliver_due()
        async with db.engine.connect() as conn:
            states = (await conn.execute(sa.text("select state from notification_outbox where approval_id=:a"),
                                         {"a": unposted.approval_id})).scalars().all()
        assert states == ["dead"]

        async def click(approval_id: str, channel: str | None, ts: str | None) -> Any:
            return await svc.decide_from_slack(approval_id, user_id="U0RITA", user_names=["rita"], approve=True,
                                               reason=None, channel_id=channel, message_ts=ts)

        # no channel, no message: another tenant's approval that was never posted is not decided
        with pytest.raises(ApprovalForbidden, match="Slack"):
            await click(unposted.approval_id, None, None)
        with pytest.raises(ApprovalForbidden, match="Slack"):
            await click(unposted.approval_id, "C0REFUNDS", "1700000000.000100")
        # the right approval, but not the message it was posted as
        with pytest.raises(ApprovalForbidden, match="Slack"):
            await click(posted.approval_id, None, None)
        with pytest.raises(ApprovalForbidden, match="Slack"):
            await click(posted.approval_id, "C0OTHER", "1700000000.000100")
        with pytest.raises(ApprovalForbidden, match="Slack"):
            await click(posted.approval_id, "C0REFUNDS", "1.0")
        assert (await svc.get(unposted.approval_id)).state == State.pending
        ok = await click(posted.approval_id, "C0REFUNDS", "1700000000.000100")
        assert ok.state == State.approved and ok.decided_by == "slack:U0RITA"
    finally:
        await db.aclose()


# ------------------------------------------------------------------ 5. webhook links record a person


async def test_a_webhook_link_decision_records_the_person_the_receiver_signs_for(tmp_path, policy):
    from policyengine.approvals.signing import sign_reviewer

    secret = "webhook-secret-0123456789abcdef"
    svc, db = await make_service(f"sqlite:///{tmp_path}/w.db", webhook_secret=secret)
    try:
        action = refund_action()
        decision = with_channels(policy.evaluate(action), Channel(kind="webhook", target="https://hooks.example.com/pe"))
        res = await svc.hold(action=action, decision=decision, principal=Principal("acme", "k", "support-bot"))
        link = svc.issue_link(res.approval_id, "webhook:https://hooks.example.com/pe").rsplit("/", 1)[1]
        # the channel alone is not a person: refused
        with pytest.raises(ApprovalInvalid, match="reviewer"):
            await svc.decide_with_link(link, approve=True, reason=None)
        # an identity that is not signed with the webhook secret: refused
        forged = sign_reviewer(link, "mallory@acme.example", "not-the-secret-0123456789")
        with pytest.raises(ApprovalForbidden, match="signature"):
            await svc.decide_with_link(link, approve=True, reason=None, reviewer="mallory@acme.example",
                                       reviewer_signature=forged)
        # a signature for one identity does not vouch for another
        with pytest.raises(ApprovalForbidden, match="signature"):
            await svc.decide_with_link(link, approve=True, reason=None, reviewer="boss@acme.example",
                                       reviewer_signature=sign_reviewer(link, "carol@acme.example", secret))
        # the requester cannot vouch for themself through the webhook either
        with pytest.raises(ApprovalForbidden, match="own action"):
            await svc.decide_with_link(link, approve=True, reason=None, reviewer="support-bot",
                                       reviewer_signature=sign_reviewer(link, "support-bot", secret))
        view = await svc.decide_with_link(link, approve=True, reason="ok", reviewer="carol@acme.example",
                                          reviewer_signature=sign_reviewer(link, "carol@acme.example", secret))
        assert view.state == State.approved and view.decided_by == "webhook:carol@acme.example"
        assert view.decided_via == "webhook"
        approved = next(e for e in await svc.audit_trail(res.approval_id) if e.kind == "approved")
        assert approved.actor == "webhook:carol@acme.example"
        assert (approved.details or {}).get("link_recipient") == "webhook:https://hooks.example.com/pe"
    finally:
        await db.aclose()


# ------------------------------------------------------------------ 6. redaction


async def test_redacted_fields_never_reach_the_approval_rows_outbox_or_views(tmp_path, policy):
    from policyengine.store.redaction import Redactor

    dispatcher = FakeDispatcher()
    svc, db = await make_service(f"sqlite:///{tmp_path}/r.db", dispatcher=dispatcher, redactor=Redactor(["amount"]),
                                 evaluate=evaluator(policy))
    try:
        action = refund_action("737.37 GBP")
        decision = policy.evaluate(action)
        assert decision.rules[0].because == ["amount 737.37 GBP > 100 GBP"]  # what the evaluator explains
        res = await svc.hold(action=action, decision=decision, principal=Principal("acme", "k-app", "support-bot"),
                             callback_url="https://app.example.com/hook")
        await svc.drain()
        await svc.deliver_due()

        async def stored() -> str:
            async with db.engine.connect() as conn:
                out = []
                for table in ("approvals", "notification_outbox", "approval_events", "approval_revisions"):
                    rows = (await conn.execute(sa.text(f"select * from {table}"))).all()
                    out.append(json.dumps([list(r) for r in rows], default=str))
            return "\n".join(out)

        def leaks(text: str) -> bool:
            return "737.37" in text

        # the approvals row keeps the exact action (it is what will be released) and nothing else does
        async with db.engine.connect() as conn:
            row = (await conn.execute(sa.text("select decision_json from approvals"))).scalar()
        decision_json = json.loads(row) if isinstance(row, str) else row
        assert not leaks(json.dumps(decision_json))
        assert decision_json["rules"][0]["because"] == ["amount (redacted)"]
        sent = json.dumps([p for _, _, p in dispatcher.sent])
        assert dispatcher.sent and not leaks(sent)
        stored_text = await stored()
        assert stored_text.count("737.37 GBP") == 1  # approvals.action_json, the held action itself

        reviewer_view = await svc.get(res.approval_id)
        assert not leaks(reviewer_view.model_dump_json())
        assert reviewer_view.action["fields"]["amount"].startswith("redacted:sha256:")
        requester_view = await svc.get(res.approval_id, reveal=True)
        assert requester_view.action["fields"]["amount"] == "737.37 GBP"

        # a reviewer who edits sends back the digest they saw for a field they did not change
        edit = {"fields": {**reviewer_view.action["fields"], "order": "A-1002"}}
        done = await svc.decide(res.approval_id, reviewer(), approve=True, reason="other order", edited_action=edit)
        assert not leaks(done.model_dump_json())
        await svc.drain()
        await svc.deliver_due()
        released = await svc.get(res.approval_id, reveal=True)
        assert released.action["fields"] == {"amount": "737.37 GBP", "order": "A-1002"}
        callback = [p for k, _, p in dispatcher.sent if k == "callback"]
        assert callback and callback[0]["action"]["fields"]["amount"] == "737.37 GBP"  # filled in when sent
        assert not leaks(json.dumps([p for k, _, p in dispatcher.sent if k != "callback"]))
        assert (await stored()).count("737.37 GBP") == 1
    finally:
        await db.aclose()


async def test_a_redacted_actor_is_hashed_in_the_approval_row_too(tmp_path, policy):
    from policyengine.store.redaction import Redactor

    svc, db = await make_service(f"sqlite:///{tmp_path}/ra.db", redactor=Redactor(["actor"]))
    try:
        action = refund_action(actor="customer-8812")
        res = await svc.hold(action=action, decision=policy.evaluate(action), principal=Principal("acme", "k", "bot"))
        async with db.engine.connect() as conn:
            texts = [json.dumps([list(r) for r in (await conn.execute(sa.text(f"select * from {t}"))).all()], default=str)
                     for t in ("approval_events", "approval_revisions", "notification_outbox")]
            actor = (await conn.execute(sa.text("select requester_actor from approvals"))).scalar()
        assert actor.startswith("redacted:sha256:") and not any("customer-8812" in t for t in texts)
        assert (await svc.get(res.approval_id)).actor == actor
        assert (await svc.get(res.approval_id, reveal=True)).action["actor"] == "customer-8812"
    finally:
        await db.aclose()


def test_the_decision_log_redacts_the_explanations_too(tmp_path):
    from policyengine.store.logger import DecisionLogger, LogEntry

    logger = DecisionLogger(f"sqlite:///{tmp_path}/log.db", redact=["amount", "fields.card.number"])
    decision = {
        "effect": "require_approval", "action": "refund",
        "rules": [
            {"rule_id": "p:3", "kind": "require_approval", "because": ["amount 737.37 GBP > 100 GBP"]},
            {"rule_id": "p:4", "kind": "deny", "because": ["card.number 4111111111111111 in [\"x\"]",
                                                           "not (amount > 1000 GBP)", "user.role admin == \"admin\""]},
        ],
    }
    entry = LogEntry(kind="evaluate", tenant="acme", decision=decision,
                     action={"action": "refund", "fields": {"amount": "737.37 GBP", "card": {"number": "4111111111111111"}}})
    record = logger.build_record(entry)
    text = json.dumps(record)
    assert "737.37" not in text and "4111111111111111" not in text
    assert record["rules"][0]["because"] == ["amount (redacted)"]
    assert record["rules"][1]["because"] == ["card.number (redacted)", "not (amount > 1000 GBP)",
                                             "user.role admin == \"admin\""]


# ------------------------------------------------------------------ 7. bounded bodies


def _asgi_app(svc: Any, limit: int) -> Any:
    from fastapi import FastAPI

    from policyengine.api.errors import install_error_handlers
    from policyengine.api.routes import approvals, integrations, review

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(approvals.router)
    app.include_router(integrations.router)
    app.include_router(review.router)
    app.state.runtime = SimpleNamespace(
        approvals=svc,
        settings=SimpleNamespace(max_body_bytes=limit, auth_disabled=True, dev_tenant="acme"),
    )
    return app


async def _post_endless(app: Any, path: str, *, total: int, chunk: int, content_type: str,
                        extra_headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, int, bytes]:
    """POST a chunked body of `total` bytes, produced lazily; -> (status, bytes the app pulled, body)."""
    pulled = 0
    sent = 0
    out: dict[str, Any] = {"status": None, "body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal pulled, sent
        if sent >= total:
            return {"type": "http.disconnect"}
        n = min(chunk, total - sent)
        sent += n
        pulled += n
        return {"type": "http.request", "body": b" " * n, "more_body": sent < total}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"content-type", content_type.encode()), (b"transfer-encoding", b"chunked"), *extra_headers],
        "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80), "app": app,
    }
    await app(scope, receive, send)
    return out["status"], pulled, out["body"]


GIB_QUARTER = 256 * 1024 * 1024


async def test_the_approvals_json_body_is_read_with_a_limit(tmp_path, policy):
    svc, db = await make_service(f"sqlite:///{tmp_path}/b.db")
    try:
        action = refund_action()
        res = await svc.hold(action=action, decision=policy.evaluate(action), principal=Principal("acme", "k", "bot"))
        app = _asgi_app(svc, limit=64 * 1024)
        status, pulled, body = await _post_endless(app, f"/v1/approvals/{res.approval_id}/approve", total=GIB_QUARTER,
                                                   chunk=64 * 1024, content_type="application/json")
        assert status == 413 and b"body_too_large" in body
        assert pulled <= 2 * 64 * 1024  # refused at the limit, not after reading 256 MiB
        assert (await svc.get(res.approval_id)).state == State.pending
    finally:
        await db.aclose()


async def test_the_slack_body_is_read_with_a_limit_before_the_signature_check(tmp_path):
    svc, db = await make_service(f"sqlite:///{tmp_path}/sb.db", slack_signing_secret="slack-secret-0123456789abcdef")
    try:
        app = _asgi_app(svc, limit=64 * 1024)
        ts = str(int(time.time())).encode()
        status, pulled, body = await _post_endless(
            app, "/v1/integrations/slack/interactivity", total=GIB_QUARTER, chunk=64 * 1024,
            content_type="application/x-www-form-urlencoded",
            extra_headers=[(b"x-slack-request-timestamp", ts), (b"x-slack-signature", b"v0=00")])
        assert status == 413 and b"body_too_large" in body
        assert pulled <= 2 * 64 * 1024
        declared = await _post_endless(
            app, "/v1/integrations/slack/interactivity", total=10, chunk=10,
            content_type="application/x-www-form-urlencoded", extra_headers=[(b"content-length", str(GIB_QUARTER).encode())])
        assert declared[0] == 413 and declared[1] == 0  # a declared length over the limit is refused unread
    finally:
        await db.aclose()


async def test_the_review_form_is_read_with_a_limit_and_carries_the_webhook_reviewer(tmp_path, policy):
    from urllib.parse import urlencode

    import httpx

    from policyengine.approvals.signing import sign_reviewer

    secret = "webhook-secret-0123456789abcdef"
    svc, db = await make_service(f"sqlite:///{tmp_path}/rf.db", webhook_secret=secret)
    try:
        action = refund_action()
        decision = with_channels(policy.evaluate(action), Channel(kind="webhook", target="https://hooks.example.com/pe"))
        res = await svc.hold(action=action, decision=decision, principal=Principal("acme", "k", "support-bot"))
        token = svc.issue_link(res.approval_id, "webhook:https://hooks.example.com/pe").rsplit("/", 1)[1]
        app = _asgi_app(svc, limit=64 * 1024)
        status, pulled, _ = await _post_endless(app, f"/review/{token}", total=GIB_QUARTER, chunk=64 * 1024,
                                                content_type="application/x-www-form-urlencoded")
        assert status == 413 and pulled <= 2 * 64 * 1024
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pe") as http:
            bare = await http.post(f"/review/{token}", data={"decision": "approve"})
            assert bare.status_code == 422 and "reviewer" in bare.text
            form = {"decision": "approve", "reason": "ok", "reviewer": "carol@acme.example",
                    "reviewer_signature": sign_reviewer(token, "carol@acme.example", secret)}
            done = await http.post(f"/review/{token}", content=urlencode(form),
                                   headers={"content-type": "application/x-www-form-urlencoded"})
            assert done.status_code == 200, done.text
        view = await svc.get(res.approval_id)
        assert view.state == State.approved and view.decided_by == "webhook:carol@acme.example"
    finally:
        await db.aclose()


async def test_the_plugin_wires_the_serving_policy_and_the_log_redaction(policy):
    from policyengine.approvals import plugin

    runtime = SimpleNamespace(policies=SimpleNamespace(current=policy), signals=None,
                              settings=SimpleNamespace(redact_fields=["amount"], redaction_salt=lambda: "salt"))
    evaluate = plugin.policy_evaluator(runtime)
    assert (await evaluate(refund_action("5000 GBP"))).effect == "deny"
    assert (await evaluate(refund_action("500 GBP"))).effect == "require_approval"
    red = plugin.redactor(runtime.settings)
    assert red is not None and red.redact({"fields": {"amount": "5 GBP"}})["fields"]["amount"].startswith("redacted:")
    assert plugin.redactor(SimpleNamespace(redact_fields=[], redaction_salt=lambda: None)) is None
