"""`policyengine mcp --transport stdio`, as a desktop agent starts it: the real SDK `Client` launches the
command and talks MCP on its stdin/stdout; the gateway launches the shop server behind it the same way."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mcp_types as types
import pytest
from helpers.net import free_port
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from mcpgate.conftest import POLICIES, SHOP

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pe_test_mcp_stdio_token_0123456789abcd"

pytestmark = pytest.mark.slow


async def test_a_desktop_agent_reaches_the_tools_through_the_stdio_gateway(tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(json.dumps({
        "database_url": f"sqlite:///{tmp_path / 'pe.db'}", "policy_path": [str(POLICIES)], "port": free_port(),
        "seed_keys": [{"token_env": "PE_T_MCP_DESK", "tenant": "acme", "roles": ["app"], "subject": "desk"}],
    }))
    calls = tmp_path / "calls.jsonl"
    config = tmp_path / "mcp.yaml"  # the upstream from a config file, with the environment it is started with
    config.write_text(json.dumps({"upstreams": {"shop": {"command": f"{sys.executable} {SHOP}",
                                                         "env": {"SHOP_CALLS": str(calls)}}},
                                  "hold_wait_s": 0}))
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)), "PATH": os.environ.get("PATH", ""),
           "HOME": str(tmp_path), "PE_T_MCP_DESK": TOKEN, "POLICYENGINE_MCP_KEY": TOKEN, "SHOP_CALLS": str(calls),
           "POLICYENGINE_APPROVALS_LINK_SECRET": "test-link-secret-0123456789abcdef", "HF_HUB_OFFLINE": "1"}
    cmd = StdioServerParameters(command=sys.executable, env=env, args=[
        "-c", "from policyengine.cli import app; app()",
        "mcp", "--transport", "stdio", "--settings", str(settings),
        "--config", str(config)])
    async with Client(cmd, read_timeout_seconds=60) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == {"lookup_order", "refund", "pack_order", "crash"}  # delete_account: denied whatever its arguments
        ok = await c.call_tool("lookup_order", {"order_id": "S1"})
        assert not ok.is_error and "order S1" in ok.content[0].text
        denied = await c.call_tool("delete_account", {"user": "u-1"})
        assert denied.is_error and isinstance(denied.content[0], types.TextContent)
        assert "denied" in denied.content[0].text
    assert [json.loads(x)["tool"] for x in calls.read_text().splitlines()] == ["lookup_order"]
