"""The `redis_prefix` setting keeps deployments that share one Redis apart."""

from __future__ import annotations

import uuid

import pytest

from policyengine.settings import Settings
from policyengine.state import make_state_store


def _make_state(settings: Settings):
    """The state store the service builds from its settings (gateway.runtime)."""
    return make_state_store(settings.redis_url, prefix=settings.redis_prefix)


@pytest.mark.redis
async def test_two_deployments_sharing_one_redis_do_not_see_each_others_cooldowns(redis_url: str) -> None:
    import redis.asyncio as aioredis

    a_prefix, b_prefix = f"pe-a-{uuid.uuid4().hex[:8]}:", f"pe-b-{uuid.uuid4().hex[:8]}:"
    a = _make_state(Settings(redis_url=redis_url, redis_prefix=a_prefix))
    b = _make_state(Settings(redis_url=redis_url, redis_prefix=b_prefix))
    raw = aioredis.from_url(redis_url)
    try:
        await a.set_cooldown("qwen-72b", 30, "rate_limited")
        assert await a.get_cooldown("qwen-72b") is not None
        assert await b.get_cooldown("qwen-72b") is None
        keys = [k.decode() async for k in raw.scan_iter(match=f"{a_prefix}*")]
        assert keys and all(k.startswith(a_prefix) for k in keys)
    finally:
        for store in (a, b):
            await store.aclose()
        for prefix in (a_prefix, b_prefix):
            async for k in raw.scan_iter(match=f"{prefix}*"):
                await raw.delete(k)
        await raw.aclose()
