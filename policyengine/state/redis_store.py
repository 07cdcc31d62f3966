"""Redis-backed state, shared by every API replica.

Cooldowns and sticky sessions are keys with a TTL (Redis expires them); the
circuit breaker is a hash updated by Lua scripts so that concurrent replicas
see one consistent transition (only one of them wins the half-open probe).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from .base import BreakerConfig, BreakerState, Cooldown, Preflight, StickyEntry, model_scope

# KEYS[1]=breaker hash; ARGV: now, probe_timeout. Returns 1 if the caller may send a request.
_ALLOW = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'closed' then return 1 end
local now = tonumber(ARGV[1])
if st == 'open' then
  local ou = tonumber(redis.call('HGET', KEYS[1], 'opened_until') or '0')
  if now >= ou then
    redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
    return 1
  end
  return 0
end
local pu = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now >= pu then
  redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
  return 1
end
return 0
"""

# KEYS[1]=cooldown key; ARGV: json, until, ttl_ms. Never shortens a longer cooldown.
_COOLDOWN = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local cu = tonumber(cjson.decode(cur)['until'])
  if cu and cu > tonumber(ARGV[2]) then return cur end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return ARGV[1]
"""

# KEYS[1]=model cooldown, KEYS[2]=breaker hash, KEYS[3..]=key cooldowns; ARGV: now, probe_timeout.
# Returns {model_cd or false, {key_cd or false...}, allowed (1/0/-1 = not checked), clean (1/0)}.
_PREFLIGHT = """
local now = tonumber(ARGV[1])
local mcd = redis.call('GET', KEYS[1])
if mcd then return {mcd, {}, -1, 1} end
local kcds, usable = {}, 0
for i = 3, #KEYS do
  local cd = redis.call('GET', KEYS[i])
  kcds[#kcds + 1] = cd or ''
  if not cd then usable = usable + 1 end
end
if #KEYS > 2 and usable == 0 then return {false, kcds, -1, 1} end
local st = redis.call('HGET', KEYS[2], 'state')
if not st then return {false, kcds, 1, 1} end
if st == 'closed' then return {false, kcds, 1, 0} end
if st == 'open' then
  local ou = tonumber(redis.call('HGET', KEYS[2], 'opened_until') or '0')
  if now >= ou then
    redis.call('HSET', KEYS[2], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
    return {false, kcds, 1, 0}
  end
  return {false, kcds, 0, 0}
end
local pu = tonumber(redis.call('HGET', KEYS[2], 'probe_until') or '0')
if now >= pu then
  redis.call('HSET', KEYS[2], 'probe_until', now + tonumber(ARGV[2]))
  return {false, kcds, 1, 0}
end
return {false, kcds, 0, 0}
"""

# KEYS[1]=breaker hash; ARGV: now, threshold, window, open_for, open_max
_FAILURE = """
local now = tonumber(ARGV[1])
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
local trips = tonumber(redis.call('HGET', KEYS[1], 'trips') or '0')
local function open()
  trips = trips + 1
  local d = math.min(tonumber(ARGV[5]), tonumber(ARGV[4]) * 2 ^ (trips - 1))
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_until', now + d, 'trips', trips, 'probe_until', 0)
end
if st == 'half_open' then
  open()
elseif st == 'closed' then
  local ff = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at') or '-1')
  local n = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
  if ff < 0 or now - ff > tonumber(ARGV[3]) then
    ff = now
    n = 0
  end
  n = n + 1
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', n, 'first_failure_at', ff)
  if n >= tonumber(ARGV[2]) then open() end
end
return redis.call('HGETALL', KEYS[1])
"""


def _breaker_from(model: str, raw: dict) -> BreakerState:
    def f(name: str) -> float | None:
        v = raw.get(name)
        return float(v) if v not in (None, "", "0", 0) else None

    if not raw:
        return BreakerState(model=model)
    return BreakerState(
        model=model,
        state=raw.get("state", "closed"),
        failures=int(float(raw.get("failures", 0) or 0)),
        first_failure_at=f("first_failure_at"),
        opened_until=f("opened_until"),
        probe_until=f("probe_until"),
        trips=int(float(raw.get("trips", 0) or 0)),
    )


class RedisStateStore:
    """State in Redis under `prefix` (use one prefix per deployment / test)."""

    def __init__(self, url: str, *, prefix: str = "policyengine:", client: Redis | None = None,
                 timeout: float = 0.5) -> None:
        # Short socket timeouts: a slow Redis must not hold requests (the dispatcher fails open).
        self._redis = client or Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                               socket_connect_timeout=timeout)
        self._prefix = prefix
        self._allow = self._redis.register_script(_ALLOW)
        self._failure = self._redis.register_script(_FAILURE)
        self._cooldown = self._redis.register_script(_COOLDOWN)
        self._preflight = self._redis.register_script(_PREFLIGHT)

    def _k(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    # -- cooldowns --------------------------------------------------------
    async def set_cooldown(self, scope: str, seconds: float, reason: str) -> Cooldown:
        until = time.time() + max(0.0, seconds)
        cd = Cooldown(scope=scope, until=until, reason=reason)
        raw = await self._cooldown(keys=[self._k("cd", scope)],
                                   args=[cd.model_dump_json(), repr(until), max(1, int(seconds * 1000))])
        return Cooldown.model_validate_json(raw)

    async def get_cooldown(self, scope: str) -> Cooldown | None:
        raw = await self._redis.get(self._k("cd", scope))
        if raw is None:
            return None
        cd = Cooldown.model_validate_json(raw)
        return cd if cd.until > time.time() else None

    async def clear_cooldown(self, scope: str) -> None:
        await self._redis.delete(self._k("cd", scope))

    async def cooldowns(self) -> list[Cooldown]:
        out = []
        async for key in self._redis.scan_iter(match=self._k("cd", "*"), count=500):
            raw = await self._redis.get(key)
            if raw:
                cd = Cooldown.model_validate_json(raw)
                if cd.until > time.time():
                    out.append(cd)
        return sorted(out, key=lambda c: c.scope)

    # -- circuit breaker --------------------------------------------------
    async def breaker_allow(self, model: str, config: BreakerConfig) -> bool:
        return bool(await self._allow(keys=[self._k("br", model)], args=[time.time(), config.probe_timeout]))

    async def preflight(self, model: str, key_scopes: list[str], config: BreakerConfig) -> Preflight:
        keys = [self._k("cd", model_scope(model)), self._k("br", model), *(self._k("cd", k) for k in key_scopes)]
        mcd, kcds, allowed, clean = await self._preflight(keys=keys, args=[time.time(), config.probe_timeout])
        now = time.time()
        if mcd:
            cd = Cooldown.model_validate_json(mcd)
            if cd.until > now:
                return Preflight(model_cooldown=cd)
        key_cds = {}
        for scope, raw in zip(key_scopes, kcds or [], strict=False):
            if raw:
                cd = Cooldown.model_validate_json(raw)
                if cd.until > now:
                    key_cds[scope] = cd
        return Preflight(key_cooldowns=key_cds, allowed=None if allowed == -1 else bool(allowed),
                         breaker_clean=bool(clean))

    async def breaker_success(self, model: str) -> None:
        await self._redis.delete(self._k("br", model))

    async def breaker_failure(self, model: str, config: BreakerConfig) -> BreakerState:
        flat = await self._failure(keys=[self._k("br", model)],
                                   args=[time.time(), config.threshold, config.window,
                                         config.open_for, config.open_max])
        return _breaker_from(model, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def breaker(self, model: str) -> BreakerState:
        return _breaker_from(model, await self._redis.hgetall(self._k("br", model)))

    async def breakers(self) -> list[BreakerState]:
        out = []
        start = len(self._k("br", ""))
        async for key in self._redis.scan_iter(match=self._k("br", "*"), count=500):
            out.append(await self.breaker(key[start:]))
        return sorted(out, key=lambda b: b.model)

    # -- stickiness -------------------------------------------------------
    async def get_sticky(self, session_id: str) -> StickyEntry | None:
        raw = await self._redis.get(self._k("st", session_id))
        return StickyEntry.model_validate_json(raw) if raw else None

    async def set_sticky(self, session_id: str, entry: StickyEntry, ttl: float) -> None:
        await self._redis.set(self._k("st", session_id), entry.model_dump_json(), px=max(1, int(ttl * 1000)))

    async def clear_sticky(self, session_id: str) -> None:
        await self._redis.delete(self._k("st", session_id))

    # -- counters ---------------------------------------------------------
    async def incr(self, name: str, amount: int = 1, ttl: float | None = None) -> int:
        key = self._k("n", name)
        async with self._redis.pipeline(transaction=True) as p:
            p.incrby(key, amount)
            if ttl is not None:
                p.expire(key, max(1, int(ttl)), nx=True)
            res = await p.execute()
        return int(res[0])

    async def get_counter(self, name: str) -> int:
        v = await self._redis.get(self._k("n", name))
        return int(v) if v else 0

    async def aclose(self) -> None:
        await self._redis.aclose()

