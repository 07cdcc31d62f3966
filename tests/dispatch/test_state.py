"""State stores: the same behaviour in memory and in the real Redis (unique key prefix per test)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from policyengine.state import (
    BreakerConfig,
    MemoryStateStore,
    RedisStateStore,
    StickyEntry,
    make_state_store,
)

CFG = BreakerConfig(threshold=2, window=30, open_for=0.5, open_max=4.0, probe_timeout=5.0)


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryStateStore()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisStateStore(url, prefix=f"pe-test-{uuid.uuid4().hex[:10]}:")
    yield s
    r = s._redis
    async for k in r.scan_iter(match=f"{s._prefix}*"):
        await r.delete(k)
    await s.aclose()


async def test_cooldown_expires_and_never_shortens(store):
    await store.set_cooldown("model:a", 1.0, "rate_limited")
    await store.set_cooldown("model:a", 0.05, "overloaded")  # shorter: ignored
    cd = await store.get_cooldown("model:a")
    assert cd is not None and cd.reason == "rate_limited"
    assert [c.scope for c in await store.cooldowns()] == ["model:a"]
    await asyncio.sleep(1.1)
    assert await store.get_cooldown("model:a") is None
    assert await store.cooldowns() == []


async def test_breaker_opens_half_opens_with_one_probe_and_closes(store):
    assert await store.breaker_allow("m", CFG)
    assert (await store.breaker_failure("m", CFG)).state == "closed"
    b = await store.breaker_failure("m", CFG)
    assert b.state == "open" and b.trips == 1
    assert not await store.breaker_allow("m", CFG)
    await asyncio.sleep(0.55)
    # many concurrent requests: exactly one wins the half-open probe
    allowed = await asyncio.gather(*(store.breaker_allow("m", CFG) for _ in range(20)))
    assert sum(allowed) == 1
    assert (await store.breaker("m")).state == "half_open"
    # probe fails: open again, for twice as long
    b = await store.breaker_failure("m", CFG)
    assert b.state == "open" and b.trips == 2
    await asyncio.sleep(0.55)
    assert not await store.breaker_allow("m", CFG)  # 1.0 s this time
    await asyncio.sleep(0.5)
    assert await store.breaker_allow("m", CFG)
    await store.breaker_success("m")
    b = await store.breaker("m")
    assert b.state == "closed" and b.failures == 0 and b.trips == 0
    assert await store.breaker_allow("m", CFG)


async def test_sticky_and_counters(store):
    assert await store.get_sticky("s1") is None
    await store.set_sticky("s1", StickyEntry(model="qwen", key_id="K2", home="qwen", updated=1.0), ttl=0.3)
    st = await store.get_sticky("s1")
    assert (st.model, st.key_id, st.home) == ("qwen", "K2", "qwen")
    await asyncio.sleep(0.4)
    assert await store.get_sticky("s1") is None
    assert await store.incr("req") == 1
    assert await store.incr("req", 4) == 5
    assert await store.get_counter("req") == 5
    assert await store.get_counter("other") == 0


def test_make_state_store_validates():
    assert isinstance(make_state_store(None), MemoryStateStore)
    with pytest.raises(ValueError, match="Redis URL"):
        make_state_store("http://localhost:6379")


async def test_memory_store_sweeps_expired_sessions():
    now = [1000.0]
    s = MemoryStateStore(clock=lambda: now[0])
    for i in range(1000):
        await s.set_sticky(f"s{i}", StickyEntry(model="m"), ttl=10)
    now[0] += 60  # all expired; nobody asks for them again
    for i in range(1000, 1100):
        await s.set_sticky(f"s{i}", StickyEntry(model="m"), ttl=10)
    assert len(s._sticky) == 100  # the 1,000 expired sessions were swept at the 1,024th write


async def test_preflight_reads_everything_in_one_step(store):
    ks = ["key:m/K1", "key:m/K2"]
    pf = await store.preflight("m", ks, CFG)
    assert pf.model_cooldown is None and pf.key_cooldowns == {} and pf.allowed is True and pf.breaker_clean
    await store.set_cooldown("key:m/K1", 5, "auth_invalid")
    pf = await store.preflight("m", ks, CFG)
    assert list(pf.key_cooldowns) == ["key:m/K1"] and pf.allowed is True
    # every key cooling: the breaker is not consulted, so no half-open probe is claimed
    await store.breaker_failure("m", CFG)
    await store.breaker_failure("m", CFG)  # open
    await asyncio.sleep(0.55)  # open period over: the next allowed check would claim the probe
    await store.set_cooldown("key:m/K2", 5, "quota_exhausted")
    pf = await store.preflight("m", ks, CFG)
    assert pf.allowed is None and set(pf.key_cooldowns) == set(ks)
    assert (await store.breaker("m")).state == "open"
    await store.clear_cooldown("key:m/K2")
    pf = await store.preflight("m", ks, CFG)
    assert pf.allowed is True and not pf.breaker_clean and (await store.breaker("m")).state == "half_open"
    await store.set_cooldown("model:m", 5, "overloaded")
    pf = await store.preflight("m", ks, CFG)
    assert pf.model_cooldown.reason == "overloaded" and pf.allowed is None
