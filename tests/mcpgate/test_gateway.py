"""The MCP gateway with the real `mcp` SDK on both sides: MCP servers written with the SDK behind it
(the shop over stdio, the mail server over streamable HTTP) and the SDK's `Client` calling through it."""

from __future__ import annotations

import asyncio

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from policyengine.mcpgate.server import DECISION_META

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _pe(result: types.CallToolResult) -> dict:
    return (result.structured_content or {}).get("policyengine", {})


async def test_tools_list_hides_what_the_caller_may_never_use(gw):
    async with gw.client() as c:
        names = {t.name for t in (await c.list_tools()).tools}
    # delete_account is denied whatever its arguments; the rest can be allowed
    assert names == {"lookup_order", "refund", "pack_order", "crash", "send_email", "draft_email", "slow_email",
                     "find_email", "post_entry", "halt"}
    async with gw.client("intern") as c:
        intern = {t.name for t in (await c.list_tools()).tools}
    # deny refund when user.role == "intern"
    assert intern == {"lookup_order", "pack_order", "crash", "send_email", "draft_email", "slow_email", "find_email",
                      "post_entry", "halt"}


async def test_an_allowed_call_is_forwarded_and_logged(gw):
    async with gw.client() as c:
        r = await c.call_tool("lookup_order", {"order_id": "A1"})
    assert not r.is_error and _text(r) == "order A1: delivered, 1 item, 150 GBP"
    rec = await gw.outcome(r.meta[DECISION_META])
    assert rec["kind"] == "mcp_tool_call" and rec["action"] == "lookup_order" and rec["effect"] == "allow"
    extra = rec["extra"]
    assert extra["outcome"] == "forwarded" and extra["upstream_status"] == "ok" and extra["upstream"] == "shop"
    assert extra["mcp"] == {"server": "shop", "tool": "lookup_order", "shown": "lookup_order"}
    assert rec["record"]["request"]["fields"]["mcp"]["server"] == "shop"


async def test_the_servers_progress_reaches_the_client(gw):
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    async with gw.client() as c:
        r = await c.call_tool("pack_order", {"order_id": "P1"}, progress_callback=on_progress)
    assert _text(r) == "packed P1"
    assert seen == [(1, 2, "packing P1: step 1"), (2, 2, "packing P1: step 2")]


async def test_a_denied_call_is_an_error_result_with_the_reason(gw):
    async with gw.client() as c:
        r = await c.call_tool("delete_account", {"user": "u-9"})
    assert r.is_error and "policyengine denied delete_account" in _text(r) and "deny delete_account" in _text(r)
    pe = _pe(r)
    assert pe["outcome"] == "denied" and pe["effect"] == "deny"
    rec = await gw.outcome(pe["decision_id"])
    assert rec["effect"] == "deny" and rec["extra"]["outcome"] == "denied"
    assert gw.upstream_calls() == []  # it never reached the server
    async with gw.client() as c:  # arguments too large to judge are refused, and logged as such
        big = await c.call_tool("lookup_order", {"order_id": "x" * 70_000})
    assert big.is_error and "over the limit of 65536" in _text(big)
    rec = await gw.outcome(_pe(big)["decision_id"])
    assert rec["effect"] == "deny" and rec["kind"] == "mcp_tool_call"
    assert gw.upstream_calls() == []


async def test_a_held_call_waits_with_progress_then_runs_once_approved_through_the_review_link(gw):
    progress: list[tuple[float, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, message))

    async with gw.client() as c:
        task = asyncio.create_task(c.call_tool("refund", {"order_id": "A1", "amount": 150, "currency": "GBP"},
                                               progress_callback=on_progress))
        for _ in range(200):
            pending = [a for a in await gw.pending_approvals() if a["action"]["fields"].get("order_id") == "A1"]
            if pending:
                break
            await asyncio.sleep(0.05)
        assert not task.done() and gw.upstream_calls() == []
        approval = pending[0]
        assert approval["action"]["action"] == "refund"
        await gw.approve_by_link(approval["id"])
        r = await asyncio.wait_for(task, 20)
        assert not r.is_error and _text(r) == "refunded 150 GBP on order A1"
        assert progress and all(approval["id"] in (m or "") for _, m in progress)
        rec = await gw.outcome(r.meta[DECISION_META])
        assert rec["effect"] == "require_approval" and "amount 150 GBP > 100 GBP" in str(rec["record"])
        extra = rec["extra"]
        assert extra["outcome"] == "forwarded" and extra["approval_id"] == approval["id"]
        assert extra["released_by"] == "reviewer"
        # the approval is bound to that decision, and releases one call only
        assert approval["decision_id"] == r.meta[DECISION_META]
        again = await c.call_tool("refund", {"order_id": "A1", "amount": 150, "currency": "GBP"},
                                  meta={"policyengine/approval_id": approval["id"]})
    assert again.is_error and "already released one call" in _text(again)
    assert [x["tool"] for x in gw.upstream_calls()] == ["refund"]


async def test_a_held_call_times_out_pending_then_resumes_with_its_approval(gw):
    gw.gateway.settings.hold_wait_s = 0.3
    args = {"order_id": "B2", "amount": 250, "currency": "GBP"}
    async with gw.client() as c:
        r = await c.call_tool("refund", args)
        pe = _pe(r)
        assert r.is_error and pe["outcome"] == "pending" and "waiting for human approval" in _text(r)
        approval_id = pe["approval"]["approval_id"]
        assert pe["resume"]["meta"] == {"policyengine/approval_id": approval_id}
        assert gw.upstream_calls() == []
        rec = await gw.outcome(pe["decision_id"])
        assert rec["extra"]["outcome"] == "pending" and rec["extra"]["approval_id"] == approval_id
        # resuming before anyone decided: still pending, no second approval
        before = len(await gw.pending_approvals())
        still = await c.call_tool("refund", {**args, "policyengine_approval_id": approval_id})
        assert _pe(still)["outcome"] == "pending" and len(await gw.pending_approvals()) == before
        # an approval id names one call: other arguments are refused
        other = await c.call_tool("refund", {**args, "amount": 999}, meta={"policyengine/approval_id": approval_id})
        assert _pe(other)["outcome"] == "refused" and "different request" in _text(other)
        await gw.approve_by_link(approval_id)
        done = await c.call_tool("refund", args, meta={"policyengine/approval_id": approval_id})
    assert not done.is_error and _text(done) == "refunded 250 GBP on order B2"
    assert gw.upstream_calls() == [{"tool": "refund", "args": {"order_id": "B2", "amount": 250.0, "currency": "GBP"}}]


async def test_an_approval_that_times_out_is_an_error_result(gw):
    gw.gateway.settings.hold_wait_s = 0
    args = {"to": "press@acme.example", "subject": "Statement", "body": "No comment."}
    async with gw.client() as c:
        approval_id = _pe(await c.call_tool("send_email", args))["approval"]["approval_id"]
        await asyncio.sleep(1.1)
        await gw.runtime.approvals.sweep_timeouts()  # what the service's timer does every 5 s (or already did)
        r = await c.call_tool("send_email", args, meta={"policyengine/approval_id": approval_id})
    assert r.is_error and _pe(r)["outcome"] == "approval_expired" and "no decision within 1s" in _text(r)
    assert gw.upstream_calls() == []


async def test_a_rejected_approval_is_an_error_result(gw):
    gw.gateway.settings.hold_wait_s = 0.2
    args = {"order_id": "C3", "amount": 500, "currency": "GBP"}
    async with gw.client() as c:
        approval_id = _pe(await c.call_tool("refund", args))["approval"]["approval_id"]
        await gw.approve_by_link(approval_id, decision="reject", reason="order already refunded")
        r = await c.call_tool("refund", args, meta={"policyengine/approval_id": approval_id})
    assert r.is_error and _pe(r)["outcome"] == "approval_rejected" and "order already refunded" in _text(r)
    assert gw.upstream_calls() == []


async def test_an_escalation_reads_the_arguments_text(gw):
    gw.gateway.settings.hold_wait_s = 0
    async with gw.client() as c:
        calm = await c.call_tool("send_email", {"to": "a@b.example", "subject": "Hi", "body": "Your order shipped."})
        legal = await c.call_tool("send_email", {"to": "a@b.example", "subject": "Re: order",
                                                 "body": "Our solicitor will reply."})
    assert not calm.is_error
    pe = _pe(legal)
    assert legal.is_error and pe["effect"] == "escalate" and "mentions litigation" in pe["reason"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 (InputRequiredResult) and handshake era
async def test_the_user_confirms_for_themselves_through_elicitation(gw, mode):
    asked: list[str] = []

    def answering(confirm: bool):
        async def elicit(ctx, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params.message)
            return types.ElicitResult(action="accept", content={"confirm": confirm})
        return elicit

    args = {"to": "ceo@acme.example", "subject": "Q3", "body": "Numbers attached."}
    before = len(await gw.pending_approvals())
    async with gw.client(mode=mode, elicitation_callback=answering(True)) as c:
        ok = await c.call_tool("send_email", args)
    assert not ok.is_error and _text(ok) == "sent to ceo@acme.example: Q3"
    assert "send_email" in asked[0] and "ceo@acme.example" in asked[0]
    rec = await gw.outcome(ok.meta[DECISION_META])
    assert rec["extra"]["released_by"] == "user"
    async with gw.client(mode=mode, elicitation_callback=answering(False)) as c:
        no = await c.call_tool("send_email", args)
    assert no.is_error and _pe(no)["outcome"] == "user_declined"
    assert len(await gw.pending_approvals()) == before  # the user decided: no reviewer was asked


async def test_a_client_without_elicitation_gets_a_reviewer_instead(gw):
    gw.gateway.settings.hold_wait_s = 0
    async with gw.client() as c:
        r = await c.call_tool("send_email", {"to": "ceo@acme.example", "subject": "Q3", "body": "x"})
    assert r.is_error and _pe(r)["outcome"] == "pending"


async def test_an_upstream_that_dies_is_an_error_and_the_others_keep_serving(gw):
    async with gw.client() as c:
        dead = await c.call_tool("crash", {})
        assert dead.is_error and _pe(dead)["outcome"] == "upstream_unavailable" and "'shop'" in _text(dead)
        mail = await c.call_tool("send_email", {"to": "a@b.example", "subject": "still here", "body": "ok"})
        assert not mail.is_error
        for _ in range(100):  # the shop is restarted by its supervisor
            back = await c.call_tool("lookup_order", {"order_id": "D4"})
            if not back.is_error:
                break
            assert _pe(back)["outcome"] == "upstream_unavailable"
            await asyncio.sleep(0.1)
    assert _text(back).startswith("order D4")
    rec = await gw.outcome(_pe(dead)["decision_id"])
    assert rec["effect"] == "allow" and rec["extra"]["outcome"] == "upstream_unavailable"


async def test_malformed_json_rpc_gets_an_error_and_other_sessions_go_on(gw):
    async with gw.client() as c:
        assert not (await c.call_tool("lookup_order", {"order_id": "E5"})).is_error
        async with gw.http() as h:
            hdrs = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
            bad = await h.post("/mcp", content=b'{"jsonrpc": "2.0", "method": ', headers=hdrs)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == types.PARSE_ERROR
            odd = await h.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "params": 7}', headers=hdrs)
            assert 400 <= odd.status_code < 500 and "error" in odd.json()
            unauth = await h.post("/mcp", content=b"{}", headers={**hdrs, "authorization": "Bearer nope"})
            assert unauth.status_code == 401 and unauth.headers["www-authenticate"].startswith("Bearer")
        with pytest.raises(MCPError) as unknown:  # a tool nobody serves is a protocol error (and logged)
            await c.call_tool("no\x00such_tool", {})
        assert unknown.value.code == types.INVALID_PARAMS and "Unknown tool" in unknown.value.message
        assert not (await c.call_tool("lookup_order", {"order_id": "E6"})).is_error


async def test_keys_are_tenant_scoped(gw):
    gw.gateway.settings.hold_wait_s = 0
    args = {"order_id": "F7", "amount": 300, "currency": "GBP"}
    async with gw.client() as c:
        approval_id = _pe(await c.call_tool("refund", args))["approval"]["approval_id"]
    await gw.approve_by_link(approval_id)
    async with gw.client("globex") as other:  # another tenant cannot use acme's approval
        r = await other.call_tool("refund", args, meta={"policyengine/approval_id": approval_id})
    assert r.is_error and _pe(r)["outcome"] == "refused" and gw.upstream_calls() == []
    # nor join a session another key opened: the SDK answers as if it did not exist
    async with gw.http() as h:
        hdrs = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                "mcp-protocol-version": "2025-11-25"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        opened = await h.post("/mcp", json=init, headers=hdrs)
        sid = opened.headers["mcp-session-id"]
    async with gw.http("globex") as h:
        ping = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        stolen = await h.post("/mcp", json=ping, headers={**hdrs, "mcp-session-id": sid})
    assert stolen.status_code == 404
