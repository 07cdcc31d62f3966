"""The limit counters in Redis, shared by every replica: one Lua script, one round trip per request.

A counter is a hash `{prefix}lim:{counter key}` with fields `u` (used), `r` (reserved) and
`nJ` (threshold J already reported this window), expiring one window after its own ends
(`PEXPIREAT` at the counter's `keep_until`: `usage` shows the previous window). The script (`_STEP`) first applies settlements, then reserves: it reads every
counter to reserve, refuses if any would pass its cap, else increments them all. Redis runs a
script alone, so two replicas can never both take the last unit.

One round trip per request: a settlement that only gives back (`actual <= reserved` on every
counter, the usual case: the estimate counts `max_tokens`) is not sent on its own. It waits in
this process and rides on the next reservation's script call (whichever connection carries
it), or on a background flush at most `flush_after` seconds later (and on `flush`, `usage`,
`aclose`), so an idle replica's counters converge within that delay.

Invariant (why the delay is safe): until a request's settlement is applied, each counter holds
`used + reserved >= what it really used`, because the reservation held is the estimate and the
estimate is at least the actual. A delayed settlement therefore only ever over-charges, for at
most `flush_after`: a concurrent request may be refused early, never admitted past a cap. A
settlement that adds (the real use exceeded the estimate on some counter, an approved overage
charged without a reservation, a failover charged to another model's counter) is sent at once,
with whatever else is waiting, in one script call: the counters then under-count for no longer
than the model call itself did.

A failed script call: if the request never left (the connection could not be made or the pool
had none free) its settlements wait for the next call; otherwise (a timeout or a connection lost
after sending) Redis may or may not have run it, and re-sending could give back a reservation
twice (an under-count: overspend), so they are dropped and logged: their reservations stay
until the window ends (an over-charge). The client is built without retries for the same reason.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .limits import (
    Counter,
    CounterState,
    Crossed,
    LimitStoreUnavailable,
    Reservation,
    Settlement,
    counter_key,
)

__all__ = ["RedisLimitStore"]

log = logging.getLogger("policyengine.limits")

# KEYS: the ns counters to settle, then the counters to reserve.
# ARGV[1] = ns; per settlement: reserved, actual, keep_until_ms, n thresholds, thresholds...;
# per reservation: cap, amount, keep_until_ms, n thresholds, thresholds...
# Returns {reserve, settled}. reserve: {0, used1, reserved1, "j,k", used2, ...} when every counter
# was reserved (just {0} when none was asked), {i, used_i, reserved_i} when counter i would pass its
# cap (nothing reserved). settled[k]: "j,k@level", the thresholds settlement k reached first ("" none).
# A counter past its keep time is not revived (PEXPIREAT in the past deletes it again; it is set last).
_STEP = """
local ns, a = tonumber(ARGV[1]), 2
local settled = {}
for i = 1, ns do
  local k = KEYS[i]
  local r, u, exp, nt = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local left, used = nil, nil
  if r ~= 0 then
    left = redis.call('HINCRBY', k, 'r', -r)
    if left < 0 then redis.call('HSET', k, 'r', 0); left = 0 end
  end
  if u ~= 0 then used = redis.call('HINCRBY', k, 'u', u) end
  settled[i] = ''
  if nt > 0 and u ~= 0 then
    if left == nil then left = tonumber(redis.call('HGET', k, 'r') or '0') end
    local level, crossed = used + left, {}
    for j = 1, nt do
      if level >= tonumber(ARGV[a + 3 + j]) and redis.call('HSETNX', k, 'n' .. j, 1) == 1 then
        crossed[#crossed + 1] = j - 1
      end
    end
    if #crossed > 0 then settled[i] = table.concat(crossed, ',') .. '@' .. level end
  end
  redis.call('PEXPIREAT', k, exp)
  a = a + 4 + nt
end
local spec = {}
for i = ns + 1, #KEYS do
  local cap, amt, exp, nt = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  local ths = {}
  for j = 1, nt do ths[j] = tonumber(ARGV[a + 3 + j]) end
  a = a + 4 + nt
  local v = redis.call('HMGET', KEYS[i], 'u', 'r')
  local u, r = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if amt > 0 and u + r + amt > cap then return {{i - ns, u, r}, settled} end
  spec[i] = {amt, exp, ths, u}
end
local out = {0}
for i = ns + 1, #KEYS do
  local s = spec[i]
  local r = redis.call('HINCRBY', KEYS[i], 'r', s[1])
  local after, crossed = s[4] + r, {}
  for j, t in ipairs(s[3]) do
    if after >= t and redis.call('HSETNX', KEYS[i], 'n' .. j, 1) == 1 then crossed[#crossed + 1] = j - 1 end
  end
  redis.call('PEXPIREAT', KEYS[i], s[2])
  out[#out + 1] = s[4]
  out[#out + 1] = r
  out[#out + 1] = table.concat(crossed, ',')
end
return {out, settled}
"""

# the most settlements one script call carries (the rest wait for the next call)
_BATCH = 256


class _Held:
    """One settlement waiting to be sent, with whom to tell about the thresholds it reaches."""

    __slots__ = ("actual", "counter", "i", "on_crossed", "reserved")

    def __init__(self, counter: Counter, reserved: int, actual: int, i: int, on_crossed: Crossed | None) -> None:
        self.counter, self.reserved, self.actual, self.i, self.on_crossed = counter, reserved, actual, i, on_crossed


class _Unsent(LimitStoreUnavailable):
    """The call failed before it reached Redis; its settlements are held again."""


def _never_sent(exc: BaseException) -> bool:
    """True when the failed call cannot have reached Redis: no connection could be made or taken
    from the pool (redis-py's messages for those cases), so its settlements can be sent again."""
    msg = str(exc)
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)) and (
        "connecting to" in msg or msg.startswith("No connection available") or "Timeout connecting" in msg
        or isinstance(exc, ConnectionRefusedError))


class RedisLimitStore:
    """Counters in Redis under `prefix` (`{prefix}lim:...`). Short socket timeouts: an outage is
    reported (`LimitStoreUnavailable`) within `timeout` seconds, and each limit's `on outage`
    decides what the request does. Settlements that only give back are held for at most
    `flush_after` seconds and sent with the next reservation (see the module's invariant;
    `hold_settlements=False` sends each at once, for comparison).
    `round_trips` counts the script calls this store made (the benchmark reads it)."""

    def __init__(self, url: str, *, prefix: str = "policyengine:", client: Redis | None = None,
                 timeout: float = 0.5, max_connections: int = 32, pool_timeout: float = 2.0,
                 flush_after: float = 0.05, hold_settlements: bool = True) -> None:
        # a blocking pool: a burst of requests waits (up to pool_timeout) for one of max_connections
        # instead of failing with "too many connections" (which would count as an outage); Redis runs
        # the scripts one at a time anyway, so a few connections carry the load. No retries: a script
        # that may have run is never sent again (see the module docstring).
        pool = BlockingConnectionPool.from_url(url, decode_responses=True, socket_timeout=timeout,
                                               socket_connect_timeout=max(timeout, 1.0), max_connections=max_connections,
                                               timeout=pool_timeout, retry=Retry(NoBackoff(), 0))
        self._redis = client or Redis(connection_pool=pool)
        self._prefix = prefix + "lim:"
        self._step = self._redis.register_script(_STEP)
        self._held: list[_Held] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flush_after = flush_after
        self.hold_settlements = hold_settlements  # False: every settlement is its own call (2 per request)
        self.round_trips = 0
        self.dropped = 0  # settlements lost to an ambiguous failure (their reservations stay: over-charged)

    async def reserve(self, counters: list[Counter]) -> Reservation:
        """See `policyengine.state.limits.LimitStore.reserve`: the held settlements go in the same call."""
        batch = self._take()
        out = await self._call(batch, counters)
        res = out[0]
        if res[0] != 0:
            i = int(res[0]) - 1
            levels = [(0, 0)] * len(counters)
            levels[i] = (int(res[1]), int(res[2]))
            return Reservation(False, i, levels)
        levels, crossed = [], []
        for k in range(len(counters)):
            u, r, cr = res[1 + 3 * k: 4 + 3 * k]
            levels.append((int(u), int(r)))
            crossed.append(tuple(int(x) for x in str(cr).split(",") if x != ""))
        return Reservation(True, None, levels, crossed)

    async def settle(self, settled: list[Settlement], on_crossed: Crossed | None = None) -> None:
        """See `policyengine.state.limits.LimitStore.settle`: held when it only gives back, else sent now."""
        if not settled:
            return
        items = [_Held(c, reserved, actual, i, on_crossed) for i, (c, reserved, actual) in enumerate(settled)]
        if self.hold_settlements and all(h.actual <= h.reserved for h in items):
            self._held += items
            self._flush_soon()
            return
        try:
            await self._call(self._take() + items, [])
        except _Unsent:
            return  # held again: sent once Redis answers

    def _flush_soon(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def flush(self) -> None:
        """See `policyengine.state.limits.LimitStore.flush` (raises `LimitStoreUnavailable` when Redis is down)."""
        while self._held:
            await self._call(self._take(), [])

    def _take(self) -> list[_Held]:
        batch, self._held = self._held[:_BATCH], self._held[_BATCH:]
        return batch

    async def _flush_later(self) -> None:
        delay = self.flush_after
        try:
            while self._held:
                await asyncio.sleep(delay)
                try:
                    await self.flush()
                    delay = self.flush_after
                except LimitStoreUnavailable:
                    delay = min(max(delay * 2, 0.5), 5.0)  # Redis is down: retry what was never sent, less often
        finally:
            self._flusher = None

    async def _call(self, batch: list[_Held], counters: list[Counter]) -> list:
        """One script call: apply `batch`, then reserve `counters`. Tells each settlement's
        `on_crossed`. Raises `LimitStoreUnavailable` (the batch is held again if it was never sent)."""
        keys = [self._prefix + h.counter.key for h in batch]
        args: list[int | str] = [len(batch)]
        for h in batch:
            c = h.counter
            args += [h.reserved, h.actual, int(c.kept_until * 1000), len(c.thresholds), *c.thresholds]
        for c in counters:
            keys.append(self._prefix + c.key)
            args += [c.cap, c.amount, int(c.kept_until * 1000), len(c.thresholds), *c.thresholds]
        self.round_trips += 1
        try:
            out = await self._step(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if batch:
                if _never_sent(exc):
                    self._held[:0] = batch
                    self._flush_soon()
                    raise _Unsent(f"limit counters unavailable: {type(exc).__name__}") from exc
                else:
                    self.dropped += len(batch)
                    log.error("%d limit settlements may not have been applied (%s): not sent again; their "
                              "reservations stay until their windows end", len(batch), type(exc).__name__)
            raise LimitStoreUnavailable(f"limit counters unavailable: {type(exc).__name__}") from exc
        for h, cr in zip(batch, out[1], strict=True):
            if cr and h.on_crossed is not None:
                js, level = str(cr).split("@")
                for j in js.split(","):
                    try:
                        h.on_crossed(h.i, int(j), int(level))
                    except Exception as e:  # a notice must never break a request
                        log.warning("limit notice failed: %s", e)
        return out

    async def usage(self, tenant: str | None) -> list[CounterState]:
        """See `policyengine.state.limits.LimitStore.usage` (a SCAN over the counters' prefix, after
        this process's held settlements are applied)."""
        await self.flush()
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
                p.pexpireat(key, int(counter.kept_until * 1000))
                await p.execute()
        except (RedisError, OSError) as exc:
            raise LimitStoreUnavailable(f"limit counters unavailable: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Apply the held settlements (best effort: Redis may be down), then close the connection pool."""
        try:
            await self.flush()
        except LimitStoreUnavailable as exc:
            log.error("%d limit settlements not applied at shutdown: %s", len(self._held), exc)
        if self._flusher is not None:
            self._flusher.cancel()
        await self._redis.aclose()


def _glob_escape(s: str) -> str:
    return "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in s)
