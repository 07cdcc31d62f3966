"""The console's login throttle: failed logins per client address, in a moving window.

Built on the `limits` library (moving-window strategy; in-process memory, or the service's
Redis when `redis_url` is set, so every replica counts the same failures). Only *failed*
logins count: a reviewer who logs in correctly is never slowed down by their colleagues'
typos. The client address is `request.client.host`, which uvicorn's proxy-header handling
sets from `X-Forwarded-For` when the request comes from a trusted proxy
(`FORWARDED_ALLOW_IPS`, loopback by default): behind the shipped nginx config each browser
is counted apart.

Invariants: a throttled address gets a 429 with `Retry-After` before its key is looked up
(no key-store work, no timing signal for a guessed key); a Redis outage never locks
everyone out: the throttle falls back to this process's memory and logs the fallback once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger("policyengine.console")

NAMESPACE = "console-login"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an address may try to log in now, and if not, in how many seconds it may."""

    allowed: bool
    retry_after_s: int = 0


class LoginThrottle:
    """Failed console logins per address, at most `rate` (a `limits` string such as "10/minute")."""

    def __init__(self, rate: str, redis_url: str | None = None, prefix: str = "policyengine:") -> None:
        self.item: RateLimitItem = parse(rate)
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        self._fell_back = False
        if redis_url:
            storage: Storage = RedisStorage(redis_url.replace("redis://", "async+redis://", 1)
                                            if redis_url.startswith("redis://") else redis_url,
                                            implementation="redispy", key_prefix=f"{prefix}{NAMESPACE}",
                                            wrap_exceptions=True)
            self._shared = MovingWindowRateLimiter(storage)

    async def _call(self, op: str, address: str) -> bool | tuple[float, int]:
        if self._shared is not None:
            try:
                return await getattr(self._shared, op)(self.item, NAMESPACE, address)
            except Exception as exc:  # any storage failure: count in this process instead
                if not self._fell_back:
                    log.warning("console: login throttle cannot reach Redis (%s); counting failed logins in "
                                "this process until it answers", type(exc).__name__)
                    self._fell_back = True
        else:
            return await getattr(self._memory, op)(self.item, NAMESPACE, address)
        return await getattr(self._memory, op)(self.item, NAMESPACE, address)

    async def check(self, address: str) -> Verdict:
        """May `address` try now? Does not count an attempt."""
        if await self._call("test", address):
            return Verdict(True)
        reset, _remaining = await self._call("get_window_stats", address)  # type: ignore[misc]
        return Verdict(False, max(1, int(reset - time.time()) + 1))

    async def failed(self, address: str) -> None:
        """Count one failed login from `address`."""
        await self._call("hit", address)
