"""Counters for limits and budgets: reserve before a model call, settle after it.

Every counter is one fixed window of one limit for one scope (e.g. `budget 50 GBP per day per
tenant` for tenant acme, today): `used` (settled) and `reserved` (requests in flight), both
integers (requests, tokens, or micro-units of a currency). A request reserves its estimate on
every counter that counts it, all or nothing: if any counter would pass its cap
(`used + reserved + amount > cap`), nothing is reserved and the first such counter is named.
Once the answer is known the request settles: `reserved -= estimate; used += actual`. So
concurrent requests can never be admitted past a cap, whichever replica they arrive on; the
real cost can exceed the estimate only by what the estimate missed (a request without
`max_tokens` is estimated with a default answer length).

Why not the `limits` library: it counts hits against rate limits (moving / fixed / sliding
windows) and has no reservation to settle later with a different amount, no all-or-nothing
hit across several limits, and no per-window notice flags. Building them on top of it would
take a second round trip per request (hit, then correct the amount) and a race between the
limits of one request. Hand-written, one Lua script does both steps: the Redis store sends a
request's settlement with the next reservation (one round trip per request, see
`policyengine.state.limits_redis`); benchmarks/limits_bench.py measures it beside `limits`
(`FixedWindowRateLimiter.hit`) in the same run and counts the round trips.

Notices: each counter may carry thresholds (counter values); the reservation or settlement that
first brings a counter's `used + reserved` to a threshold in a window reports it, once per window,
whichever replica it ran on (a settlement matters when the real use exceeds the estimate, or
for an approved overage, which is charged without a reservation).

The window is part of the counter's key, so a new window is a new counter; an ended one is kept
until its `keep_until` (one more window: `usage` shows the previous window) and then expires
(Redis `PEXPIREAT`; in memory, dropped when purged). A reservation whose request never settles
(the process died) is freed when its window ends.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote

__all__ = ["Counter", "CounterState", "Crossed", "LimitStore", "LimitStoreUnavailable", "MemoryLimitStore",
           "Reservation", "Settlement", "counter_key", "split_key"]


class LimitStoreUnavailable(Exception):
    """The counters cannot be reached (Redis down or too slow): each limit's `on outage` decides."""


_PLAIN = re.compile(r"[A-Za-z0-9=,:.\-_@]*")


def _q(part: str) -> str:
    return part if _PLAIN.fullmatch(part) else quote(part, safe="=,:.-_@")


_KEYS: dict[tuple[str | None, str, str, int], str] = {}


def counter_key(tenant: str | None, rule_id: str, scope: str, window_start: int) -> str:
    """The name of one counter: `tenant|rule|scope|window` (each part %-quoted; tenant `*` for a limit
    not counted per tenant, which only admins see). Recent keys are remembered (a request's keys
    repeat until their window ends)."""
    k = (tenant, rule_id, scope, window_start)
    key = _KEYS.get(k)
    if key is None:
        if len(_KEYS) > 8192:
            _KEYS.clear()
        key = _KEYS[k] = f"{_q(tenant or '*')}|{_q(rule_id)}|{_q(scope)}|{window_start}"
    return key


def split_key(key: str) -> tuple[str, str, str, int]:
    """(tenant, rule_id, scope, window start) of a counter key."""
    t, r, s, w = key.split("|")
    return unquote(t), unquote(r), unquote(s), int(w)


@dataclass(slots=True)
class Counter:
    """One counter a request reserves against: its key, the cap, this request's amount, when the
    window ends (epoch seconds), the counter values at which a notice is due, and until when the
    store keeps it (`keep_until`, 0: the window's end; the gateway keeps a counter for one more
    window, so `usage` can show the previous one)."""

    key: str
    cap: int
    amount: int
    expires_at: float
    thresholds: tuple[int, ...] = ()
    keep_until: float = 0.0

    @property
    def kept_until(self) -> float:
        """When the store may drop this counter."""
        return self.keep_until or self.expires_at


@dataclass(slots=True)
class Reservation:
    """The answer to `reserve`: `ok`, else `refused` (the index of the first counter that would
    pass its cap; nothing was reserved). `levels[i]` is counter i's (used, reserved) after the
    reservation (when refused: as read). `crossed[i]` the indexes of counter i's thresholds this
    reservation reached first in its window."""

    ok: bool
    refused: int | None = None
    levels: list[tuple[int, int]] = field(default_factory=list)
    crossed: list[tuple[int, ...]] = field(default_factory=list)


Settlement = tuple[Counter, int, int]
"""(counter, reserved, actual): give back `reserved` of what the request reserved on the counter and
add `actual` to its settled value (`reserved` 0: a charge without a reservation)."""

Crossed = Callable[[int, int, int], None]
"""Told `(i, j, level)` when settlement i brought its counter to threshold j first in its window
(`level` = used + reserved after it). May be called after `settle` returned (a store that sends
settlements later calls it then); must not raise."""


@dataclass(frozen=True, slots=True)
class CounterState:
    """One counter as `usage` lists it: `expires_at` is when the store drops it (its window may have
    ended before: the key names the window)."""

    key: str
    used: int
    reserved: int
    expires_at: float


@runtime_checkable
class LimitStore(Protocol):
    """Where the counters live: this process (`MemoryLimitStore`) or Redis (`RedisLimitStore`).
    Every method raises `LimitStoreUnavailable` when the counters cannot be reached."""

    async def reserve(self, counters: list[Counter]) -> Reservation:
        """Reserve each counter's amount, all or nothing, atomically (one round trip)."""
        ...

    async def settle(self, settled: list[Settlement], on_crossed: Crossed | None = None) -> None:
        """For each (counter, reserved, actual): `reserved -= reserved; used += actual`, then the
        thresholds it reached are told to `on_crossed`. May be applied after it returns, but only
        in the safe direction: until it is applied the counter holds at least what the request
        used (a store may delay a settlement whose `actual <= reserved`, never one that adds)."""
        ...

    async def flush(self) -> None:
        """Apply every settlement this process still holds (before reading or closing)."""
        ...

    async def usage(self, tenant: str | None) -> list[CounterState]:
        """The counters the store still keeps for `tenant` (None: every tenant, and the ones not
        counted per tenant): the current windows', and ended ones until their `keep_until`."""
        ...

    async def set_used(self, counter: Counter, used: int) -> None:
        """Set a counter's settled value (tests, dry runs, an operator's correction)."""
        ...

    async def aclose(self) -> None:
        """Apply what is held (`flush`, best effort), then release connections."""
        ...


class _Cell:
    __slots__ = ("expires_at", "flags", "keep_until", "reserved", "used")

    def __init__(self, expires_at: float, keep_until: float) -> None:
        self.used = 0
        self.reserved = 0
        self.expires_at = expires_at
        self.keep_until = keep_until
        self.flags: set[int] = set()


def _reached(thresholds: tuple[int, ...], cell: _Cell) -> tuple[int, ...]:
    """The thresholds `cell` has reached and not reported yet this window (now flagged as reported)."""
    after = cell.used + cell.reserved
    hit = tuple(j for j, t in enumerate(thresholds) if after >= t and j not in cell.flags)
    cell.flags.update(hit)
    return hit


class MemoryLimitStore:
    """The counters in this process (one replica). Atomic because nothing awaits inside a step."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._cells: dict[str, _Cell] = {}
        self._clock = clock

    def _cell(self, c: Counter, now: float) -> _Cell:
        cell = self._cells.get(c.key)
        if cell is None or cell.expires_at <= now:
            cell = self._cells[c.key] = _Cell(c.expires_at, c.kept_until)
            if len(self._cells) > 4096 and len(self._cells) % 1024 == 0:
                self._purge(now)
        return cell

    def _purge(self, now: float) -> None:
        for k in [k for k, v in self._cells.items() if v.keep_until <= now]:
            del self._cells[k]

    async def reserve(self, counters: list[Counter]) -> Reservation:
        """See `LimitStore.reserve`."""
        now = self._clock()
        get = self._cells.get
        cells = []
        for c in counters:  # check every counter first: all or nothing
            cell = get(c.key)
            if cell is None or cell.expires_at <= now:
                cell = self._cell(c, now)
            if c.amount > 0 and cell.used + cell.reserved + c.amount > c.cap:
                rest = [self._cell(k, now) for k in counters[len(cells):]]
                return Reservation(False, len(cells), [(x.used, x.reserved) for x in (*cells, *rest)])
            cells.append(cell)
        levels = []
        crossed: list[tuple[int, ...]] = []
        for c, cell in zip(counters, cells, strict=True):
            cell.reserved += c.amount
            levels.append((cell.used, cell.reserved))
            crossed.append(_reached(c.thresholds, cell) if c.thresholds else ())
        return Reservation(True, None, levels, crossed)

    async def settle(self, settled: list[Settlement], on_crossed: Crossed | None = None) -> None:
        """See `LimitStore.settle` (applied at once). A counter whose window ended meanwhile is not revived."""
        for i, (c, reserved, actual) in enumerate(settled):
            cell = self._cells.get(c.key)
            if cell is None:  # (a cell found is this counter's window: the key names the window)
                now = self._clock()
                if c.kept_until <= now:
                    continue
                cell = self._cell(c, now)
            cell.reserved = max(0, cell.reserved - reserved)
            cell.used += actual
            if actual and c.thresholds and on_crossed is not None:
                for j in _reached(c.thresholds, cell):
                    on_crossed(i, j, cell.used + cell.reserved)

    async def flush(self) -> None:
        """Nothing is held: settlements apply at once."""

    async def usage(self, tenant: str | None) -> list[CounterState]:
        """See `LimitStore.usage`."""
        now = self._clock()
        head = None if tenant is None else counter_key(tenant, "", "", 0).split("|", 1)[0] + "|"
        return sorted((CounterState(k, v.used, v.reserved, v.keep_until) for k, v in self._cells.items()
                       if v.keep_until > now and (head is None or k.startswith(head))), key=lambda s: s.key)

    async def set_used(self, counter: Counter, used: int) -> None:
        """See `LimitStore.set_used`."""
        self._cell(counter, self._clock()).used = used

    async def aclose(self) -> None:
        """Nothing to release."""
