"""The state the dispatcher shares between requests (and, with Redis, between replicas).

Cooldowns (a model or one of its keys is skipped until a time), circuit
breakers (per model: closed -> open after repeated failures -> half-open probe
-> closed on success), session stickiness (session -> model + key) and generic
atomic counters. All times are wall-clock epoch seconds so replicas agree.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

BreakerStatus = Literal["closed", "open", "half_open"]


class Cooldown(BaseModel):
    scope: str  # "model:<name>" or "key:<model>/<KEY_ENV_NAME>"
    until: float
    reason: str


class BreakerState(BaseModel):
    model: str
    state: BreakerStatus = "closed"
    failures: int = 0  # consecutive failures in the current window
    first_failure_at: float | None = None
    opened_until: float | None = None  # when an open breaker lets a probe through
    probe_until: float | None = None  # a half-open probe is in flight until then
    trips: int = 0  # times opened since the last success (open time doubles per trip)


class BreakerConfig(BaseModel):
    threshold: int = Field(3, ge=1)  # consecutive failures (within `window`) that open the breaker
    window: float = Field(30.0, gt=0)
    open_for: float = Field(15.0, gt=0)  # first open period; doubles per trip up to open_max
    open_max: float = 300.0
    probe_timeout: float = 30.0  # a half-open probe that never reports frees the slot after this


class StickyEntry(BaseModel):
    model: str
    key_id: str | None = None
    home: str | None = None  # the model the session started on (for sticky_return)
    deployment: str | None = None  # the model's deployment the session is pinned to (its KV cache lives there)
    updated: float = 0.0


class Preflight(BaseModel):
    """Everything the dispatcher must know before calling a model, read in one step.

    `model_cooldown` set: the model is skipped (nothing else was read or claimed).
    `key_cooldowns`: the keys (by scope) that are cooling down. `allowed`: the breaker
    let the call through (None when no key was usable: no probe slot was claimed).
    `breaker_clean`: no failures are recorded, so a success needs no write.
    """

    model_cooldown: Cooldown | None = None
    key_cooldowns: dict[str, Cooldown] = Field(default_factory=dict)  # a literal {} is deep-copied per instance
    allowed: bool | None = None
    breaker_clean: bool = True


def model_scope(model: str) -> str:
    return f"model:{model}"


def key_scope(model: str, key_id: str | None) -> str:
    return f"key:{model}/{key_id or '-'}"


@runtime_checkable
class StateStore(Protocol):
    async def set_cooldown(self, scope: str, seconds: float, reason: str) -> Cooldown: ...

    async def get_cooldown(self, scope: str) -> Cooldown | None: ...

    async def clear_cooldown(self, scope: str) -> None: ...

    async def cooldowns(self) -> list[Cooldown]: ...

    async def breaker_allow(self, model: str, config: BreakerConfig) -> bool:
        """May a request go to `model` now? Claims the single half-open probe slot."""
        ...

    async def breaker_success(self, model: str) -> None: ...

    async def preflight(self, model: str, key_scopes: list[str], config: BreakerConfig) -> Preflight:
        """Model cooldown, key cooldowns and the breaker check (claiming a half-open probe only
        when at least one key is usable), atomically and in one round trip where possible."""
        ...

    async def breaker_failure(self, model: str, config: BreakerConfig) -> BreakerState: ...

    async def breaker(self, model: str) -> BreakerState: ...

    async def breakers(self) -> list[BreakerState]: ...

    async def get_sticky(self, session_id: str) -> StickyEntry | None: ...

    async def set_sticky(self, session_id: str, entry: StickyEntry, ttl: float) -> None: ...

    async def clear_sticky(self, session_id: str) -> None: ...

    async def incr(self, name: str, amount: int = 1, ttl: float | None = None) -> int: ...

    async def get_counter(self, name: str) -> int: ...

    async def aclose(self) -> None: ...
