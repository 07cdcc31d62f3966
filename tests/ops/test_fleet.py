"""GET /v1/fleet and `policyengine fleet` against a real service: admin only, cooldowns and breakers
listed with their reasons, cleared by an admin; the attempts header says why."""

from __future__ import annotations

import asyncio
import json

import pytest
from api.conftest import running_service
from typer.testing import CliRunner

from policyengine.cli import app
from policyengine.simulate.faults import Fault
from policyengine.state import BreakerConfig

pytestmark = pytest.mark.timeout(60)

MSG = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture
async def service(tmp_path, monkeypatch):
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch) as svc:
        yield svc


def _deployment(fleet: dict, model: str) -> dict:
    m = next(m for m in fleet["models"] if m["name"] == model)
    return m["deployments"][0]


async def test_fleet_lists_cooldowns_and_breakers_and_an_admin_clears_them(service):
    service.sims["qwen-72b"].expire_key("qk1")
    service.sims["kimi-large"].add_fault(Fault(kind="error", status=500, times=None))
    async with service.client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert r.status_code == 200
        # the expired first key failed over to the second, and the header says why
        assert "qwen-72b#PE_T_QWEN_KEY_1:401:failover:auth_" in r.headers["x-policyengine-attempts"]
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert "qwen-72b#PE_T_QWEN_KEY_1:skipped:cooldown:auth_" in r.headers["x-policyengine-attempts"]
    rt = service.runtime
    for _ in range(3):
        await rt.state.breaker_failure("kimi-large", BreakerConfig())
    for who in ("app", "reviewer", "other"):
        async with service.client(who) as c:
            assert (await c.get("/v1/fleet")).status_code == 403
            assert (await c.post("/v1/fleet/breakers/reset", json={"state_id": "kimi-large"})).status_code == 403
    async with service.client("admin") as c:
        fleet = (await c.get("/v1/fleet")).json()
        q = _deployment(fleet, "qwen-72b")
        assert q["keys"] == ["PE_T_QWEN_KEY_1", "PE_T_QWEN_KEY_2"] and q["status"] == "available"
        assert [cd["scope"] for cd in q["cooldowns"]] == ["key:qwen-72b/PE_T_QWEN_KEY_1"]
        assert q["cooldowns"][0]["reason"].startswith("auth_") and q["cooldowns"][0]["remaining_s"] > 0
        assert q["base_url"].startswith("env(PE_T_QWEN_URL) = http://127.0.0.1:") and "/v1" not in q["base_url"]
        assert q["ewma_ms"] is not None
        k = _deployment(fleet, "kimi-large")
        assert k["status"] == "breaker_open" and k["breaker"]["failures"] == 3
        # a typo is a 404 naming what exists, not a silent no-op
        r = await c.post("/v1/fleet/cooldowns/clear", json={"scope": "model:qwen-27b"})
        assert r.status_code == 404 and "qwen-72b" in r.json()["error"]["message"]
        r = await c.post("/v1/fleet/cooldowns/clear", json={"scope": "key:qwen-72b/NOPE"})
        assert r.status_code == 404
        assert (await c.post("/v1/fleet/cooldowns/clear", json={"nope": 1})).status_code == 422
        r = await c.post("/v1/fleet/cooldowns/clear", json={"scope": "key:qwen-72b/PE_T_QWEN_KEY_1"})
        assert r.status_code == 200 and r.json()["cleared"] is True
        assert _deployment((await c.get("/v1/fleet")).json(), "qwen-72b")["cooldowns"] == []


async def test_fleet_cli_status_json_and_reset(service, monkeypatch):
    rt = service.runtime
    for _ in range(3):
        await rt.state.breaker_failure("kimi-large", BreakerConfig())
    runner = CliRunner()
    env = {"PE_ADMIN": service.tokens["admin"], "PE_APP": service.tokens["app"]}

    def cli(*args: str):
        return runner.invoke(app, ["fleet", "--url", service.url, *args], env=env)

    res = await asyncio.to_thread(cli, "--key-env", "PE_ADMIN", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert _deployment(data, "kimi-large")["status"] == "breaker_open"
    res = await asyncio.to_thread(cli, "--key-env", "PE_ADMIN", "status")
    assert res.exit_code == 0 and "kimi-large" in res.output
    assert "…" not in res.output  # at 80 columns the cells fold; no id is cut
    res = await asyncio.to_thread(cli, "--key-env", "PE_APP", "reset-breaker", "kimi-large")
    assert res.exit_code == 1 and "403" in res.output
    res = await asyncio.to_thread(cli, "--key-env", "PE_ADMIN", "reset-breaker", "kimi-large")
    assert res.exit_code == 0 and "was open" in res.output, res.output
    assert (await rt.state.breaker("kimi-large")).state == "closed"
    res = await asyncio.to_thread(cli, "--key-env", "PE_UNSET_VAR", "status")
    assert res.exit_code == 2 and "PE_UNSET_VAR" in res.output
