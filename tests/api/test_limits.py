"""Limits and budgets through the real service (one process, in-memory counters): 429 + Retry-After in
OpenAI's shape, cost on every outcome row (plain and streamed, counted when the upstream gives no usage),
a reroute to cost-0 models at a budget, an approval for the overage, /v1/usage, the metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.asyncio

POLICY = '''policy "limits-test" version 1
model qwen-72b {
  provider openai
  base_url env("PE_T_QWEN_URL")
  keys [env("PE_T_QWEN_KEY_1")]
  cost 1 GBP per 1k tokens
}
model gemma-27b { provider openai base_url env("PE_T_GEMMA_URL") cost 0 }
model kimi-large { provider openai base_url env("PE_T_KIMI_URL") cost 2 GBP per 1k tokens }

route default -> qwen-72b
route when use_case == "budget" -> kimi-large fallback [gemma-27b]
route when use_case == "approve" -> kimi-large
authorize chat

limit requests 3 per minute per user when use_case == "rate"
budget 0.2 GBP per day per tenant on model kimi-large when use_case == "budget" {
  at 50% notify webhook "https://hooks.example.com/budget"
  at 100% prefer self_hosted
}
budget 0.1 GBP per day per tenant, use_case when use_case == "approve" {
  at 100% require approval group "finance"
}
'''

MSG = [{"role": "user", "content": "Hello there."}]


@pytest.fixture
def limits_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pol"
    d.mkdir()
    (d / "limits.policy").write_text(POLICY)
    return d


async def _chat(c, use_case: str, **kw):
    return await c.post("/v1/chat/completions", headers={"X-PolicyEngine-Use-Case": use_case,
                                                         "X-PolicyEngine-Actor": "bob"},
                        json={"model": "auto", "messages": MSG, "max_tokens": 40, **kw})


async def _outcome(svc, decision_id: str) -> dict:
    """The decision once its outcome row (written after the answer) is in the log."""
    async with svc.client() as c:
        for _ in range(100):
            r = await c.get(f"/v1/decisions/{decision_id}")
            assert r.status_code == 200, r.text
            if "outcome_row" in r.json():
                # the outcome row's extra (usage, cost, limits) and the decision row's record
                return {"extra": r.json()["outcome_row"]["record"]["extra"], "decision": r.json()["record"]}
            await asyncio.sleep(0.05)
    raise AssertionError(f"no outcome row for {decision_id}")


async def test_rate_limit_is_a_429_with_retry_after_and_cost_is_recorded(service_factory, limits_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=limits_dir) as svc:
        async with svc.client() as c:
            ok = [await _chat(c, "rate") for _ in range(3)]
            refused = await _chat(c, "rate")
            other_user = await c.post("/v1/chat/completions", headers={"X-PolicyEngine-Use-Case": "rate",
                                                                       "X-PolicyEngine-Actor": "alice"},
                                      json={"model": "auto", "messages": MSG, "max_tokens": 40})
        assert [r.status_code for r in ok] == [200, 200, 200]
        assert other_user.status_code == 200  # counted per user
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        err = refused.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert err["limit"]["kind"] == "requests" and err["limit"]["scope"] == "user=bob"
        row = await _outcome(svc, ok[0].headers["x-policyengine-decision-id"])
        extra = row["extra"]
        assert extra["usage_source"] == "upstream" and extra["usage"]["total_tokens"] > 0
        # 1 GBP per 1k tokens
        assert extra["cost"]["currency"] == "GBP"
        assert float(extra["cost"]["amount"]) == pytest.approx(extra["usage"]["total_tokens"] / 1000)
        assert extra["limits"]["counters"][0]["charged"] == "1"
        async with svc.client("admin") as c:
            usage = (await c.get("/v1/usage")).json()
            metrics = (await c.get("/metrics")).text
        counters = [u for u in usage["counters"] if u["rule_id"] == "limits.policy:16" and u["scope"] == "user=bob"]
        assert counters and counters[0]["used"] == "3" and counters[0]["remaining"] == "0"
        # an app key reads its own tenant only: another tenant's counters are a 403 that says why
        async with svc.client("app") as c:
            own = await c.get("/v1/usage")
            other = await c.get("/v1/usage", params={"tenant": "someone-else"})
        assert own.status_code == 200 and own.json()["tenant"] != "someone-else"
        assert other.status_code == 403 and other.json()["error"]["code"] == "tenant_mismatch"
        assert "not this key's tenant" in other.json()["error"]["message"]
        assert 'policyengine_limit_checks_total{outcome="exceeded"} 1.0' in metrics
        assert "policyengine_spend_total" in metrics
        # the CLI reads the same endpoint (`policyengine usage --json`), with the key from the environment
        from typer.testing import CliRunner

        from policyengine.cli import app as cli

        res = await asyncio.to_thread(CliRunner().invoke, cli, ["usage", "--json", "--url", svc.url],
                                      env={"POLICYENGINE_API_KEY": svc.tokens["app"]})
        assert res.exit_code == 0, res.output
        assert {u["scope"] for u in json.loads(res.output)["counters"]} >= {"user=bob", "user=alice"}
        table = await asyncio.to_thread(CliRunner().invoke, cli, ["usage", "--url", svc.url],
                                        env={"POLICYENGINE_API_KEY": svc.tokens["app"], "COLUMNS": "200"})
        assert table.exit_code == 0 and "user=bob" in table.output


async def test_budget_reroutes_to_cost_0_and_notifies_once(service_factory, limits_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=limits_dir) as svc:
        sent = []

        class Sender:
            async def send(self, kind, target, payload, *, key=None):
                sent.append((kind, target, payload))
                return {}

        svc.runtime.limit_sender = Sender()
        async with svc.client() as c:
            # 44 tokens estimated x 2 GBP/1k = 0.088 GBP: two fit in 0.2 GBP, the third is rerouted
            rs = [await _chat(c, "budget") for _ in range(4)]
        models = [r.headers["x-policyengine-model"] for r in rs]
        assert all(r.status_code == 200 for r in rs), [r.text for r in rs]
        assert models[:2] == ["kimi-large", "kimi-large"] and models[2:] == ["gemma-27b", "gemma-27b"]
        await asyncio.sleep(0.1)
        assert len(sent) == 1 and sent[0][0] == "webhook" and sent[0][2]["percent"] == 50
        row = await _outcome(svc, rs[2].headers["x-policyengine-decision-id"])
        assert any(h["kind"] == "limit" for h in row["decision"]["rules"])
        assert row["extra"]["cost"]["amount"] == "0"


async def test_streamed_call_without_usage_is_counted(service_factory, limits_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=limits_dir) as svc:
        async with svc.client() as c, c.stream(
                "POST", "/v1/chat/completions", headers={"X-PolicyEngine-Use-Case": "plain"},
                json={"model": "auto", "messages": MSG, "stream": True}) as r:
                assert r.status_code == 200
                body = "".join([x async for x in r.aiter_text()])
                did = r.headers["x-policyengine-decision-id"]
        assert "[DONE]" in body
        row = await _outcome(svc, did)
        extra = row["extra"]
        assert extra["stream"] is True and extra["usage"]["total_tokens"] > 0
        assert extra["usage_source"] == "upstream"  # the final chunk's usage
        assert float(extra["cost"]["amount"]) > 0
        # a simulated upstream that sends no usage chunk: the row says the tokens were counted
        svc.sims["qwen-72b"].omit_usage = True
        async with svc.client() as c, c.stream(
                "POST", "/v1/chat/completions", headers={"X-PolicyEngine-Use-Case": "plain"},
                json={"model": "auto", "messages": MSG, "stream": True}) as r:
                _ = "".join([x async for x in r.aiter_text()])
                did = r.headers["x-policyengine-decision-id"]
        row = await _outcome(svc, did)
        assert row["extra"]["usage_source"] == "counted" and row["extra"]["usage"]["completion_tokens"] > 0


async def test_over_budget_requires_approval(service_factory, limits_dir, tmp_path):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=limits_dir) as svc:
        async with svc.client() as c:
            first = await _chat(c, "approve")  # 0.088 GBP of 0.1
            held = await _chat(c, "approve")
        assert first.status_code == 200
        assert held.status_code == 409, held.text
        assert held.json()["error"]["code"] == "approval_required"


OUTAGE = '''policy "outage-test" version 1
model qwen-72b { provider openai base_url env("PE_T_QWEN_URL") keys [env("PE_T_QWEN_KEY_1")] cost 1 GBP per 1k tokens }
route default -> qwen-72b
authorize chat
limit requests 100 per minute per user when use_case == "open"
budget 10 GBP per day per tenant when use_case == "closed"
budget 10 GBP per day per tenant when use_case == "opened" { on outage fail open }
'''


async def test_redis_outage_fails_open_or_closed_per_limit(service_factory, tmp_path):
    d = tmp_path / "outage"
    d.mkdir()
    (d / "outage.policy").write_text(OUTAGE)
    # nothing listens on port 1: every reservation fails at once
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=d,
                               limits_redis_url="redis://127.0.0.1:1/0") as svc:
        async with svc.client() as c:
            rate = await _chat(c, "open")  # a rate limit fails open by default
            budget = await _chat(c, "closed")  # a budget fails closed by default
            opened = await _chat(c, "opened")  # unless it says `on outage fail open`
            usage = await c.get("/v1/usage")
        assert rate.status_code == 200 and opened.status_code == 200
        assert budget.status_code == 503, budget.text
        assert budget.json()["error"]["code"] == "limits_unavailable"
        assert usage.status_code == 503
        row = await _outcome(svc, rate.headers["x-policyengine-decision-id"])
        assert row["extra"]["limits"] == {"mode": "failed_open"} and float(row["extra"]["cost"]["amount"]) > 0
