"""Session stickiness, sticky return, and two replicas sharing state through the real Redis."""

from __future__ import annotations

import uuid

from policyengine.simulate import Fault
from policyengine.simulate.testing import USER
from policyengine.state import RedisStateStore
from policyengine.types import Routing

STICKY = Routing(chain=["primary", "fallback"], sticky=True)


async def test_session_stays_on_model_and_key(fleet, make_dispatcher):
    p = await fleet.add("primary", "vllm", keys=["k1", "k2"])
    await fleet.add("fallback", "vllm")
    env = {"K1": "k1", "K2": "k2"}
    d = make_dispatcher([fleet.model_spec("primary", key_envs=("K1", "K2")), fleet.model_spec("fallback")],
                        environ=env)
    p.expire_key("k1")
    r = await d.complete(USER, STICKY, session_id="s-1")
    assert (r.model, r.key_id) == ("primary", "K2")
    await d.state.clear_cooldown("key:primary/K1")  # key 1 works again ...
    p.expired_keys.clear()
    for _ in range(3):
        r = await d.complete(USER, STICKY, session_id="s-1")
        assert (r.model, r.key_id) == ("primary", "K2")  # ... but the session keeps its key (warm KV cache)
    assert [q.key for q in p.seen()][-3:] == ["k2", "k2", "k2"]


async def test_session_moves_when_model_cools_and_stays_without_sticky_return(fleet, make_dispatcher):
    p = await fleet.add("primary", "vllm")
    await fleet.add("fallback", "ollama")
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    assert (await d.complete(USER, STICKY, session_id="s")).model == "primary"
    p.add_fault(Fault(kind="rate_limit", retry_after=0.3, times=1))  # a healthy fallback: cools 0.3 s, moves on
    assert (await d.complete(USER, STICKY, session_id="s")).model == "fallback"
    await d.state.clear_cooldown("model:primary")
    # primary is healthy again, but the session stays where its cache is warm
    assert (await d.complete(USER, STICKY, session_id="s")).model == "fallback"
    # a new session starts on the primary
    assert (await d.complete(USER, STICKY, session_id="other")).model == "primary"


async def test_sticky_return_moves_back_once_primary_recovers(fleet, make_dispatcher):
    p = await fleet.add("primary", "vllm")
    await fleet.add("fallback", "ollama")
    routing = Routing(chain=["primary", "fallback"], sticky=True, sticky_return=True)
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")])
    p.add_fault(Fault(kind="unavailable", times=1))  # an overload with a healthy fallback: cool down, move on
    assert (await d.complete(USER, routing, session_id="s")).model == "fallback"
    assert (await d.complete(USER, routing, session_id="s")).model == "fallback"  # primary cooling down
    await d.state.clear_cooldown("model:primary")
    await d.state.breaker_success("primary")
    assert (await d.complete(USER, routing, session_id="s")).model == "primary"


async def test_prefer_self_hosted_reorders_chain(fleet, make_dispatcher):
    await fleet.add("managed", "openai")
    await fleet.add("local", "ollama")
    d = make_dispatcher([fleet.model_spec("managed", cost_per_1k="0.003"), fleet.model_spec("local")])
    r = await d.complete(USER, Routing(chain=["managed", "local"], prefer_self_hosted=True))
    assert r.model == "local"


async def test_two_replicas_share_cooldowns_breakers_and_sessions(fleet, make_dispatcher, redis_url):
    p = await fleet.add("primary", "vllm")
    f = await fleet.add("fallback", "vllm")
    prefix = f"pe-test-{uuid.uuid4().hex[:10]}:"
    s1, s2 = RedisStateStore(redis_url, prefix=prefix), RedisStateStore(redis_url, prefix=prefix)
    models = [fleet.model_spec("primary"), fleet.model_spec("fallback")]
    a, b = make_dispatcher(models, state=s1), make_dispatcher(models, state=s2)
    try:
        p.add_fault(Fault(kind="rate_limit", retry_after=5, times=1))  # > max_retry_wait: cool down, move on
        r = await a.complete(USER, STICKY, session_id="sess")
        assert r.model == "fallback"
        n = len(p.seen())
        # replica b sees the cooldown replica a set, and the session pin
        r2 = await b.complete(USER, STICKY, session_id="sess")
        assert r2.model == "fallback" and len(p.seen()) == n and len(r2.attempts) == 1  # pinned
        r2 = await b.complete(USER, Routing(chain=["primary", "fallback"]))
        assert r2.model == "fallback" and len(p.seen()) == n
        assert r2.attempts[0].skipped and r2.attempts[0].reason == "cooldown:rate_limited"
        st = await s2.get_sticky("sess")
        assert st.model == "fallback"
        # breaker opened by replica a's failures is honoured by replica b
        p.add_fault(Fault(kind="error", status=500, times=2))
        await s1.clear_cooldown("model:primary")
        await a.complete(USER, Routing(chain=["primary", "fallback"]))
        await a.complete(USER, Routing(chain=["primary", "fallback"]))
        assert (await s2.breaker("primary")).state == "open"
        before = len(p.seen())
        r3 = await b.complete(USER, Routing(chain=["primary", "fallback"]))
        assert r3.model == "fallback" and len(p.seen()) == before
        # the fallback answered all six requests: cooldown, pin, cooldown skip, two 500s, open breaker
        assert len(f.seen()) == 6
    finally:
        async for k in s1._redis.scan_iter(match=f"{prefix}*"):
            await s1._redis.delete(k)
        await s1.aclose()
        await s2.aclose()


async def test_unreachable_redis_fails_open(fleet, make_dispatcher, caplog):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisStateStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    await fleet.add("primary", "vllm")
    d = make_dispatcher([fleet.model_spec("primary")], state=store)
    r = await d.complete(USER, Routing(chain=["primary"], sticky=True), session_id="s")
    assert r.model == "primary"
    assert "state store unavailable" in caplog.text
    await store.aclose()
