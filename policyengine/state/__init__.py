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
from .memory import MemoryStateStore
from .redis_store import RedisStateStore


def make_state_store(redis_url: str | None, *, prefix: str = "policyengine:") -> StateStore:
    """Redis when a URL is given (several replicas), otherwise in-process memory."""
    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a Redis URL: {redis_url!r} (expected redis://host:port/db)")
        return RedisStateStore(redis_url, prefix=prefix)
    return MemoryStateStore()


__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStatus",
    "Cooldown",
    "MemoryStateStore",
    "Preflight",
    "RedisStateStore",
    "StateStore",
    "StickyEntry",
    "key_scope",
    "make_state_store",
    "model_scope",
]
