"""End to end on the real app: a refund over £100 is held, a reviewer approves by
email link, Slack button or REST, the guarded tool runs, the app's callback gets
the signed outcome. Every refused case is refused."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from approvals.conftest import CALLBACK_SECRET, SLACK_SIGNING_SECRET, TOKENS
from approvals.harness import parts, review_link
from policyengine.client import (
    ActionDenied,
    ApprovalNotGranted,
    PolicyEngineClient,
    SignatureError,
    verify_callback,
)


async def until(pred: Any, timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def api(stack: Any, who: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {TOKENS[who]}"}, timeout=30)


def slack_headers(body: bytes, *, ts: int | None = None, secret: str = SLACK_SIGNING_SECRET) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig,
            "Content-Type": "application/x-www-form-urlencoded"}


async def slack_delivered(stack: Any, approval_id: str, timeout: float = 20) -> None:
    """Wait until the outbox has recorded the approval's Slack message (channel + ts) as delivered."""
    import sqlite3

    path = stack.app.runtime.settings.database_url.removeprefix("sqlite:///")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            n = db.execute("select count(*) from notification_outbox where approval_id=? and kind='slack' "
                           "and state='delivered'", (approval_id,)).fetchone()[0]
        if n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting for the Slack message to be recorded as delivered")


def slack_click(approval_id: str, action_id: str, *, user: str = "U0RITA", username: str = "rita.slack",
                reason: str | None = None, response_url: str = "", message_ts: str = "1.0") -> bytes:
    payload = {
        "type": "block_actions", "user": {"id": user, "username": username, "name": username},
        "channel": {"id": "C0REFUNDS", "name": "refunds"}, "container": {"type": "message", "message_ts": message_ts},
        "response_url": response_url, "actions": [{"action_id": action_id, "value": approval_id, "type": "button"}],
        "state": {"values": {"pe_reason": {"pe_reason_input": {"type": "plain_text_input", "value": reason}}}},
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


@pytest.mark.slow
async def test_refund_held_then_approved_by_email_link(stack):
    async with PolicyEngineClient(stack.url, api_key=TOKENS["app"]) as pe:
        ran: list[tuple[str, str]] = []

        @pe.guard("refund", actor="agent-7", callback_url=f"{stack.rec.url}/callback", timeout=60)
        async def refund(order: str, amount: str) -> str:
            ran.append((order, amount))
            return f"refunded {amount} on {order}"

        # Standing order: a small refund runs at once.
        assert await refund(order="A-1000", amount="40 GBP") == "refunded 40 GBP on A-1000"

        task = asyncio.create_task(refund(order="A-1001", amount="150 GBP"))
        await until(lambda: stack.smtp.messages, what="the approval email")
        msg = stack.smtp.messages[0]
        assert msg["To"] == "refunds@example.com" and "refund" in msg["Subject"]
        body = parts(msg)
        assert "amount 150 GBP > 100 GBP" in body["plain"] and "<table" in body["html"]
        link = review_link(msg)
        assert not task.done() and ran == [("A-1000", "40 GBP")]

        async with httpx.AsyncClient(timeout=30) as http:
            page = await http.get(link)  # a link scanner: GET decides nothing
            assert page.status_code == 200 and "150 GBP" in page.text and page.headers["referrer-policy"] == "no-referrer"
            assert not task.done()
            done = await http.post(link, data={"decision": "approve", "reason": "customer is right"})
            assert done.status_code == 200 and "approved" in done.text
            again = await http.post(link, data={"decision": "approve"})  # single use
            assert again.status_code == 410 and "already been used" in again.text

        assert await asyncio.wait_for(task, 30) == "refunded 150 GBP on A-1001"
        assert ran[-1] == ("A-1001", "150 GBP")

    cb = await until(lambda: stack.rec.on("/callback"), what="the signed callback")
    outcome = verify_callback(cb[0].body, cb[0].headers, CALLBACK_SECRET)
    assert outcome["state"] == "approved" and outcome["released"] and outcome["decided_via"] == "email"
    assert outcome["decided_by"] == "email:refunds@example.com"
    tampered = cb[0].body.replace(b'"approved"', b'"rejected"', 1)
    with pytest.raises(SignatureError):
        verify_callback(tampered, cb[0].headers, CALLBACK_SECRET)
    with pytest.raises(SignatureError):
        verify_callback(cb[0].body, cb[0].headers, CALLBACK_SECRET, now=time.time() + 3600)  # replayed later

    async with api(stack, "rita") as rita:
        approval_id = outcome["approval_id"]
        audit = (await rita.get(f"/v1/approvals/{approval_id}/audit")).json()["data"]
        approved = next(e for e in audit if e["kind"] == "approved")
        assert approved["ip"] == "127.0.0.1" and approved["via"] == "email" and approved["reason"] == "customer is right"
        # the second POST of the used link is the one refused attempt
        assert [e["reason"] for e in audit if e["kind"] == "refused"] == ["reused review link"]


@pytest.mark.slow
async def test_slack_button_approves_and_forged_or_replayed_requests_are_refused(stack):
    pe = PolicyEngineClient(stack.url, api_key=TOKENS["app"])
    ran: list[str] = []

    @pe.guard("refund", actor="agent-7", callback_url=f"{stack.rec.url}/slack-callback", timeout=60)
    async def refund(order: str, amount: str) -> str:
        ran.append(amount)
        return "done"

    task = asyncio.create_task(refund(order="D-7", amount="250 GBP"))
    posted = await until(lambda: stack.rec.on("/api/chat.postMessage"), what="the Slack message")
    msg = posted[0].json()
    approval_id = next(e["value"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]
                       if e.get("action_id") == "pe_approve")
    assert not task.done() and ran == []
    buttons = [e for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {b.get("action_id") for b in buttons} >= {"pe_approve", "pe_reject"}
    assert all(b.get("value") == approval_id for b in buttons if b.get("action_id") in ("pe_approve", "pe_reject"))
    assert posted[0].headers["authorization"] == "Bearer xoxb-test-token"

    url = f"{stack.url}/v1/integrations/slack/interactivity"
    ts = (await until(lambda: stack.rec.slack_ts, what="the posted message's ts"))[0]
    await slack_delivered(stack, approval_id)
    body = slack_click(approval_id, "pe_approve", response_url=f"{stack.rec.url}/slack-response", message_ts=ts)
    async with httpx.AsyncClient(timeout=30) as http:
        forged = await http.post(url, content=body, headers=slack_headers(body, secret="not-the-secret-xxxxxxxx"))
        assert forged.status_code == 401
        old = int(time.time()) - 6 * 60
        replay = await http.post(url, content=body, headers=slack_headers(body, ts=old))
        assert replay.status_code == 401 and "window" in replay.text
        tampered = body.replace(b"pe_approve", b"pe_reject")
        bad = await http.post(url, content=tampered, headers=slack_headers(body))
        assert bad.status_code == 401
        # Reject without a reason: nothing happens, the user is told.
        noreason = slack_click(approval_id, "pe_reject", response_url=f"{stack.rec.url}/slack-response")
        assert (await http.post(url, content=noreason, headers=slack_headers(noreason))).status_code == 200
        await until(lambda: stack.rec.on("/slack-response"), what="the ephemeral reply")
        # A click on another message (or without one) is not bound to this approval: refused.
        other = slack_click(approval_id, "pe_approve", response_url=f"{stack.rec.url}/slack-response", message_ts="1.0")
        refused = await http.post(url, content=other, headers=slack_headers(other))
        assert refused.status_code == 200 and refused.json()["error"] == "approval_forbidden"
        ok = await http.post(url, content=body, headers=slack_headers(body))
        assert ok.status_code == 200 and ok.json()["state"] == "approved"
        late = slack_click(approval_id, "pe_reject", user="U0SAM", reason="too late",
                           response_url=f"{stack.rec.url}/slack-response", message_ts=ts)
        assert (await http.post(url, content=late, headers=slack_headers(late))).json()["error"] == "approval_already_decided"

    assert await asyncio.wait_for(task, 30) == "done" and ran == ["250 GBP"]  # released
    await pe.aclose()
    cb = await until(lambda: stack.rec.on("/slack-callback"), what="the signed callback")
    outcome = verify_callback(cb[0].body, cb[0].headers, CALLBACK_SECRET)
    assert outcome["approval_id"] == approval_id and outcome["released"] and outcome["decided_via"] == "slack"
    async with api(stack, "app") as app:
        view = (await app.get(f"/v1/approvals/{approval_id}")).json()
        assert view["state"] == "approved" and view["decided_by"] == "slack:U0RITA" and view["decided_via"] == "slack"
    updates = await until(lambda: stack.rec.on("/api/chat.update"), what="the Slack message update")
    upd = updates[0].json()
    assert upd["ts"] and upd["channel"] == "C0REFUNDS" and "APPROVED" in json.dumps(upd["blocks"])
    assert not any(b["type"] == "actions" for b in upd["blocks"])


@pytest.mark.slow
async def test_rest_reviewers_security_and_first_decision_wins(stack):
    async with api(stack, "app") as app, api(stack, "rita") as rita, api(stack, "sam") as sam, \
            api(stack, "lena") as lena, api(stack, "gina") as gina, api(stack, "alice") as alice, \
            api(stack, "alice2") as alice2, api(stack, "app2") as app2:
        # alice asks with her own key (the actor text names someone else: context only)
        r = await alice.post("/v1/evaluate", json={"action": "refund", "actor": "agent-7", "fields": {"amount": "300 GBP"}})
        approval_id = r.json()["approval"]["approval_id"]
        # Only reviewers of the group and tenant see it.
        assert [a["id"] for a in (await sam.get("/v1/approvals")).json()["data"]] == [approval_id]
        assert (await lena.get("/v1/approvals")).json()["data"] == []
        assert (await gina.get("/v1/approvals")).json()["data"] == []
        # Refused: another tenant, another group, the requester themself, an app key, no reason.
        assert (await gina.post(f"/v1/approvals/{approval_id}/approve")).status_code == 404
        assert (await lena.post(f"/v1/approvals/{approval_id}/approve")).status_code == 403
        for own in (alice, alice2):  # the requesting key itself, and her other key (subject "alice")
            self_ok = await own.post(f"/v1/approvals/{approval_id}/approve")
            assert self_ok.status_code == 403 and "own action" in self_ok.json()["error"]["message"]
        assert (await app.post(f"/v1/approvals/{approval_id}/approve")).status_code == 403
        assert (await sam.post(f"/v1/approvals/{approval_id}/reject", json={})).status_code == 422
        # Only the requesting key cancels: another app key of the tenant is refused.
        for other in (app, app2):
            assert (await other.post(f"/v1/approvals/{approval_id}/cancel")).status_code == 403
        # An edit the policy denies cannot be approved (the edited revision is evaluated again).
        denied = await sam.post(f"/v1/approvals/{approval_id}/approve",
                                json={"reason": "why not", "action": {"fields": {"amount": "50000 GBP"}}})
        assert denied.status_code == 422 and "deny refund when amount > 1000 GBP" in denied.json()["error"]["message"]
        # Long poll returns when sam decides (edit-and-approve: a new revision).
        poll = asyncio.create_task(alice.get(f"/v1/approvals/{approval_id}", params={"wait": 20}))
        await asyncio.sleep(0.3)
        assert not poll.done()
        ok = await sam.post(f"/v1/approvals/{approval_id}/approve",
                            json={"reason": "partial refund", "action": {"fields": {"amount": "120 GBP"}}})
        assert ok.status_code == 200 and ok.json()["revision"] == 2
        polled = (await asyncio.wait_for(poll, 20)).json()
        assert polled["state"] == "approved" and polled["action"]["fields"] == {"amount": "120 GBP"}
        assert polled["action_hash"] != polled["original_action_hash"]
        late = await rita.post(f"/v1/approvals/{approval_id}/reject", json={"reason": "no"})
        assert late.status_code == 409


@pytest.mark.slow
async def test_guard_raises_when_denied_or_rejected(stack):
    async with PolicyEngineClient(stack.url, api_key=TOKENS["app"]) as pe, api(stack, "sam") as sam:
        @pe.guard("delete_account")
        async def delete_account(user: str) -> None:
            raise AssertionError("must not run")

        with pytest.raises(ActionDenied):
            await delete_account(user="u1")

        @pe.guard("refund", actor="agent-7", timeout=30)
        async def refund(order: str, amount: str) -> None:
            raise AssertionError("must not run")

        task = asyncio.create_task(refund(order="B-1", amount="999 GBP"))
        listed: list[Any] = []

        async def first_pending() -> str:
            while True:
                data = (await sam.get("/v1/approvals")).json()["data"]
                if data:
                    listed.extend(data)
                    return data[0]["id"]
                await asyncio.sleep(0.1)

        approval_id = await asyncio.wait_for(first_pending(), 20)
        r = await sam.post(f"/v1/approvals/{approval_id}/reject", json={"reason": "fraud pattern"})
        assert r.status_code == 200
        with pytest.raises(ApprovalNotGranted, match="fraud pattern"):
            await asyncio.wait_for(task, 20)


@pytest.mark.slow
async def test_fifty_concurrent_http_decisions_exactly_one_wins(stack):
    async with api(stack, "app") as app:
        r = await app.post("/v1/evaluate", json={"action": "refund", "actor": "agent-7", "fields": {"amount": "101 GBP"}})
        approval_id = r.json()["approval"]["approval_id"]
    async with api(stack, "rita") as rita, api(stack, "sam") as sam:
        calls = [
            (rita if i % 2 else sam).post(f"/v1/approvals/{approval_id}/{'approve' if i % 3 else 'reject'}",
                                          json={"reason": f"call {i}"})
            for i in range(50)
        ]
        responses = await asyncio.gather(*calls)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 49
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    won = "approved" if winner % 3 else "rejected"
    assert responses[winner].json()["state"] == won
    async with api(stack, "rita") as rita:
        audit = (await rita.get(f"/v1/approvals/{approval_id}/audit")).json()["data"]
    assert [e["kind"] for e in audit if e["kind"] in ("approved", "rejected")] == [won]
    assert sum(e["kind"] == "refused" for e in audit) == 49
    async with httpx.AsyncClient(base_url=stack.url) as http:
        metrics = (await http.get("/metrics")).text
    assert 'policyengine_approval_transitions_total{kind="created"}' in metrics
    assert 'policyengine_approval_transitions_total{kind="refused"} 49.0' in metrics


@pytest.mark.slow
async def test_teams_card_buttons_open_the_review_page(stack):
    async with api(stack, "app") as app:
        r = await app.post("/v1/evaluate", json={"action": "respond_press", "actor": "agent-7",
                                                 "text": "Statement for The Times about the outage"})
        assert r.json()["effect"] == "require_approval"
        approval_id = r.json()["approval"]["approval_id"]
    posted = await until(lambda: stack.rec.on("/teams"), what="the Teams card")
    card = posted[0].json()["attachments"][0]["content"]
    approve_url = next(a["url"] for a in card["actions"] if a["title"].startswith("Approve"))
    assert "Statement for The Times" not in approve_url
    async with httpx.AsyncClient(timeout=30) as http:
        page = await http.get(approve_url)
        assert page.status_code == 200 and "Statement for The Times" in page.text and 'class="intent"' in page.text
        done = await http.post(approve_url.split("?")[0], data={"decision": "approve"})
        assert done.status_code == 200
    async with api(stack, "app") as app:
        view = (await app.get(f"/v1/approvals/{approval_id}")).json()
    assert view["state"] == "approved" and view["decided_via"] == "teams" and view["decided_by"] == "teams:refunds"


@pytest.mark.slow
def test_guard_on_a_synchronous_tool(stack):
    pe = PolicyEngineClient(stack.url, api_key=TOKENS["app"])

    @pe.guard("refund", actor="agent-7")
    def refund(order: str, amount: str) -> str:
        return f"refunded {amount}"

    @pe.guard("delete_account")
    def delete_account(user: str) -> None:
        raise AssertionError("must not run")

    assert refund(order="S-1", amount="20 GBP") == "refunded 20 GBP"
    with pytest.raises(ActionDenied, match="delete_account denied"):
        delete_account(user="u1")
