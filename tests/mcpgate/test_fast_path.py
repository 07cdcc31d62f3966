"""The hot path (`policyengine.mcpgate.fast` in front, `policyengine.mcpgate.wire` behind) against the
SDK's own path, with the real SDK on both sides: the same answers, each call decided and logged once,
the SDK's checks kept, and bad input on the 2026-07-28 HTTP entry answered with JSON-RPC errors while
other calls go on."""

from __future__ import annotations

import asyncio
import sqlite3

import mcp_types as types
import pytest

from policyengine.mcpgate.server import DECISION_META

pytestmark = pytest.mark.asyncio(loop_scope="module")

PV = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": PV, "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"}}
HDRS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
        "mcp-protocol-version": PV, "mcp-method": "tools/call"}


def _call(rid: int, name: str, arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, "_meta": META}}


def _decision_rows(gw) -> int:
    path = gw.runtime.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        return con.execute("SELECT count(*) FROM decisions WHERE kind = 'mcp_tool_call'").fetchone()[0]


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _spy_forward(gw, monkeypatch) -> list[str]:
    seen: list[str] = []
    real = gw.gateway.forward_wire

    async def forward_wire(pre):
        seen.append(pre.tool)
        return await real(pre)

    monkeypatch.setattr(gw.gateway, "forward_wire", forward_wire)
    return seen


async def test_the_fast_path_answers_what_the_sdks_path_answers(gw, monkeypatch):
    ups = gw.gateway.upstreams.by_name
    assert ups["mail"].raw and ups["ledger"].raw and not ups["shop"].raw  # HTTP on 2026-07-28; stdio
    fast = _spy_forward(gw, monkeypatch)
    args = {"to": "a@b.example", "subject": "Hello", "body": "Your order shipped."}
    answers = []
    async with gw.http() as h:
        for on in (True, False):
            gw.gateway.settings.fast_path = on
            r = await h.post("/mcp", json=_call(7, "send_email", args), headers={**HDRS, "mcp-name": "send_email"})
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
            answers.append(r.json())
    assert fast == ["send_email"]  # the first only
    ids = [a["result"]["_meta"].pop(DECISION_META) for a in answers]
    assert ids[0] != ids[1] and answers[0] == answers[1]
    assert answers[0]["result"]["structuredContent"] == {"result": "sent to a@b.example: Hello"}
    for decision_id in ids:  # both logged alike: the decision row, then the outcome row
        rec = await gw.outcome(decision_id)
        assert rec["effect"] == "allow" and rec["extra"]["outcome"] == "forwarded"
        assert rec["extra"]["upstream"] == "mail" and rec["extra"]["upstream_status"] == "ok"


async def test_the_sdk_client_through_the_fast_path(gw, monkeypatch):
    fast = _spy_forward(gw, monkeypatch)
    async with gw.client() as c:
        r = await c.call_tool("post_entry", {"account": "cash", "amount": 12.5})
    assert not r.is_error and _text(r) == "posted 12.5 to cash" and fast == ["post_entry"]
    assert r.structured_content == {"result": "posted 12.5 to cash"}
    rec = await gw.outcome(r.meta[DECISION_META])
    assert rec["extra"]["outcome"] == "forwarded" and rec["extra"]["upstream"] == "ledger"


async def test_mcp_param_headers_are_checked_in_front_and_sent_behind(gw, monkeypatch):
    fast = _spy_forward(gw, monkeypatch)
    call = _call(9, "post_entry", {"account": "cash", "amount": 5})
    hdrs = {**HDRS, "mcp-name": "post_entry"}
    async with gw.http() as h:
        # the ledger declares x-mcp-header on `account`: its own SDK refuses a call without the header,
        # so this answer says the forward carried it
        ok = await h.post("/mcp", json=call, headers={**hdrs, "mcp-param-account": "cash"})
        assert ok.status_code == 200 and ok.json()["result"]["isError"] is False, ok.text
        before = _decision_rows(gw)
        lying = await h.post("/mcp", json=call, headers={**hdrs, "mcp-param-account": "savings"})
        missing = await h.post("/mcp", json=call, headers=hdrs)
    for r in (lying, missing):
        assert r.status_code == 400 and r.json()["error"]["code"] == types.HEADER_MISMATCH
    assert fast == ["post_entry"] and _decision_rows(gw) == before


async def test_a_held_call_on_the_fast_path_is_decided_and_logged_once(gw, monkeypatch):
    gw.gateway.settings.hold_wait_s = 0
    fast = _spy_forward(gw, monkeypatch)
    before = _decision_rows(gw)
    async with gw.client() as c:
        held = await c.call_tool("send_email", {"to": "press@acme.example", "subject": "S", "body": "No comment."})
        legal = await c.call_tool("send_email", {"to": "a@b.example", "subject": "Re", "body": "Our solicitor writes."})
    pe = (held.structured_content or {})["policyengine"]
    assert held.is_error and pe["outcome"] == "pending" and pe["effect"] == "require_approval"
    assert legal.is_error and legal.structured_content["policyengine"]["effect"] == "escalate"
    assert fast == [] and _decision_rows(gw) == before + 2  # handed to the SDK's path decided: one row each
    assert gw.upstream_calls() == []


async def test_progress_from_an_http_upstream_reaches_the_client(gw):
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    async with gw.client() as c:
        r = await c.call_tool("draft_email", {"to": "x@y.example"}, progress_callback=on_progress)
    assert _text(r) == "drafted to x@y.example"
    assert seen == [(1, 2, "drafting to x@y.example: step 1"), (2, 2, "drafting to x@y.example: step 2")]


async def test_malformed_json_rpc_on_the_2026_entry_is_an_error_and_other_calls_go_on(gw):
    gw.gateway.settings.hold_wait_s = 10
    args = {"order_id": "M1", "amount": 150, "currency": "GBP"}
    async with gw.client() as waiting, gw.client() as other:
        held = asyncio.create_task(waiting.call_tool("refund", args))  # in flight throughout
        for _ in range(200):
            pending = [a for a in await gw.pending_approvals() if a["action"]["fields"].get("order_id") == "M1"]
            if pending:
                break
            await asyncio.sleep(0.02)
        async with gw.http() as h:
            bad = await h.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=HDRS)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == types.PARSE_ERROR
            batch = await h.post("/mcp", content=b"[1, 2]", headers=HDRS)
            assert batch.status_code == 400 and batch.json()["error"]["code"] == types.INVALID_REQUEST
            # the Mcp-Name header says one tool, the body another: refused before anything is decided
            before = _decision_rows(gw)
            lying = await h.post("/mcp", json=_call(2, "send_email", {"to": "a@b.example", "subject": "s", "body": "b"}),
                                 headers={**HDRS, "mcp-name": "lookup_order"})
            assert lying.status_code == 400 and lying.json()["error"]["code"] == types.HEADER_MISMATCH
            odd = await h.post("/mcp", json={**_call(3, "send_email", {}), "params": {"name": "send_email",
                                                                                      "arguments": 7, "_meta": META}},
                               headers={**HDRS, "mcp-name": "send_email"})
            assert 400 <= odd.status_code < 500 and odd.json()["error"]["code"] == types.INVALID_PARAMS
            no_meta = await h.post("/mcp", json={**_call(4, "send_email", {}), "params": {"name": "send_email"}},
                                   headers={**HDRS, "mcp-name": "send_email"})
            assert 400 <= no_meta.status_code < 500 and "error" in no_meta.json()
            assert _decision_rows(gw) == before
        ok = await other.call_tool("send_email", {"to": "a@b.example", "subject": "still", "body": "here"})
        assert not ok.is_error
        assert not held.done()
        await gw.approve_by_link(pending[0]["id"])
        done = await asyncio.wait_for(held, 20)
    assert not done.is_error and _text(done) == "refunded 150 GBP on order M1"


async def test_a_client_that_disconnects_cancels_its_forwarded_call(gw):
    """On 2026-07-28 a disconnect on streamable HTTP is the request's cancellation: the forward is
    cancelled, which closes the upstream request, and the outcome row says so."""
    before = _decision_rows(gw)
    async with gw.http() as h:
        req = asyncio.ensure_future(h.post("/mcp", json=_call(9, "slow_email", {"to": "a@b.example"}),
                                           headers={**HDRS, "mcp-name": "slow_email"}))
        for _ in range(500):  # the upstream is running the call
            if any(c["tool"] == "slow_email" for c in gw.upstream_calls()):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"the call never reached the upstream: {gw.upstream_calls()}")
        req.cancel()  # the client gives up: its connection closes
        with pytest.raises(asyncio.CancelledError):
            await req
    path = gw.runtime.settings.database_url.removeprefix("sqlite:///")
    for _ in range(500):
        with sqlite3.connect(path) as con:
            rows = con.execute("SELECT id FROM decisions WHERE kind = 'mcp_tool_call' AND action = ?",
                               ("slow_email",)).fetchall()
        if rows:
            break
        await asyncio.sleep(0.01)
    assert len(rows) == 1 and _decision_rows(gw) == before + 1
    rec = await gw.outcome(rows[0][0])
    assert rec["effect"] == "allow" and rec["extra"]["outcome"] == "cancelled"
    assert rec["extra"]["reason"] == "the client disconnected before the answer"
    for _ in range(500):  # the upstream's handler was cancelled one hop on
        if {"tool": "slow_email", "args": {"to": "a@b.example", "phase": "cancelled"}} in gw.upstream_calls():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"the upstream call was not cancelled: {gw.upstream_calls()}")


async def test_a_read_only_tool_goes_before_its_row_commits_and_a_lost_row_withholds_its_answer(gw, monkeypatch):
    """By default (`commit_before_forward: unless_read_only`) a tool its server declares read-only
    is sent first and its decision row commits while the server works; any other tool waits for
    its row. Either way no answer leaves without its row: when the log cannot take it, the read
    was made but its answer is withheld, and the tool with side effects never ran."""
    from policyengine.store import DecisionLogError

    g = gw.gateway
    assert g.settings.commit_before_forward == "unless_read_only"
    assert g.upstreams.route("find_email").read_only and not g.upstreams.route("send_email").read_only
    email = {"to": "a@b.example", "subject": "Hi", "body": "Your order shipped."}
    async with gw.http() as h:
        r = await h.post("/mcp", json=_call(21, "find_email", {"query": "invoice"}),
                         headers={**HDRS, "mcp-name": "find_email"})
        assert r.status_code == 200 and r.json()["result"]["structuredContent"] == {
            "result": "2 messages match 'invoice'"}, r.text
        rec = await gw.outcome(r.json()["result"]["_meta"][DECISION_META])
        assert rec["effect"] == "allow" and rec["extra"]["outcome"] == "forwarded"

        def fail(entry):
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(DecisionLogError("disk full"))
            return fut

        monkeypatch.setattr(gw.runtime.log, "submit", fail)
        gw.calls_file.write_text("")
        answers = {}
        for rid, (tool, args) in enumerate((("find_email", {"query": "refund"}), ("send_email", email)), 22):
            r = await h.post("/mcp", json=_call(rid, tool, args), headers={**HDRS, "mcp-name": tool})
            answers[tool] = r.json()
            assert "result" not in answers[tool], r.text
            assert answers[tool]["error"]["code"] == types.INTERNAL_ERROR
            assert "decision log is unavailable" in answers[tool]["error"]["message"]
    seen = [c["tool"] for c in gw.upstream_calls()]
    assert seen == ["find_email"]  # the read reached its server; the email was never sent
