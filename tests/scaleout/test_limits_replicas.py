"""Limits and budgets on two `policyengine serve` replicas sharing the real Redis and PostgreSQL.

  * 200 concurrent requests, spread over both replicas, against a limit that allows exactly N:
    exactly N succeed, for a request limit and for a money budget (reserve, then settle);
  * a streamed call is charged (its cost is in the shared counters, read on the other replica);
  * at a budget with `at 100% prefer self_hosted`, the next request goes to the cost-0 model;
  * a short window rolls over.

Skips with the reason when PostgreSQL or Redis is absent. Isolation: a fresh schema; model names
and the tenant carry this run's id (the counters' Redis keys are named after the tenant and are
deleted afterwards).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from policyengine.demo import ServiceProcess
from policyengine.demo.cluster import LocalCluster
from policyengine.simulate.server import SimServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

N = 20
# 100 words: with max_tokens 40 the simulated model answers exactly 40 tokens, its prompt is 3 tokens
ANSWER = " ".join(f"w{i}" for i in range(100))
MSG = [{"role": "user", "content": "Hello there."}]


@dataclass
class Cluster:
    a: ServiceProcess
    b: ServiceProcess
    paid: SimServer
    free: SimServer
    names: dict[str, str]
    token: str

    @property
    def replicas(self) -> tuple[ServiceProcess, ServiceProcess]:
        return self.a, self.b


def _policy(paid: str, free: str) -> str:
    # estimate per request: 4 prompt tokens (3 + 4 per message, rounded up) + max_tokens 40 = 44 tokens
    # = 0.044 GBP at 1 GBP per 1k; the answer costs 43 tokens = 0.043 GBP. A budget of N x 0.044 GBP
    # admits N reservations; what settling gives back (N x 0.001) never makes room for one more.
    return f"""
policy "limits-scaleout" version 1
model {paid} {{ provider vllm base_url env("LS_PAID_URL") cost 1 GBP per 1k tokens }}
model {free} {{ provider vllm base_url env("LS_FREE_URL") cost 0 }}

route default -> {paid}
route when use_case == "rate" -> {free}
route when use_case == "reroute" -> {paid} fallback [{free}]
authorize chat

limit requests {N} per hour per tenant when use_case == "rate"
budget {Decimal("0.044") * N} GBP per day per tenant, use_case when use_case == "budget"
budget 10 GBP per day per tenant, use_case when use_case == "stream"
budget 0.05 GBP per day per tenant, use_case when use_case == "reroute" {{
  at 100% prefer self_hosted
}}
limit requests 2 per 2s per tenant, use_case when use_case == "roll"
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Cluster]:
    run = uuid.uuid4().hex[:8]
    names = {"paid": f"paid-{run}", "free": f"free-{run}", "tenant": f"lim-{run}"}
    paid = SimServer(names["paid"], flavour="vllm", answer=ANSWER)
    free = SimServer(names["free"], flavour="vllm", answer=ANSWER)
    for sim in (paid, free):
        await sim.start()
    d = tmp_path_factory.mktemp("limits-scaleout")
    (d / "policies").mkdir()
    (d / "policies" / "limits.policy").write_text(_policy(names["paid"], names["free"]))
    token = "ls-app-" + secrets.token_urlsafe(20)
    seed = [{"token_env": "LS_APP_TOKEN", "tenant": names["tenant"], "roles": ["admin"], "subject": "agent-1"}]
    lc = LocalCluster(postgres_url=postgres_url, redis_url=redis_url, policy_dir=d / "policies", workdir=d,
                      replicas=2, seed_keys=seed, run=run,
                      env={"LS_APP_TOKEN": token, "LS_PAID_URL": paid.url, "LS_FREE_URL": free.url})
    try:
        await lc.start(timeout=120)
        a, b = lc.replicas
        yield Cluster(a, b, paid, free, names, token)
    finally:
        await lc.stop()
        for sim in (paid, free):
            await sim.stop()


async def _chat(client: httpx.AsyncClient, c: Cluster, replica: ServiceProcess, use_case: str,
                **kw: object) -> httpx.Response:
    return await client.post(f"{replica.url}/v1/chat/completions",
                             headers={"Authorization": f"Bearer {c.token}", "X-PolicyEngine-Use-Case": use_case},
                             json={"model": "auto", "messages": MSG, "max_tokens": 40, **kw})


async def _usage(client: httpx.AsyncClient, c: Cluster, replica: ServiceProcess, use_case: str) -> list[dict]:
    r = await client.get(f"{replica.url}/v1/usage", headers={"Authorization": f"Bearer {c.token}"})
    assert r.status_code == 200, r.text
    return [u for u in r.json()["counters"] if f"use_case={use_case}" in u["scope"] or
            (use_case == "rate" and u["kind"] == "requests" and u["window"] == "hour")]


async def _settled(client: httpx.AsyncClient, c: Cluster, replica: ServiceProcess, use_case: str) -> list[dict]:
    """`_usage` once nothing is reserved any more: a replica sends a settlement that only gives back
    with its next reservation or within 50 ms (one Redis round trip per request), so a read
    through the other replica converges within that delay."""
    for _ in range(100):
        got = await _usage(client, c, replica, use_case)
        if got and all(u["reserved"] in ("0", f"0 {u['limit'].split()[-1]}") for u in got):
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"still reserved after 2 s: {got}")


async def _burst(c: Cluster, use_case: str, n: int = 200) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return list(await asyncio.gather(*(_chat(client, c, c.replicas[i % 2], use_case) for i in range(n))))


async def test_200_concurrent_requests_against_a_request_limit_of_n(cluster: Cluster) -> None:
    rs = await _burst(cluster, "rate")
    codes = [r.status_code for r in rs]
    assert codes.count(200) == N and codes.count(429) == 200 - N, sorted(set(codes))
    refused = next(r for r in rs if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # the count is shared, not per replica: each replica refuses the next one
    async with httpx.AsyncClient(timeout=60) as client:
        after = [await _chat(client, cluster, replica, "rate") for replica in cluster.replicas]
    assert [r.status_code for r in after] == [429, 429]


async def test_200_concurrent_requests_against_a_budget_of_n(cluster: Cluster) -> None:
    rs = await _burst(cluster, "budget")
    codes = [r.status_code for r in rs]
    assert codes.count(200) == N and codes.count(429) == 200 - N, sorted(set(codes))
    assert next(r for r in rs if r.status_code == 429).json()["error"]["type"] == "insufficient_quota"
    async with httpx.AsyncClient(timeout=30) as client:
        [u] = await _settled(client, cluster, cluster.b, "budget")
    # every admitted request settled at its real cost (43 tokens at 1 GBP / 1k); nothing is left reserved
    assert Decimal(u["used"].split()[0]) == Decimal("0.043") * N and u["reserved"] == "0 GBP"
    assert Decimal(u["used"].split()[0]) <= Decimal("0.044") * N


async def test_a_streamed_call_is_charged(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", f"{cluster.a.url}/v1/chat/completions",
                                 headers={"Authorization": f"Bearer {cluster.token}",
                                          "X-PolicyEngine-Use-Case": "stream"},
                                 json={"model": "auto", "messages": MSG, "max_tokens": 40, "stream": True}) as r:
            assert r.status_code == 200
            body = "".join([x async for x in r.aiter_text()])
        assert "[DONE]" in body
        [u] = await _settled(client, cluster, cluster.b, "stream")  # read through the other replica
    assert u["used"] == "0.043 GBP" and u["reserved"] == "0 GBP"


async def test_cost_0_reroute_at_the_budget(cluster: Cluster) -> None:
    paid, free = cluster.names["paid"], cluster.names["free"]
    async with httpx.AsyncClient(timeout=60) as client:
        first = await _chat(client, cluster, cluster.a, "reroute")
        second = await _chat(client, cluster, cluster.b, "reroute")
    assert first.status_code == 200 and first.headers["x-policyengine-model"] == paid
    assert second.status_code == 200 and second.headers["x-policyengine-model"] == free, second.text


async def test_a_short_window_rolls_over(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        # start right after a window boundary (2 s windows aligned to the epoch)
        await asyncio.sleep(2 - time.time() % 2 + 0.05)
        codes = [(await _chat(client, cluster, r, "roll")).status_code for r in (*cluster.replicas, cluster.a)]
        assert codes == [200, 200, 429]
        await asyncio.sleep(2 - time.time() % 2 + 0.05)
        assert (await _chat(client, cluster, cluster.b, "roll")).status_code == 200
