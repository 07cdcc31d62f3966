"""In-process state: the default for a single replica."""

from __future__ import annotations

import time

from .base import BreakerConfig, BreakerState, Cooldown, Preflight, StickyEntry, model_scope


class MemoryStateStore:
    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._cooldowns: dict[str, Cooldown] = {}
        self._breakers: dict[str, BreakerState] = {}
        self._sticky: dict[str, tuple[StickyEntry, float]] = {}
        self._counters: dict[str, tuple[int, float | None]] = {}
        self._writes = 0

    # -- cooldowns --------------------------------------------------------
    async def set_cooldown(self, scope: str, seconds: float, reason: str) -> Cooldown:
        until = self._clock() + max(0.0, seconds)
        cur = self._cooldowns.get(scope)
        if cur is not None and cur.until > until:  # never shorten a longer cooldown
            return cur
        cd = Cooldown(scope=scope, until=until, reason=reason)
        self._cooldowns[scope] = cd
        self._writes += 1
        if self._writes % 1024 == 0:
            self._sweep(until - max(0.0, seconds))
        return cd

    async def get_cooldown(self, scope: str) -> Cooldown | None:
        cd = self._cooldowns.get(scope)
        if cd is None:
            return None
        if cd.until <= self._clock():
            self._cooldowns.pop(scope, None)
            return None
        return cd

    async def clear_cooldown(self, scope: str) -> None:
        self._cooldowns.pop(scope, None)

    async def cooldowns(self) -> list[Cooldown]:
        now = self._clock()
        return sorted((c for c in self._cooldowns.values() if c.until > now), key=lambda c: c.scope)

    # -- circuit breaker --------------------------------------------------
    async def breaker_allow(self, model: str, config: BreakerConfig) -> bool:
        b = self._breakers.get(model)
        if b is None or b.state == "closed":
            return True
        now = self._clock()
        if b.state == "open":
            if b.opened_until is not None and now >= b.opened_until:
                b.state, b.probe_until = "half_open", now + config.probe_timeout
                return True
            return False
        # half-open: one probe at a time
        if b.probe_until is None or now >= b.probe_until:
            b.probe_until = now + config.probe_timeout
            return True
        return False

    async def preflight(self, model: str, key_scopes: list[str], config: BreakerConfig) -> Preflight:
        mcd = await self.get_cooldown(model_scope(model))
        if mcd is not None:
            return Preflight(model_cooldown=mcd)
        kcd = {}
        for scope in key_scopes:
            cd = await self.get_cooldown(scope)
            if cd is not None:
                kcd[scope] = cd
        if key_scopes and len(kcd) == len(key_scopes):
            return Preflight(key_cooldowns=kcd)
        clean = model not in self._breakers
        return Preflight(key_cooldowns=kcd, allowed=await self.breaker_allow(model, config), breaker_clean=clean)

    async def breaker_success(self, model: str) -> None:
        b = self._breakers.get(model)
        if b is not None:
            self._breakers[model] = BreakerState(model=model)

    async def breaker_failure(self, model: str, config: BreakerConfig) -> BreakerState:
        now = self._clock()
        b = self._breakers.setdefault(model, BreakerState(model=model))
        if b.state == "half_open":
            b.trips += 1
            b.state, b.probe_until = "open", None
            b.opened_until = now + min(config.open_max, config.open_for * 2 ** (b.trips - 1))
            return b.model_copy()
        if b.state == "open":
            return b.model_copy()
        if b.first_failure_at is None or now - b.first_failure_at > config.window:
            b.first_failure_at, b.failures = now, 0
        b.failures += 1
        if b.failures >= config.threshold:
            b.trips += 1
            b.state = "open"
            b.opened_until = now + min(config.open_max, config.open_for * 2 ** (b.trips - 1))
        return b.model_copy()

    async def breaker(self, model: str) -> BreakerState:
        b = self._breakers.get(model)
        return b.model_copy() if b else BreakerState(model=model)

    async def breakers(self) -> list[BreakerState]:
        return [b.model_copy() for _, b in sorted(self._breakers.items())]

    # -- stickiness -------------------------------------------------------
    async def get_sticky(self, session_id: str) -> StickyEntry | None:
        item = self._sticky.get(session_id)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._sticky.pop(session_id, None)
            return None
        return item[0]

    async def set_sticky(self, session_id: str, entry: StickyEntry, ttl: float) -> None:
        now = self._clock()
        self._sticky[session_id] = (entry, now + ttl)
        self._writes += 1
        if self._writes % 1024 == 0:  # amortised sweep: sessions that never come back must not pile up
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        for sid in [k for k, (_, exp) in self._sticky.items() if exp <= now]:
            del self._sticky[sid]
        for scope in [k for k, cd in self._cooldowns.items() if cd.until <= now]:
            del self._cooldowns[scope]
        for name in [k for k, (_, exp) in self._counters.items() if exp is not None and exp <= now]:
            del self._counters[name]

    async def clear_sticky(self, session_id: str) -> None:
        self._sticky.pop(session_id, None)

    # -- counters ---------------------------------------------------------
    async def incr(self, name: str, amount: int = 1, ttl: float | None = None) -> int:
        now = self._clock()
        value, exp = self._counters.get(name, (0, None))
        if exp is not None and exp <= now:
            value, exp = 0, None
        value += amount
        if exp is None and ttl is not None:
            exp = now + ttl
        self._counters[name] = (value, exp)
        return value

    async def get_counter(self, name: str) -> int:
        value, exp = self._counters.get(name, (0, None))
        if exp is not None and exp <= self._clock():
            return 0
        return value

    async def aclose(self) -> None:
        return None
