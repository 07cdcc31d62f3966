"""Fail-open access to the shared state.

Cooldowns, breakers and session pins make dispatch smarter, but they must never
take it down: if the state store (Redis) is unreachable or slow, the dispatcher
logs a warning (at most every 10 s) and carries on as if nothing were cooling
down, every breaker were closed and no session were pinned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from policyengine.state import (
    BreakerConfig,
    BreakerState,
    Cooldown,
    Preflight,
    StateStore,
    StickyEntry,
)

log = logging.getLogger("policyengine.dispatch")
T = TypeVar("T")


def _none() -> None:
    return None


def _true() -> bool:
    return True


def _open_preflight() -> Preflight:
    return Preflight(allowed=True)


class SafeState:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._last_warn = 0.0
        self.errors = 0

    async def _call(self, aw: Awaitable[T], default: Callable[[], T], what: str) -> T:
        """`await aw`; on any error, warn (rate-limited) and return `default()` (built only then)."""
        try:
            return await aw
        except Exception as exc:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_warn > 10:
                self._last_warn = now
                log.warning("state store unavailable during %s (%s: %s); dispatching without shared state",
                            what, type(exc).__name__, str(exc)[:200])
            return default()

    async def get_cooldown(self, scope: str) -> Cooldown | None:
        return await self._call(self.store.get_cooldown(scope), _none, "get_cooldown")

    async def set_cooldown(self, scope: str, seconds: float, reason: str) -> Cooldown | None:
        return await self._call(self.store.set_cooldown(scope, seconds, reason), _none, "set_cooldown")

    async def breaker_allow(self, model: str, config: BreakerConfig) -> bool:
        return await self._call(self.store.breaker_allow(model, config), _true, "breaker_allow")

    async def preflight(self, model: str, key_scopes: list[str], config: BreakerConfig) -> Preflight:
        return await self._call(self.store.preflight(model, key_scopes, config), _open_preflight, "preflight")

    async def breaker(self, model: str) -> BreakerState:
        return await self._call(self.store.breaker(model), lambda: BreakerState(model=model), "breaker")

    async def breaker_success(self, model: str) -> None:
        await self._call(self.store.breaker_success(model), _none, "breaker_success")

    async def breaker_failure(self, model: str, config: BreakerConfig) -> BreakerState:
        return await self._call(self.store.breaker_failure(model, config), lambda: BreakerState(model=model), "breaker_failure")

    async def get_sticky(self, session_id: str) -> StickyEntry | None:
        return await self._call(self.store.get_sticky(session_id), _none, "get_sticky")

    async def set_sticky(self, session_id: str, entry: StickyEntry, ttl: float) -> None:
        await self._call(self.store.set_sticky(session_id, entry, ttl), _none, "set_sticky")
