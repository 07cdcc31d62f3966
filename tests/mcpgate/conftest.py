"""The MCP gateway on loopback: the policyengine service (uvicorn + create_app, SQLite) with the
gateway mounted at /mcp, in front of three MCP servers written with the official SDK (the shop over
stdio, a subprocess; the mail server over streamable HTTP in the test's process; the ledger over
streamable HTTP in a subprocess a test can kill and start again), and real `mcp.Client`s calling it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
import pytest_asyncio
import uvicorn
from helpers.net import free_port
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from policyengine.mcpgate import McpGateway, McpSettings, UpstreamSpec
from policyengine.mcpgate.http import mount
from policyengine.settings import SeedKey, Settings

HERE = Path(__file__).parent
POLICIES = HERE / "policies"
SHOP = HERE / "shop_server.py"
TOKENS = {
    "app": "pe_test_mcp_app_token_0123456789abcdef",
    "intern": "pe_test_mcp_intern_token_0123456789abc",
    "reviewer": "pe_test_mcp_reviewer_token_0123456789",
    "globex": "pe_test_mcp_globex_token_0123456789abc",
}


async def _serve(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    raise RuntimeError("server did not start")


async def _stop(server: uvicorn.Server, task: asyncio.Task) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 30)


class Ledger:
    """The ledger MCP server in its own process on a fixed port (`start` again after it died)."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port, self.env = port, env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SHOP), "ledger", str(self.port)], env=self.env,
                                     stderr=subprocess.DEVNULL)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the ledger server exited with {self.proc.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("the ledger server did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Gateway:
    url: str
    app: object
    gateway: McpGateway
    calls_file: Path
    ledger: Ledger

    @property
    def runtime(self):
        return self.app.state.runtime

    def upstream_calls(self) -> list[dict]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines() if line.strip()]

    def http(self, who: str = "app") -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {TOKENS[who]}"}, timeout=30)

    @contextlib.asynccontextmanager
    async def client(self, who: str = "app", **kw) -> AsyncIterator[Client]:
        """A real MCP client (the SDK's `Client`) on the gateway's streamable HTTP endpoint."""
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKENS[who]}"}, timeout=30)
        try:
            async with Client(streamable_http_client(self.url + "/mcp", http_client=http), **kw) as c:
                yield c
        finally:
            await http.aclose()

    async def outcome(self, decision_id: str) -> dict:
        """GET /v1/decisions/{id}: the decision row, with its outcome row (`outcome_row`, queued
        without waiting, so polled for)."""
        async with self.http() as c:
            for _ in range(200):
                r = await c.get(f"/v1/decisions/{decision_id}")
                assert r.status_code == 200, r.text
                rec = r.json()
                if "outcome_row" in rec:
                    rec["extra"] = {**rec["record"].get("extra", {}), **rec["outcome_row"]["record"]["extra"]}
                    return rec
                await asyncio.sleep(0.02)
        raise AssertionError(f"no outcome row for {decision_id}")

    async def pending_approvals(self) -> list[dict]:
        async with self.http("reviewer") as c:
            r = await c.get("/v1/approvals", params={"state": "pending"})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    async def approve_by_link(self, approval_id: str, decision: str = "approve", reason: str = "") -> None:
        """A reviewer opens the signed review link a notification carries, and decides there."""
        path = urlsplit(self.runtime.approvals.issue_link(approval_id, "email:rita@acme.example")).path
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            page = await c.get(path)
            assert page.status_code == 200, page.text
            done = await c.post(path, data={"decision": decision, "reason": reason})
        assert done.status_code == 200, done.text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory) -> AsyncIterator[Gateway]:
    """One service for the module (starting it, the upstreams and their SDK imports takes seconds)."""
    tmp = tmp_path_factory.mktemp("mcpgate")
    calls = tmp / "calls.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOP_CALLS", str(calls))
        from mcpgate.shop_server import mail_app

        mail, mail_task = await _serve(mail_app(), free_port())
        mail_url = f"http://127.0.0.1:{mail.config.port}/mcp"
        ledger = Ledger(free_port(), {**os.environ, "SHOP_CALLS": str(calls)})
        await ledger.start()
        for who, tok in TOKENS.items():
            mp.setenv(f"PE_T_MCP_{who.upper()}", tok)
        mp.setenv("POLICYENGINE_APPROVALS_LINK_SECRET", "test-link-secret-0123456789abcdef")
        seeds = [SeedKey(token_env="PE_T_MCP_APP", tenant="acme", roles=["app"], subject="support-agent"),
                 SeedKey(token_env="PE_T_MCP_INTERN", tenant="acme", roles=["app"], subject="intern-agent",
                         attributes={"actor_role": "intern"}),
                 SeedKey(token_env="PE_T_MCP_GLOBEX", tenant="globex", roles=["app"], subject="globex-agent"),
                 SeedKey(token_env="PE_T_MCP_REVIEWER", tenant="acme", roles=["reviewer"], subject="rita@acme",
                         groups=["refunds", "legal"])]
        settings = Settings(database_url=f"sqlite:///{tmp / 'pe.db'}", policy_path=[str(POLICIES)],
                            seed_keys=seeds, key_cache_ttl_s=0)
        from policyengine.api import create_app

        app = create_app(settings)
        mcp_settings = McpSettings(
            upstreams=[UpstreamSpec(name="shop", kind="stdio", command=[sys.executable, str(SHOP)],
                                    env={"SHOP_CALLS": str(calls)}),
                       UpstreamSpec(name="mail", kind="http", url=mail_url),
                       UpstreamSpec(name="ledger", kind="http", url=ledger.url)],
            hold_wait_s=10, progress_every_s=0.05)
        gateway = McpGateway(app.state.runtime, mcp_settings)
        mount(app, gateway)
        port = free_port()
        server, task = await _serve(app, port)
        try:
            yield Gateway(f"http://127.0.0.1:{port}", app, gateway, calls, ledger)
        finally:
            await _stop(server, task)
            await _stop(mail, mail_task)
            ledger.stop()


@pytest.fixture
def gw(gateway: Gateway) -> Gateway:
    """The module's gateway, reset for the test: the default wait, the fast path on, no upstream call seen yet."""
    gateway.gateway.settings.hold_wait_s = 10
    gateway.gateway.settings.fast_path = True
    gateway.calls_file.write_text("")
    return gateway
