"""The limit counters, in memory and in the real Redis: all-or-nothing reservations under concurrency,
settlement, notices once per window, windows rolling over on an injected clock, and a Redis outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from policyengine.dsl import compile_sources
from policyengine.gateway.limits import Limiter, window_bounds
from policyengine.state.limits import (
    Counter,
    LimitStoreUnavailable,
    MemoryLimitStore,
    counter_key,
    split_key,
)
from policyengine.state.limits_redis import RedisLimitStore
from policyengine.types import Action, Principal

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    if request.param == "memory":
        yield MemoryLimitStore()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"pe-test-{uuid.uuid4().hex[:8]}:"
    s = RedisLimitStore(url, prefix=prefix)
    try:
        yield s
    finally:
        keys = [k async for k in s._redis.scan_iter(match=prefix + "*")]
        if keys:
            await s._redis.delete(*keys)
        await s.aclose()


def _c(key: str, cap: int, amount: int, *, thresholds: tuple[int, ...] = (), ttl: float = 60) -> Counter:
    return Counter(key, cap, amount, time.time() + ttl, thresholds)


async def test_concurrent_reservations_never_pass_the_cap(store) -> None:
    a = counter_key("acme", "p:1", "tenant=acme", 0)
    res = await asyncio.gather(*(store.reserve([_c(a, 50, 3)]) for _ in range(200)))
    assert sum(r.ok for r in res) == 16  # 16 x 3 = 48 <= 50 < 51
    [st] = await store.usage("acme")
    assert (st.used, st.reserved) == (0, 48)


async def test_all_or_nothing_and_settle(store) -> None:
    a, b = counter_key("acme", "p:1", "", 0), counter_key("acme", "p:2", "", 0)
    assert (await store.reserve([_c(a, 10, 4), _c(b, 5, 4)])).ok
    refused = await store.reserve([_c(a, 10, 4), _c(b, 5, 4)])
    assert not refused.ok and refused.refused == 1 and refused.levels[1] == (0, 4)
    # nothing was reserved on `a` by the refused request
    assert {s.key: s.reserved for s in await store.usage("acme")} == {a: 4, b: 4}
    await store.settle([(_c(a, 10, 4), 4, 3), (_c(b, 5, 4), 4, 2)])
    assert {s.key: (s.used, s.reserved) for s in await store.usage("acme")} == {a: (3, 0), b: (2, 0)}
    assert (await store.reserve([_c(b, 5, 3)])).ok  # the room the settlement gave back
    # a charge without reservation (an approved overage) may pass the cap
    await store.settle([(_c(b, 5, 0), 0, 10)])
    assert [s.used for s in await store.usage("acme") if s.key == b] == [12]


async def test_thresholds_are_reported_once_per_window(store) -> None:
    a = counter_key("acme", "p:1", "", 0)
    crossed = [(await store.reserve([_c(a, 10, 1, thresholds=(5, 8))])).crossed[0] for _ in range(10)]
    assert crossed == [(), (), (), (), (0,), (), (), (1,), (), ()]
    b = counter_key("acme", "p:1", "", 60)  # the next window: a new counter, new notices
    assert (await store.reserve([_c(b, 10, 6, thresholds=(5, 8))])).crossed[0] == (0,)


async def test_tenants_see_their_own_counters(store) -> None:
    await store.reserve([_c(counter_key("acme", "p:1", "user=bob", 0), 10, 1)])
    await store.reserve([_c(counter_key("globex", "p:1", "user=bob", 0), 10, 1)])
    await store.reserve([_c(counter_key(None, "p:2", "", 0), 10, 1)])
    assert [split_key(s.key)[0] for s in await store.usage("acme")] == ["acme"]
    assert sorted(split_key(s.key)[0] for s in await store.usage(None)) == ["*", "acme", "globex"]


POLICY = '''policy "w" version 1
model m { provider openai base_url env("M") cost 1 GBP per 1k tokens }
route default -> m
limit requests 2 per 10s per user
budget 1 GBP per month per tenant
'''


async def test_windows_roll_over_on_the_clock(store) -> None:
    policy = compile_sources({"w.policy": POLICY})
    # the start of the next 10 s window (windows are aligned to the epoch); the clock is moved by hand
    now = [float(int(time.time() // 10) * 10 + 10)]
    limiter = Limiter(store, clock=lambda: now[0])
    if isinstance(store, MemoryLimitStore):
        store._clock = lambda: now[0]
    action = Action(action="chat", tenant=f"t-{uuid.uuid4().hex[:6]}", actor="bob")
    principal = Principal(tenant=action.tenant or "", key_id="k1", subject="s", roles=frozenset({"app"}),
                          groups=frozenset())
    hits = policy.evaluate(action).limits

    async def once() -> bool:
        entries = limiter.counters(policy, hits, action, principal, 10)
        return (await store.reserve([c for _, c in entries])).ok

    assert [await once(), await once(), await once()] == [True, True, False]
    now[0] += 9.9
    assert await once() is False  # still the same window
    now[0] += 0.2
    assert await once() is True  # the next one
    start, end = window_bounds(policy.limits[1], 1_000_000_000.0)  # 2001-09-09: all September, UTC
    assert (start, end) == (999302400, 1001894400)


async def test_redis_outage_is_reported() -> None:
    s = RedisLimitStore("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
    try:
        with pytest.raises(LimitStoreUnavailable):
            await s.reserve([_c("a|b|c|0", 1, 1)])
        # a settlement that adds is sent at once; it never left (no connection): it is held for later
        await s.settle([(_c("a|b|c|0", 1, 1), 0, 1)])
        # one that only gives back is held anyway; a flush that cannot connect keeps both
        await s.settle([(_c("a|b|c|0", 1, 1), 1, 1)])
        with pytest.raises(LimitStoreUnavailable):
            await s.flush()
        assert len(s._held) == 2 and s.dropped == 0
    finally:
        await s.aclose()


async def test_a_settlement_reaching_a_threshold_reports_it(store) -> None:
    a = counter_key("acme", "p:1", "", 0)
    seen: list[tuple[int, int, int]] = []
    assert (await store.reserve([_c(a, 100, 10, thresholds=(50, 80))])).crossed[0] == ()
    # the answer used more than the estimate: the settlement is what reaches 50 (once per window)
    await store.settle([(_c(a, 100, 10, thresholds=(50, 80)), 10, 60)], lambda *x: seen.append(x))
    await store.flush()
    assert seen == [(0, 0, 60)]
    await store.settle([(_c(a, 100, 0, thresholds=(50, 80)), 0, 5)], lambda *x: seen.append(x))
    await store.flush()
    assert seen == [(0, 0, 60)]  # 65: nothing new


@pytest.mark.redis
async def test_redis_settlements_ride_on_the_next_reservation(redis_url: str) -> None:
    prefix = f"pe-test-{uuid.uuid4().hex[:8]}:"
    a = RedisLimitStore(redis_url, prefix=prefix, flush_after=30)  # no background flush in this test
    b = RedisLimitStore(redis_url, prefix=prefix)  # another replica
    k = counter_key("acme", "p:1", "tenant=acme", 0)
    try:
        assert (await a.reserve([_c(k, 100, 10)])).ok
        trips = a.round_trips
        await a.settle([(_c(k, 100, 10), 10, 7)])  # gives back 3: held, nothing sent
        assert a.round_trips == trips
        assert [(s.used, s.reserved) for s in await b.usage("acme")] == [(0, 10)]  # over-charged meanwhile
        res = await a.reserve([_c(k, 100, 10)])  # one call: the held settlement, then this reservation
        assert res.ok and res.levels == [(7, 10)] and a.round_trips == trips + 1
        # a settlement that adds (the answer was longer than the estimate) is sent at once
        await a.settle([(_c(k, 100, 10), 10, 25)])
        assert a.round_trips == trips + 2
        assert [(s.used, s.reserved) for s in await b.usage("acme")] == [(32, 0)]
    finally:
        for s in (a, b):
            keys = [x async for x in s._redis.scan_iter(match=prefix + "*")]
            if keys:
                await s._redis.delete(*keys)
        await a.aclose()
        await b.aclose()


@pytest.mark.redis
async def test_redis_held_settlements_are_flushed_within_the_delay(redis_url: str) -> None:
    prefix = f"pe-test-{uuid.uuid4().hex[:8]}:"
    a = RedisLimitStore(redis_url, prefix=prefix, flush_after=0.05)
    b = RedisLimitStore(redis_url, prefix=prefix)
    k = counter_key("acme", "p:1", "tenant=acme", 0)
    try:
        # 200 requests on two replicas against a cap of 50 x 3: exactly 50 are admitted, whatever is held
        async def one(s: RedisLimitStore) -> bool:
            r = await s.reserve([_c(k, 150, 3)])
            if r.ok:
                await asyncio.sleep(0)
                await s.settle([(_c(k, 150, 3), 3, 3)])
            return r.ok

        res = await asyncio.gather(*(one(a if i % 2 else b) for i in range(200)))
        assert sum(res) == 50
        await asyncio.sleep(0.3)  # an idle replica's held settlements are sent by then
        assert not a._held and not b._held
        raw = await b._redis.hmget(prefix + "lim:" + k, "u", "r")
        assert [int(x) for x in raw] == [150, 0]
    finally:
        for s in (a, b):
            keys = [x async for x in s._redis.scan_iter(match=prefix + "*")]
            if keys:
                await s._redis.delete(*keys)
        await a.aclose()
        await b.aclose()


async def test_usage_shows_the_previous_window(store) -> None:
    from types import SimpleNamespace

    from policyengine.gateway.limits import usage_report

    policy = compile_sources({"w.policy": POLICY})
    now = [float(int(time.time() // 10) * 10 + 10)]
    limiter = Limiter(store, clock=lambda: now[0])
    if isinstance(store, MemoryLimitStore):
        store._clock = lambda: now[0]
    action = Action(action="chat", tenant=f"t-{uuid.uuid4().hex[:6]}", actor="bob")
    principal = Principal(tenant=action.tenant or "", key_id="k1", subject="s", roles=frozenset({"app"}),
                          groups=frozenset())
    entries = limiter.counters(policy, policy.evaluate(action).limits, action, principal, 10)
    assert (await store.reserve([c for _, c in entries])).ok
    await store.settle([(c, c.amount, c.amount) for _, c in entries])
    rt = SimpleNamespace(limiter=limiter, policies=SimpleNamespace(current=policy))

    async def kinds(window: str) -> dict[str, str]:
        return {u["kind"]: u["window_state"] for u in (await usage_report(rt, action.tenant, window))["counters"]}

    assert await kinds("current") == {"requests": "current", "spend": "current"}
    now[0] += 10  # the next 10 s window: the request counter is now the previous window's
    assert await kinds("current") == {"spend": "current"}
    assert await kinds("previous") == {"requests": "previous"}
    assert await kinds("all") == {"requests": "previous", "spend": "current"}
    [prev] = (await usage_report(rt, action.tenant, "previous"))["counters"]
    assert prev["used"] == "1" and prev["resets_at"] == prev["window_start"] + 10
    if isinstance(store, MemoryLimitStore):
        now[0] += 10  # two windows on: no longer kept
        assert await kinds("previous") == {}
