"""Bad input and broken servers, with the real SDK on both sides: a streamable HTTP upstream that dies
mid-call, malformed JSON-RPC on the stdio transport, and the state a second replica must agree on (the
confirmation signing key by env reference; the one-release guard of an approval in Redis)."""

from __future__ import annotations

import asyncio
import json
import uuid

import anyio
import mcp_types as types
import pytest
from itsdangerous import BadSignature

from policyengine.mcpgate import ConfigError, McpGateway, McpSettings
from policyengine.mcpgate.server import DECISION_META
from policyengine.mcpgate.stdio import serve_stdio
from policyengine.state import RedisStateStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _pe(result: types.CallToolResult) -> dict:
    return (result.structured_content or {}).get("policyengine", {})


async def test_an_http_upstream_that_dies_mid_call_is_an_error_and_the_others_keep_serving(gw):
    async with gw.client() as c:
        assert not (await c.call_tool("post_entry", {"account": "cash", "amount": 1})).is_error
        dead = await c.call_tool("halt", {})  # the ledger's process exits while answering
        assert dead.is_error and _pe(dead)["outcome"] == "upstream_unavailable" and "'ledger'" in _text(dead)
        assert gw.ledger.proc.wait(10) == 3
        rec = await gw.outcome(_pe(dead)["decision_id"])
        assert rec["effect"] == "allow" and rec["extra"]["outcome"] == "upstream_unavailable"
        # the others keep serving, over HTTP and over stdio
        assert not (await c.call_tool("send_email", {"to": "a@b.example", "subject": "s", "body": "b"})).is_error
        assert not (await c.call_tool("lookup_order", {"order_id": "R1"})).is_error
        down = await c.call_tool("post_entry", {"account": "cash", "amount": 2})
        assert down.is_error and _pe(down)["outcome"] == "upstream_unavailable"
        await gw.ledger.start()  # the same server comes back on its port: the supervisor reconnects
        for _ in range(150):
            back = await c.call_tool("post_entry", {"account": "cash", "amount": 3})
            if not back.is_error:
                break
            assert _pe(back)["outcome"] == "upstream_unavailable"
            await asyncio.sleep(0.1)
    assert _text(back) == "posted 3 to cash"
    assert [x["tool"] for x in gw.upstream_calls()] == ["post_entry", "send_email", "lookup_order", "post_entry"]


class _Out:
    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.arrived = anyio.Event()

    async def write(self, text: str) -> None:
        self.lines.extend(json.loads(x) for x in text.splitlines() if x.strip())
        self.arrived.set()

    async def flush(self) -> None:
        pass


async def test_malformed_json_rpc_over_stdio_is_answered_and_the_connection_goes_on(gw):
    gw.gateway.stdio_principal = await gw.runtime.key_cache.lookup("pe_test_mcp_app_token_0123456789abcdef")
    send, receive = anyio.create_memory_object_stream[str](16)
    out = _Out()

    async def answer(line: str, rid) -> dict:
        start = len(out.lines)  # only what arrives after this line was sent
        out.arrived = anyio.Event()
        await send.send(line + "\n")
        with anyio.fail_after(20):
            while not any(m.get("id") == rid for m in out.lines[start:]):
                await out.arrived.wait()
                out.arrived = anyio.Event()
        return next(m for m in out.lines[start:] if m.get("id") == rid)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_stdio, gw.gateway, receive, out)
        parse = await answer('{"jsonrpc": "2.0", "method": ', None)
        assert parse["error"]["code"] == types.PARSE_ERROR
        odd = await answer('{"jsonrpc": "2.0", "id": 7, "params": 7}', 7)
        assert odd["error"]["code"] == types.INVALID_REQUEST
        also = await answer("[1, 2, 3]", None)
        assert also["error"]["code"] == types.INVALID_REQUEST
        # the same connection goes on, and so does the HTTP side
        call = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                "params": {"name": "lookup_order", "arguments": {"order_id": "S9"}, "_meta": META}}
        ok = await answer(json.dumps(call), 8)
        assert ok["result"]["isError"] is False and "order S9" in ok["result"]["content"][0]["text"]
        async with gw.client() as c:
            assert not (await c.call_tool("lookup_order", {"order_id": "S10"})).is_error
        await send.aclose()  # the client closes stdin: the connection ends
    assert ok["result"]["_meta"][DECISION_META]


async def test_the_confirmation_key_comes_from_the_environment_so_replicas_agree(gw, monkeypatch):
    monkeypatch.setenv("PE_T_MCP_CONFIRM_KEY", "k" * 40)
    settings = McpSettings(confirm_secret="env:PE_T_MCP_CONFIRM_KEY")
    a, b = McpGateway(gw.runtime, settings), McpGateway(gw.runtime, settings)  # two replicas
    state = a._state.dumps({"h": "hash", "k": "key"})
    assert b._state.loads(state, max_age=60) == {"h": "hash", "k": "key"}
    lone = McpGateway(gw.runtime, McpSettings())  # unset: a key of its own, nobody else verifies it
    with pytest.raises(BadSignature):
        lone._state.loads(state, max_age=60)
    with pytest.raises(ValueError, match="environment reference"):
        McpSettings(confirm_secret="k" * 40)  # never the secret itself
    monkeypatch.delenv("PE_T_MCP_CONFIRM_KEY")
    with pytest.raises(ConfigError, match="not set"):
        McpGateway(gw.runtime, settings)
    monkeypatch.setenv("PE_T_MCP_CONFIRM_KEY", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        McpGateway(gw.runtime, settings)


async def test_an_approval_releases_one_call_across_replicas_with_redis(gw, redis_url, monkeypatch):
    prefix = f"pe-test-mcp-{uuid.uuid4().hex[:8]}:"
    here, replica = RedisStateStore(redis_url, prefix=prefix), RedisStateStore(redis_url, prefix=prefix)
    monkeypatch.setattr(gw.runtime, "state", here)
    gw.gateway.settings.hold_wait_s = 0
    args = {"order_id": "G7", "amount": 300, "currency": "GBP"}
    try:
        async with gw.client() as c:
            approval_id = _pe(await c.call_tool("refund", args))["approval"]["approval_id"]
            await gw.approve_by_link(approval_id)
            done = await c.call_tool("refund", args, meta={"policyengine/approval_id": approval_id})
            assert not done.is_error
            # another replica (its own Redis client, the same prefix) sees the release
            assert await replica.get_counter(f"mcp-approval-used:{approval_id}") == 1
            again = await c.call_tool("refund", args, meta={"policyengine/approval_id": approval_id})
        assert again.is_error and "already released one call" in _text(again)
        assert [x["tool"] for x in gw.upstream_calls()] == ["refund"]
    finally:
        await here.aclose()
        await replica.aclose()
