"""Cooldown, circuit-breaker, stickiness and counter state: in memory or in Redis."""

from __future__ import annotations

from .base import (
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    Cooldown,
    Preflight,
    StateStore,
    StickyEntry,
    key_scope,
    model_scope,
)
from .limits import (
    Counter,
    CounterState,
    LimitStore,
    LimitStoreUnavailable,
    MemoryLimitStore,
    Reservation,
    counter_key,
    split_key,
)
from .limits_redis import RedisLimitStore
from .memory import MemoryStateStore
from .redis_store import RedisStateStore


def make_state_store(redis_url: str | None, *, prefix: str = "policyengine:") -> StateStore:
    """Redis when a URL is given (several replicas), otherwise in-process memory."""
    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a Redis URL: {redis_url!r} (expected redis://host:port/db)")
        return RedisStateStore(redis_url, prefix=prefix)
    return MemoryStateStore()


def make_limit_store(redis_url: str | None, *, prefix: str = "policyengine:") -> LimitStore:
    """The limit and budget counters: Redis when a URL is given (shared by replicas), else this process."""
    if redis_url:
        return RedisLimitStore(redis_url, prefix=prefix)
    return MemoryLimitStore()


__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStatus",
    "Cooldown",
    "Counter",
    "CounterState",
    "LimitStore",
    "LimitStoreUnavailable",
    "MemoryLimitStore",
    "MemoryStateStore",
    "Preflight",
    "RedisLimitStore",
    "RedisStateStore",
    "Reservation",
    "StateStore",
    "StickyEntry",
    "counter_key",
    "key_scope",
    "make_limit_store",
    "make_state_store",
    "model_scope",
    "split_key",
]
