"""Channels against real servers on loopback: SMTP (aiosmtpd), webhooks and Teams (HTTP),
the outbox's retries, and templates (autoescape, Slack escaping, deployment overrides)."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import itsdangerous.timed
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from approvals.harness import Recorder, SmtpSink, parts, review_link
from approvals.helpers import make_service, refund_action, refund_decision
from policyengine.notifier import Notice, OutboxSender, TemplateRenderer, backoff_s
from policyengine.notifier import email as email_channel
from policyengine.notifier import slack as slack_channel
from policyengine.notifier import teams as teams_channel
from policyengine.notifier.email import EmailSender

from policyengine.approvals.errors import LinkRefused
from policyengine.approvals.service import utcnow
from policyengine.approvals.signing import SignatureError, verify_body
from policyengine.approvals.states import State
from policyengine.types import Channel

EVIL = '<script>alert(1)</script> <!channel> & co'


def notice(**kw) -> Notice:
    base = dict(
        approval_id="apr_1", purpose="request", tenant="acme", action_name="refund",
        action={"action": "refund", "fields": {"amount": "150 GBP", "note": EVIL}}, action_hash="f" * 64,
        groups=["refunds"], reasons=[{"rule_id": "p:4", "source": "require approval for refund when amount > 100 GBP",
                                      "because": ["amount 150 GBP > 100 GBP"]}],
        review_url="http://127.0.0.1:9/review/tok", answers={"qwen": "yes", "gemma": "no"},
    )
    base.update(kw)
    return Notice.model_validate(base)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now


@pytest.fixture
def rec():
    r = Recorder().start()
    yield r
    r.stop()


def test_email_html_is_autoescaped_and_text_is_not():
    payload = email_channel.compose(notice(), TemplateRenderer(), "a@example.com, b@example.com")
    assert payload["to"] == ["a@example.com", "b@example.com"]
    assert "<script>" not in payload["html"] and "&lt;script&gt;" in payload["html"]
    assert EVIL in payload["text"] and "http://127.0.0.1:9/review/tok" in payload["text"]
    assert "Approval needed: refund" in payload["subject"]


def test_slack_escapes_mrkdwn_and_has_buttons():
    p = slack_channel.compose(notice(), TemplateRenderer(), "#refunds")
    text = json.dumps(p["blocks"])
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text
    actions = next(b for b in p["blocks"] if b["type"] == "actions")["elements"]
    # with candidate answers, one approve button per answer (the one approved is released)
    assert [a["action_id"] for a in actions] == ["pe_approve_answer_0", "pe_approve_answer_1", "pe_reject",
                                                 "pe_open"]
    plain = slack_channel.compose(notice(answers=None), TemplateRenderer(), "#refunds")
    actions = next(b for b in plain["blocks"] if b["type"] == "actions")["elements"]
    assert [a["action_id"] for a in actions] == ["pe_approve", "pe_reject", "pe_open"]
    decided = slack_channel.compose(notice(purpose="decided", state="approved", decided_by="rita"), TemplateRenderer(), "#r")
    assert not any(b["type"] in ("actions", "input") for b in decided["blocks"])


def test_templates_can_be_overridden_per_deployment(tmp_path):
    (tmp_path / "email_subject.txt.j2").write_text("ACME needs you: {{ n.action_name }}")
    payload = email_channel.compose(notice(), TemplateRenderer(tmp_path), "a@example.com")
    assert payload["subject"] == "ACME needs you: refund"
    assert "&lt;script&gt;" in payload["html"]  # the built-in HTML is still used
    with pytest.raises(ValueError, match="does not exist"):
        TemplateRenderer(tmp_path / "missing")


async def test_email_over_smtp_is_multipart():
    with SmtpSink() as smtp:
        sender = EmailSender(host="127.0.0.1", port=smtp.port, sender="pe@example.com")
        await sender.send(email_channel.compose(notice(), TemplateRenderer(), "refunds@example.com"))
        msg = smtp.messages[0]
        assert msg.get_content_type() == "multipart/alternative"
        assert set(parts(msg)) == {"plain", "html"}
        assert review_link(msg) == "http://127.0.0.1:9/review/tok"


async def test_teams_card_and_signed_webhook(rec):
    async with httpx.AsyncClient() as http:
        d = OutboxSender(http=http, webhook_secret="wh-secret-0123456789abcdef")
        await d.send("teams", f"{rec.url}/teams", teams_channel.compose(notice(answers=None), TemplateRenderer()))
        await d.send("webhook", f"{rec.url}/hook", {"event": "approval.request", "approval_id": "apr_1"}, key="ntf_1")
    card = rec.on("/teams")[0].json()["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    acts = card["content"]["actions"]
    assert [a["type"] for a in acts] == ["Action.OpenUrl", "Action.OpenUrl"] and acts[0]["url"].startswith("http://127.0.0.1:9/review/")
    hook = rec.on("/hook")[0]
    assert hook.headers["idempotency-key"] == "ntf_1"
    verify_body(hook.body, hook.headers["x-policyengine-signature"], "wh-secret-0123456789abcdef")
    with pytest.raises(SignatureError):
        verify_body(hook.body + b" ", hook.headers["x-policyengine-signature"], "wh-secret-0123456789abcdef")


def test_backoff_doubles_up_to_the_cap_with_jitter_and_honours_retry_after(monkeypatch):
    # attempt n waits a uniform draw in [c/2, c], c = min(max_s, base_s * 2 ** (n - 1))
    ceilings = [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]

    def schedule(pick) -> list[float]:
        monkeypatch.setattr("policyengine.notifier.outbox.random.uniform", pick)
        return [backoff_s(n, base_s=2, max_s=600) for n in range(1, len(ceilings) + 1)]

    longest = schedule(lambda low, high: high)
    shortest = schedule(lambda low, high: low)
    monkeypatch.undo()
    assert longest == ceilings
    assert shortest == [c / 2 for c in ceilings]
    # below the cap, the shortest wait of each attempt is the longest wait of the one before
    assert shortest[1:9] == longest[:8]
    for n, ceiling in enumerate(ceilings, start=1):
        for _ in range(50):
            assert ceiling / 2 <= backoff_s(n, base_s=2, max_s=600) <= ceiling, n
    # Retry-After is a floor (capped at max_s), never shortened by the jitter
    assert backoff_s(1, base_s=2, max_s=600, retry_after_s=120) == 120
    assert backoff_s(1, base_s=2, max_s=600, retry_after_s=3600) == 600
    assert 256 <= backoff_s(9, base_s=2, max_s=600, retry_after_s=1) <= 512


async def test_failed_delivery_is_retried_then_delivered_and_never_loses_the_approval(tmp_path, rec):
    clock = Clock()
    async with httpx.AsyncClient() as http:
        svc, db = await make_service(f"sqlite:///{tmp_path}/o.db", clock=clock,
                                     dispatcher=OutboxSender(http=http, webhook_secret="wh-secret-0123456789abcdef"))
        try:
            rec.status = 503
            res = await svc.hold(action=refund_action(), decision=refund_decision([Channel(kind="webhook", target=f"{rec.url}/hook")]))
            await svc.drain()
            assert await svc.deliver_due() == 0  # backoff: not due yet
            assert (await svc.get(res.approval_id)).state == State.pending
            for _ in range(3):
                clock.now += timedelta(seconds=5)
                await svc.deliver_due()
            assert len(rec.on("/hook")) == 4
            rec.status = 200
            clock.now += timedelta(seconds=60)
            assert await svc.deliver_due() == 1
            assert await svc.deliver_due() == 0  # delivered once, never again
            async with db.engine.connect() as conn:
                import sqlalchemy as sa
                row = (await conn.execute(sa.text("select state, attempts, last_error from notification_outbox"))).one()
            assert row.state == "delivered" and row.attempts == 5 and row.last_error is None
        finally:
            await db.aclose()


async def test_permanent_failure_goes_dead_and_is_recorded(tmp_path, rec):
    async with httpx.AsyncClient() as http:
        svc, db = await make_service(f"sqlite:///{tmp_path}/d.db", dispatcher=OutboxSender(http=http))
        try:
            rec.status = 404
            res = await svc.hold(action=refund_action(), decision=refund_decision([Channel(kind="webhook", target=f"{rec.url}/gone")]))
            await svc.drain()
            async with db.engine.connect() as conn:
                import sqlalchemy as sa
                row = (await conn.execute(sa.text("select state, last_error from notification_outbox"))).one()
            assert row.state == "dead" and "HTTP 404" in row.last_error
            assert (await svc.get(res.approval_id)).state == State.pending
        finally:
            await db.aclose()


async def test_reminders_are_emailed_and_links_expire(tmp_path, monkeypatch):
    clock = Clock()
    with SmtpSink() as smtp:
        async with httpx.AsyncClient() as http:
            d = OutboxSender(http=http, email=EmailSender(host="127.0.0.1", port=smtp.port, sender="pe@example.com"))
            svc, db = await make_service(f"sqlite:///{tmp_path}/r.db", clock=clock, dispatcher=d)
            try:
                res = await svc.hold(action=refund_action(),
                                     decision=refund_decision([Channel(kind="email", target="refunds@example.com")]))
                await svc.drain()
                assert len(smtp.messages) == 1
                clock.now += timedelta(hours=1, seconds=1)
                assert await svc.sweep_reminders() == 1
                await svc.drain()
                assert len(smtp.messages) == 2 and smtp.messages[1]["Subject"].startswith("[policyengine] Reminder")

                # A link issued two days ago has expired (links live 24 h by default).
                real = itsdangerous.timed.TimestampSigner.get_timestamp
                monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                                    lambda self: real(self) - 2 * 86400)
                old = svc.issue_link(res.approval_id, "email:refunds@example.com").rsplit("/", 1)[1]
                monkeypatch.undo()
                with pytest.raises(LinkRefused, match="expired"):
                    await svc.decide_with_link(old, approve=True, reason=None)
                forged = review_link(smtp.messages[0]).rsplit("/", 1)[1][:-3] + "abc"
                with pytest.raises(LinkRefused, match="not valid"):
                    await svc.decide_with_link(forged, approve=True, reason=None)
                fresh = review_link(smtp.messages[1]).rsplit("/", 1)[1]
                view = await svc.decide_with_link(fresh, approve=True, reason=None)
                assert view.state == State.approved and view.decided_via == "review_page"
            finally:
                await db.aclose()
