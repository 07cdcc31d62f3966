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
        d1 = make_dispatcher([_spec(three)], state=s1)
        d2 = make_dispatcher([_spec(three)], state=s2)
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
