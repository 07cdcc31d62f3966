"""The limit counters in Redis, shared by every replica: one Lua script per step.

A counter is a hash `{prefix}lim:{counter key}` with fields `u` (used), `r` (reserved) and
`nJ` (threshold J already reported this window), expiring at the end of its window
(`PEXPIREAT`). `reserve` reads every counter, refuses if any would pass its cap, else
increments them all, in one script: Redis runs a script alone, so two replicas can never both
take the last unit. `settle` is a second script. One round trip each.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from .limits import Counter, CounterState, LimitStoreUnavailable, Reservation, counter_key

__all__ = ["RedisLimitStore"]

# KEYS: the counters. ARGV per counter: cap, amount, expires_at_ms, n thresholds, thresholds...
# Returns {0, used1, reserved1, "j,k", used2, ...} when reserved; {i, used_i, reserved_i} when
# counter i would pass its cap (nothing changed).
_RESERVE = """
local spec, a = {}, 1
for i = 1, #KEYS do
  local cap, amt, exp, nt = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local ths = {}
  for j = 1, nt do ths[j] = tonumber(ARGV[a + 3 + j]) end
  a = a + 4 + nt
  local v = redis.call('HMGET', KEYS[i], 'u', 'r')
  local u, r = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if amt > 0 and u + r + amt > cap then return {i, u, r} end
  spec[i] = {amt, exp, ths, u}
end
local out = {0}
for i = 1, #KEYS do
  local s = spec[i]
  local r = redis.call('HINCRBY', KEYS[i], 'r', s[1])
  redis.call('PEXPIREAT', KEYS[i], s[2])
  local after, crossed = s[4] + r, {}
  for j, t in ipairs(s[3]) do
    if after >= t and redis.call('HSETNX', KEYS[i], 'n' .. j, 1) == 1 then crossed[#crossed + 1] = j - 1 end
  end
  out[#out + 1] = s[4]
  out[#out + 1] = r
  out[#out + 1] = table.concat(crossed, ',')
end
return out
"""

# KEYS: the counters. ARGV per counter: reserved, actual, expires_at_ms. A counter whose window
# ended is not revived (PEXPIREAT in the past deletes it again).
_SETTLE = """
for i = 1, #KEYS do
  local r, u, exp = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  if r ~= 0 then
    local left = redis.call('HINCRBY', KEYS[i], 'r', -r)
    if left < 0 then redis.call('HSET', KEYS[i], 'r', 0) end
  end
  if u ~= 0 then redis.call('HINCRBY', KEYS[i], 'u', u) end
  redis.call('PEXPIREAT', KEYS[i], exp)
end
return 1
"""


class RedisLimitStore:
    """Counters in Redis under `prefix` (`{prefix}lim:...`). Short socket timeouts: an outage is
    reported (`LimitStoreUnavailable`) within `timeout` seconds, and each limit's `on outage`
    decides what the request does."""

    def __init__(self, url: str, *, prefix: str = "policyengine:", client: Redis | None = None,
                 timeout: float = 0.5, max_connections: int = 32, pool_timeout: float = 2.0) -> None:
        # a blocking pool: a burst of requests waits (up to pool_timeout) for one of max_connections
        # instead of failing with "too many connections" (which would count as an outage); Redis runs
        # the scripts one at a time anyway, so a few connections carry the load
        pool = BlockingConnectionPool.from_url(url, decode_responses=True, socket_timeout=timeout,
                                               socket_connect_timeout=max(timeout, 1.0), max_connections=max_connections,
                                               timeout=pool_timeout)
        self._redis = client or Redis(connection_pool=pool)
        self._prefix = prefix + "lim:"
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)

    async def reserve(self, counters: list[Counter]) -> Reservation:
        """See `policyengine.state.limits.LimitStore.reserve`."""
        args: list[int | str] = []
        for c in counters:
            args += [c.cap, c.amount, int(c.expires_at * 1000), len(c.thresholds), *c.thresholds]
        try:
            out = await self._reserve(keys=[self._prefix + c.key for c in counters], args=args)
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(f"limit counters unavailable: {type(exc).__name__}") from exc
        if out[0] != 0:
            i = int(out[0]) - 1
            levels = [(0, 0)] * len(counters)
            levels[i] = (int(out[1]), int(out[2]))
            return Reservation(False, i, levels)
        levels, crossed = [], []
        for k in range(len(counters)):
            u, r, cr = out[1 + 3 * k: 4 + 3 * k]
            levels.append((int(u), int(r)))
            crossed.append(tuple(int(x) for x in str(cr).split(",") if x != ""))
        return Reservation(True, None, levels, crossed)

    async def settle(self, settled: list[tuple[Counter, int, int]]) -> None:
        """See `policyengine.state.limits.LimitStore.settle`."""
        if not settled:
            return
        args: list[int] = []
        for c, reserved, actual in settled:
            args += [reserved, actual, int(c.expires_at * 1000)]
        try:
            await self._settle(keys=[self._prefix + c.key for c, _, _ in settled], args=args)
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(f"limit counters unavailable: {type(exc).__name__}") from exc

    async def usage(self, tenant: str | None) -> list[CounterState]:
        """See `policyengine.state.limits.LimitStore.usage` (a SCAN over the counters' prefix)."""
        head = "" if tenant is None else counter_key(tenant, "", "", 0).split("|", 1)[0] + "|"
        pattern = self._prefix + _glob_escape(head) + "*"
        out: list[CounterState] = []
        try:
            async for key in self._redis.scan_iter(match=pattern, count=500):
                async with self._redis.pipeline(transaction=False) as p:
                    p.hmget(key, "u", "r")
                    p.pexpiretime(key)
                    (u, r), exp = await p.execute()
                if exp is None or int(exp) < 0:
                    continue
                out.append(CounterState(key[len(self._prefix):], int(u or 0), int(r or 0), int(exp) / 1000))
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(f"limit counters unavailable: {type(exc).__name__}") from exc
        return sorted(out, key=lambda s: s.key)

    async def set_used(self, counter: Counter, used: int) -> None:
        """See `policyengine.state.limits.LimitStore.set_used`."""
        key = self._prefix + counter.key
        try:
            async with self._redis.pipeline(transaction=True) as p:
                p.hset(key, "u", used)
                p.pexpireat(key, int(counter.expires_at * 1000))
                await p.execute()
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(f"limit counters unavailable: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def _glob_escape(s: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in s)
