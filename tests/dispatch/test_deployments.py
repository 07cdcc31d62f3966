"""Deployments behind one model: balancing, drain on reclaim, health checks, hedging (real servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio

import pytest

from policyengine.dispatch.balance import Balancer, targets_of
from policyengine.simulate import SimServer
from policyengine.state import model_scope
from policyengine.types import Deployment, ModelSpec, Provider, Routing

from .conftest import USER

pytestmark = pytest.mark.timeout(60)


def _spec(servers: list[SimServer], **kw) -> ModelSpec:
    deps = tuple(Deployment(name=f"d{i}", base_url=s.url) for i, s in enumerate(servers))
    return ModelSpec(name="m", provider=Provider.vllm, model_id=servers[0].served_model, deployments=deps, **kw)


@pytest.fixture
async def three():
    servers = [SimServer("m") for _ in range(3)]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


def test_strategies_order_unit() -> None:
    spec = ModelSpec(name="m", provider=Provider.vllm, deployments=(
        Deployment(name="a", base_url="http://127.0.0.1:1/v1", weight=9), Deployment(name="b", base_url="http://127.0.0.1:2/v1", weight=1)))
    tg = targets_of(spec)
    b = Balancer()
    firsts = [b.order("weighted", tg)[0].deployment for _ in range(2000)]
    assert 0.85 < firsts.count("a") / 2000 < 0.95
    b.finished(tg[0].state_id, 500.0)
    b.finished(tg[1].state_id, 5.0)
    assert all(b.order("latency", tg)[0].deployment == "b" for _ in range(50))
    b.started(tg[1].state_id)
    b.started(tg[1].state_id)
    assert b.order("least_outstanding", tg)[0].deployment == "a"
    assert b.order("weighted", tg, sticky="b")[0].deployment == "b"


async def test_reclaim_mid_traffic_loses_no_request(three, make_dispatcher) -> None:
    d = make_dispatcher([_spec(three, balance="least_outstanding")])
    routing = Routing(chain=["m"])
    ok = 0

    async def one() -> None:
        nonlocal ok
        r = await d.complete(USER, routing)
        ok += r.model == "m"

    await asyncio.gather(*(one() for _ in range(20)))
    three[1].down(30)  # Spot reclaim: connections refused / reset
    await asyncio.gather(*(one() for _ in range(40)))
    assert ok == 60
    cd = await d.state.get_cooldown(model_scope("m@d1"))
    assert cd is not None and cd.reason.startswith("drained:")


async def test_health_check_removes_and_restores(three, make_dispatcher) -> None:
    from policyengine.dispatch.health import HEALTH_REASON, HealthMonitor

    d = make_dispatcher([_spec(three)])
    mon = HealthMonitor(d, interval=5.0, timeout=0.5)
    three[2].down(0.6)
    res = await mon.check_all()
    assert res == {"m@d0": True, "m@d1": True, "m@d2": False}
    assert (await d.state.get_cooldown(model_scope("m@d2"))).reason == HEALTH_REASON
    for _ in range(10):
        r = await d.complete(USER, Routing(chain=["m"]))
        assert r.attempts[-1].deployment != "d2"
    await asyncio.sleep(0.8)
    assert (await mon.check_all())["m@d2"] is True
    assert await d.state.get_cooldown(model_scope("m@d2")) is None


async def test_hedge_takes_the_faster_and_cancels_the_other(make_dispatcher) -> None:
    slow, fast = SimServer("m", latency=1.5), SimServer("m")
    await slow.start()
    await fast.start()
    try:
        spec = ModelSpec(name="m", provider=Provider.vllm, deployments=(
            Deployment(name="slow", base_url=slow.url, weight=1000), Deployment(name="fast", base_url=fast.url, weight=0.001)))
        d = make_dispatcher([spec])
        d.hedges.burst = 100
        routing = Routing(chain=["m"], hedge_after=0.1, hedge_budget=1.0)
        d.hedges.on_request(None, 1.0)  # one hedge in the bucket before the first request
        r = await d.complete(USER, routing)
        assert r.attempts[-1].reason == "hedge_cancelled" and r.attempts[-1].deployment == "slow"
        assert [a.deployment for a in r.attempts if a.status == 200] == ["fast"]
        assert r.latency_ms < 1000
    finally:
        await slow.stop()
        await fast.stop()


async def test_hedge_budget_bounds_extra_requests(make_dispatcher) -> None:
    slow, fast = SimServer("m", latency=0.3), SimServer("m")
    await slow.start()
    await fast.start()
    try:
        spec = ModelSpec(name="m", provider=Provider.vllm, deployments=(
            Deployment(name="slow", base_url=slow.url, weight=1000), Deployment(name="fast", base_url=fast.url, weight=0.001)))
        d = make_dispatcher([spec])
        routing = Routing(chain=["m"], hedge_after=0.05, hedge_budget=0.2)
        await asyncio.gather(*(d.complete(USER, routing) for _ in range(20)))
        c = d.hedges.counts()["-:0.2"]
        assert c["requests"] == 20 and c["hedges"] <= 0.2 * 20 + d.hedges.burst
        assert len(fast.seen()) == c["hedges"]
    finally:
        await slow.stop()
        await fast.stop()


async def test_sticky_session_pins_deployment(three, make_dispatcher) -> None:
    d = make_dispatcher([_spec(three)])
    routing = Routing(chain=["m"], sticky=True)
    first = await d.complete(USER, routing, session_id="s1")
    dep = first.attempts[-1].deployment
    for _ in range(8):
        r = await d.complete(USER, routing, session_id="s1")
        assert r.attempts[-1].deployment == dep


@pytest.mark.redis
async def test_redis_shares_drain_across_replicas(three, make_dispatcher, redis_url) -> None:
    import uuid

    from policyengine.state.redis_store import RedisStateStore

    prefix = f"pe-test-{uuid.uuid4().hex[:8]}:"
    s1, s2 = RedisStateStore(redis_url, prefix=prefix), RedisStateStore(redis_url, prefix=prefix)
    try:
        # round-robin: six requests reach d0 twice (a weighted draw missed it in 9% of runs)
        d1 = make_dispatcher([_spec(three, balance="round_robin")], state=s1)
        d2 = make_dispatcher([_spec(three, balance="round_robin")], state=s2)
        three[0].down(30)
        for _ in range(6):
            await d1.complete(USER, Routing(chain=["m"]))
        assert (await s2.get_cooldown(model_scope("m@d0"))) is not None
        for _ in range(6):
            r = await d2.complete(USER, Routing(chain=["m"]))
            assert all(a.deployment != "d0" or a.skipped for a in r.attempts)
    finally:
        await s1.aclose()
        await s2.aclose()


async def _reclaim_in_flight(make_dispatcher, gone_url: str, seen, reclaim) -> None:
    """Ten requests in flight on deployment `gone` (six plain ones it never answers, two streams
    with headers and the role chunk sent but no token, two with nothing sent yet), then
    `reclaim()`: every one must be answered in full by deployment `ok`, invisibly to the client.
    `seen()` counts the chat requests `gone` has received."""
    ok = SimServer("m")
    await ok.start()
    try:
        spec = ModelSpec(name="m", provider=Provider.vllm, deployments=(
            Deployment(name="gone", base_url=gone_url, weight=1e6), Deployment(name="ok", base_url=ok.url, weight=1e-6)))
        # long attempt budgets: the in-flight requests must fail because the server went away, not time out
        d = make_dispatcher([spec], attempt_timeout=20.0, first_token_timeout=20.0, deadline=30.0)
        routing = Routing(chain=["m"])

        async def plain() -> str:
            return (await d.complete(USER, routing)).response["choices"][0]["message"]["content"]

        async def stream() -> tuple[str, list]:
            s = d.stream({**USER, "stream": True}, routing)
            text = []
            async for ch in s:
                assert "error" not in ch, ch
                for c in ch.get("choices") or ():
                    text.append((c.get("delta") or {}).get("content") or "")
            return "".join(text), s.result.attempts

        tasks = [asyncio.ensure_future(plain()) for _ in range(6)] + [asyncio.ensure_future(stream()) for _ in range(4)]
        async with asyncio.timeout(15):
            while await seen() < 10:  # all ten requests are in flight on `gone`
                await asyncio.sleep(0.02)
        assert len(ok.seen()) == 0 and not any(t.done() for t in tasks)
        await reclaim()
        async with asyncio.timeout(15):
            results = await asyncio.gather(*tasks)
        answer = ok.answer
        assert list(results[:6]) == [answer] * 6
        for text, attempts in results[6:]:
            assert text == answer  # one whole answer, no duplicated or lost prefix
            failed = [a for a in attempts if a.deployment == "gone" and not a.skipped]
            assert failed and all(a.error_class == "failover" for a in failed), attempts
            assert attempts[-1].deployment == "ok" and attempts[-1].status == 200
        assert len(ok.seen()) == 10
        # drained for every replica: the next request does not even try it
        assert (await d.state.get_cooldown(model_scope("m@gone"))).reason.startswith("drained:")
        r = await d.complete(USER, routing)
        assert [a.deployment for a in r.attempts if not a.skipped] == ["ok"]
    finally:
        await ok.stop()


_FAULTS = [{"kind": "hang", "times": None, "only_stream": False},  # plain requests: accepted, never answered
           {"kind": "slow_first_token", "times": 2, "delay": 30.0, "only_stream": True}]  # two streams: no headers yet


async def test_reclaim_with_requests_in_flight_loses_none(make_dispatcher) -> None:
    """The server shut down (listener closed, every open connection dropped) mid-traffic."""
    gone = SimServer("m", chunk_delay=30.0)  # a stream sends its role chunk, then waits before the first token
    await gone.start()
    for f in _FAULTS:
        gone.add_fault(f["kind"], **{k: v for k, v in f.items() if k != "kind"})

    async def seen() -> int:
        return len(gone.seen())

    try:
        await _reclaim_in_flight(make_dispatcher, gone.url, seen, gone.stop)
    finally:
        await gone.stop()


async def test_spot_reclaim_kill_9_loses_none(make_dispatcher) -> None:
    """The server is a separate process killed with SIGKILL mid-traffic, as a reclaimed Spot node."""
    import json
    import subprocess
    import sys

    import httpx

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "policyengine.simulate", "--model", "m=vllm", "--chunk-delay", "30",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(30):
            info = json.loads(await proc.stdout.readline())["models"]["m"]
        async with httpx.AsyncClient(timeout=5) as admin:
            (await admin.post(info["admin"] + "/faults", json=_FAULTS)).raise_for_status()

            async def seen() -> int:
                reqs = (await admin.get(info["admin"] + "/requests")).json()
                return sum(r["path"].endswith("/chat/completions") for r in reqs)

            async def kill() -> None:
                proc.kill()
                await proc.wait()

            await _reclaim_in_flight(make_dispatcher, info["url"], seen, kill)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_declared_health_path_probes_without_the_global_interval(make_dispatcher) -> None:
    from policyengine.dispatch.health import HEALTH_REASON, probe_url
    from policyengine.types import HealthCheck

    a, b = SimServer("m"), SimServer("m")
    await a.start()
    await b.start()
    try:
        spec = ModelSpec(name="m", provider=Provider.vllm, health=HealthCheck(path="/health", interval=0.2),
                         deployments=(Deployment(name="a", base_url=a.url, weight=1e6),
                                      Deployment(name="b", base_url=b.url, weight=1e-6)))
        d = make_dispatcher([spec])  # health_interval unset: only the model's own `health` starts the checks
        assert probe_url(d.targets("m")[0], a.url) == f"{a.base}/health"
        b.down(60)
        r = await d.complete(USER, Routing(chain=["m"]))  # the first request starts the monitor
        assert [x.deployment for x in r.attempts] == ["a"]
        async with asyncio.timeout(5):
            while d.health.rounds < 1:
                await asyncio.sleep(0.05)
        assert d.health.last == {"m@a": True, "m@b": False}
        assert (await d.state.get_cooldown(model_scope("m@b"))).reason == HEALTH_REASON
    finally:
        await a.stop()
        await b.stop()


def test_probe_urls_per_provider() -> None:
    from policyengine.dispatch.health import probe_url
    from policyengine.types import HealthCheck

    def url(provider: Provider, base: str | None, **kw) -> str | None:
        return probe_url(targets_of(ModelSpec(name="x", provider=provider, base_url=base, **kw))[0], base)

    assert url(Provider.vllm, "http://h:8000/v1") == "http://h:8000/v1/models"
    assert url(Provider.tgi, "http://h:8000/v1", health=HealthCheck(path="/health")) == "http://h:8000/health"
    assert url(Provider.ollama, "http://h:11434/v1", health=HealthCheck(path="models")) == "http://h:11434/v1/models"
    assert url(Provider.vllm, None) is None
    assert url(Provider.bedrock, None, region="eu-west-2") == "https://bedrock-runtime.eu-west-2.amazonaws.com"
    assert url(Provider.vertex, None, region="europe-west4") == "https://europe-west4-aiplatform.googleapis.com"
    assert url(Provider.bedrock, "http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
    assert url(Provider.anthropic, "https://api.anthropic.com") == "https://api.anthropic.com"
    assert url(Provider.anthropic, None) is None


def test_latency_balancer_penalises_failures_and_forgets_old_estimates() -> None:
    spec = ModelSpec(name="m", provider=Provider.vllm, deployments=tuple(
        Deployment(name=n, base_url=f"http://127.0.0.1:{9 + i}/v1") for i, n in enumerate(("fast", "failing", "slow"))))
    tg = {t.deployment: t for t in targets_of(spec)}
    b = Balancer()
    b.finished(tg["fast"].state_id, 10.0)
    b.finished(tg["slow"].state_id, 150.0)
    b.finished(tg["failing"].state_id, 1.0, failed=True)  # an instant 500 must not look fast
    assert b.stat(tg["failing"].state_id).ewma_ms == 1.0 + b.fail_penalty_ms
    order = [b.order("latency", list(tg.values()))[0].deployment for _ in range(200)]
    assert set(order) == {"fast"}  # three deployments: the least expected wait, never the worse of a pair
    # requests in flight raise the expected wait (a batching server: a quarter of the latency each)
    for _ in range(60):
        b.started(tg["fast"].state_id)
    assert b.order("latency", list(tg.values()))[0].deployment == "slow"
    for _ in range(60):
        b.finished(tg["fast"].state_id, None)
    # an estimate nobody refreshed fades, so an avoided deployment is tried again
    b.stat(tg["slow"].state_id).updated -= 300.0
    assert b.order("latency", list(tg.values()))[0].deployment == "slow"


async def test_a_probe_that_answers_ends_a_drain_but_not_a_rate_limit(three, make_dispatcher) -> None:
    from policyengine.dispatch.health import HealthMonitor

    d = make_dispatcher([_spec(three)])
    await d.state.set_cooldown(model_scope("m@d0"), 30, "drained:connection_refused")
    await d.state.set_cooldown(model_scope("m@d1"), 30, "rate_limited")
    assert await HealthMonitor(d, interval=5.0, timeout=0.5).check_all() == {"m@d0": True, "m@d1": True, "m@d2": True}
    assert await d.state.get_cooldown(model_scope("m@d0")) is None
    assert (await d.state.get_cooldown(model_scope("m@d1"))).reason == "rate_limited"
