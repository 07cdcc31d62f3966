"""Counting limits and budgets for a chat request: reserve before the model call, settle after.

The policy says which limits count a request (`Decision.limits`, pure); this module does the
I/O. `admit(call, body)` reserves the request's estimate on every counter (one store call, all
or nothing) and, when a counter is at its limit, lets the policy's `at_limit` say what the
request becomes: refused (`LimitExceeded`, a 429 with `Retry-After` = the end of the window),
rerouted to cost-0 models (reserved again, for the limits that still count it), or held for
approval (the approved overage is charged without a reservation). `charge(call, ...)` computes
what the answer used and cost (from the upstream's usage, else counted from the text:
`usage_source: counted`), settles the reservation with it and returns the fields the outcome
row records: `usage`, `usage_source`, `cost`, `limits`. `release(call)` gives a reservation back
when a call ends without an answer on a path that does not charge (cancelled, the log failed).

Settling follows the model that answered: a limit `on model X` counts the request only if X
answered, and a counter scoped `per model` is charged on the answering model's counter. After a
failover, the reservation made on the primary's counter is given back and the answering model's
counter is charged (without a reservation: the answer already happened, so it may pass its cap,
like an approved overage). A limit `on model X` that did not count the request (X was not the
primary) is charged when X answers after a failover, the same way: the counter and `/v1/usage`
show what X really served, and requests with X as their primary meet its cap; the failover leg
itself is not refused at X's cap (the cap is checked on reservation, before the chain runs).

Estimates: tokens = the prompt estimate (`dispatch.tokens`) + `max_tokens` (or
`limits_default_completion_tokens`); spend = those tokens x the primary's cost, rounded up to
a micro-unit. Counter scopes: `tenant` is implied by `user`, `key` and `use_case` (those names
are the tenant's own); a limit per `model` alone, or with no `per`, is one counter for the
whole service (only admins see it in `/v1/usage`).

When the store is unreachable, each limit's `on outage` decides: fail open (the request goes
on, uncounted, and the row says `limits: failed_open`) or fail closed (`LimitsUnavailable`, a
503). Budgets fail closed by default, rate limits open.

CPU: a request's counters (keys, scopes, windows, prices) are computed once per caller, limits
and window and then reused from `Limiter`'s plan cache until the first of their windows ends;
per request only the amounts are computed (integers: money is micro-units, a model's price a
ratio of integers per token).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from policyengine.dispatch.tokens import estimate_prompt_tokens, requested_output_tokens
from policyengine.gateway.errors import LimitExceeded, LimitsUnavailable
from policyengine.ir import MICRO, CompiledLimit
from policyengine.state.limits import (
    Counter,
    LimitStore,
    LimitStoreUnavailable,
    Settlement,
    counter_key,
    split_key,
)
from policyengine.types import Action, LimitHit, Principal, Routing

if TYPE_CHECKING:
    from policyengine.evaluator import CompiledPolicy

# `call` below is a policyengine.gateway.call.Call (not imported: call -> runtime -> limits)
Call = Any

__all__ = ["WINDOWS", "Admission", "Limiter", "Slot", "admit", "charge", "describe_usage", "kept_until", "release",
           "usage_report", "window_bounds"]

log = logging.getLogger("policyengine.gateway")

SHADOW_CAP = 2**62  # the store's cap for a shadow limit's counter: it counts, it never refuses


def window_bounds(lm: CompiledLimit, now: float) -> tuple[int, float]:
    """(start, end) in epoch seconds of the fixed window of `lm` that holds `now`: windows are
    aligned to the epoch (days start at 00:00 UTC), `month` is the calendar month (UTC)."""
    if lm.window_s:
        start = int(now // lm.window_s) * lm.window_s
        return start, float(start + lm.window_s)
    dt = datetime.fromtimestamp(now, UTC)
    first = datetime(dt.year, dt.month, 1, tzinfo=UTC)
    nxt = datetime(dt.year + dt.month // 12, dt.month % 12 + 1, 1, tzinfo=UTC)
    return int(first.timestamp()), nxt.timestamp()


def kept_until(lm: CompiledLimit, end: float) -> float:
    """Until when a counter of the window ending at `end` is kept: the end of the next window (so
    `/v1/usage` can show the previous window beside the current one)."""
    return end + lm.window_s if lm.window_s else window_bounds(lm, end)[1]


def scope_of(lm: CompiledLimit, action: Action, principal: Principal, model: str | None) -> tuple[str | None, str]:
    """(tenant the counter belongs to or None for a service-wide one, `name=value,...` of the scope)."""
    parts = []
    local = False
    for s in lm.scope:
        if s == "tenant":
            v, local = principal.tenant, True
        elif s == "user":
            v, local = action.actor or "-", True
        elif s == "key":
            v, local = principal.key_id, True
        elif s == "use_case":
            v, local = action.use_case or "-", True
        else:
            v = model or "-"
        parts.append(f"{s}={v}")
    return (principal.tenant if local else None), ",".join(parts)


def _micro(amount: Decimal) -> int:
    return int((amount * MICRO).to_integral_value(ROUND_CEILING))


def _rate(policy: CompiledPolicy, model: str | None) -> tuple[int, int] | None:
    """A model's price in micro-units per token as (numerator, denominator); None: not priced."""
    spec = policy.models.get(model or "")
    if spec is None or not spec.cost_per_1k:
        return None
    return (Decimal(spec.cost_per_1k) * MICRO / 1000).as_integer_ratio()


def _units_of(rate: tuple[int, int] | None, tokens: int) -> int:
    """The micro-units `tokens` cost at `rate`, rounded up (= `_micro(spec.cost_of(tokens))`)."""
    return -(-tokens * rate[0] // rate[1]) if rate is not None else 0


def show_amount(lm: CompiledLimit, units: int) -> str:
    """A counter value in the limit's terms: `12`, `0.25 GBP`."""
    if lm.kind == "spend":
        q, r = divmod(units, MICRO)
        return f"{q}.{r:06d}".rstrip("0") + f" {lm.currency}" if r else f"{q} {lm.currency}"
    return str(units)


def describe_usage(lm: CompiledLimit, level: int, scope: str) -> str:
    """`spend 49.9 GBP of 50 GBP per day (tenant=acme)`: how far a limit is used."""
    where = f" ({scope})" if scope else ""
    return f"{lm.kind} {show_amount(lm, level)} of {lm.limit_text} per {lm.window}{where}"


_KIND = {"requests": 0, "tokens": 1, "spend": 2}


@dataclass(slots=True, frozen=True)
class Slot:
    """Where one limit counts one caller's request in one window: the limit, its counter key and
    scope (`model=` the hit's model, the chain's primary), the window's start and end (epoch
    seconds) and the counted model's price (micro-units per token; None: not priced). `kind`
    (0 requests, 1 tokens, 2 spend), `cap` and `thresholds` repeat the limit's, for the hot path
    (a `shadow` limit's counter has no cap and no thresholds: it counts, it never refuses nor
    notifies; `admit` logs its crossing); `keep` is until when the store keeps the counter."""

    hit: LimitHit
    lm: CompiledLimit
    tenant: str | None
    key: str
    scope: str
    start: int
    end: float
    rate: tuple[int, int] | None
    kind: int
    cap: int
    thresholds: tuple[int, ...]
    keep: float
    shadow: bool = False

    def amount(self, tokens: int) -> int:
        """What a request of `tokens` estimated tokens reserves on this counter."""
        return 1 if self.kind == 0 else tokens if self.kind == 1 else _units_of(self.rate, tokens)

    def counter(self, amount: int) -> Counter:
        """This slot's counter holding `amount`."""
        return Counter(self.key, self.cap, amount, self.end, self.thresholds, self.keep)


@dataclass(slots=True)
class Admission:
    """What a call holds on the limit counters: each slot with its counter, and how: `reserved`
    (the counters hold this call's estimate), else charged afterwards without a reservation
    (`mode` = "approved_overage") or not counted at all ("failed_open")."""

    entries: list[tuple[Slot, Counter]]
    reserved: bool
    mode: str = "reserved"


_PLANS_MAX = 4096


class Limiter:
    """Builds a request's counters and talks to the store. `clock` is injectable (tests roll
    windows over without sleeping)."""

    def __init__(self, store: LimitStore, *, clock: Callable[[], float] = time.time,
                 default_completion_tokens: int = 256) -> None:
        self.store = store
        self.clock = clock
        self.default_completion_tokens = default_completion_tokens
        # (policy id, (rule, model)..., caller) -> (policy, slots, valid until): see `slots`
        self._plans: dict[tuple[Any, ...], tuple[Any, list[Slot], float]] = {}

    def estimate_tokens(self, body: dict[str, Any], prompt_tokens: int | None = None) -> int:
        """Tokens a request may use: its prompt (given, else estimated) plus the answer it asks for."""
        out = requested_output_tokens(body) or self.default_completion_tokens
        return (prompt_tokens if prompt_tokens is not None else estimate_prompt_tokens(body)) + out

    def slots(self, policy: CompiledPolicy, hits: list[LimitHit], action: Action, principal: Principal) -> list[Slot]:
        """The counters `hits` count this caller's request on, now. Cached per policy, limits and
        caller until the first of their windows ends (a new window is a new counter key)."""
        now = self.clock()
        k = (id(policy), *[(h.rule_id, h.model) for h in hits], principal.tenant, principal.key_id, action.actor,
             action.use_case)
        got = self._plans.get(k)
        if got is not None and got[0] is policy and now < got[2]:
            return got[1]
        out = []
        for h in hits:
            lm = policy.limit(h.rule_id)
            if lm is None:
                continue
            start, end = window_bounds(lm, now)
            tenant, scope = scope_of(lm, action, principal, h.model)
            cap, thresholds = (SHADOW_CAP, ()) if h.shadow else (lm.cap, lm.thresholds)
            out.append(Slot(h, lm, tenant, counter_key(tenant, lm.rule_id, scope, start), scope, start, end,
                            _rate(policy, h.model) if lm.kind == "spend" else None, _KIND[lm.kind], cap,
                            thresholds, kept_until(lm, end), h.shadow))
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        self._plans[k] = (policy, out, min((s.end for s in out), default=now + 60.0))
        return out

    def counters(self, policy: CompiledPolicy, hits: list[LimitHit], action: Action, principal: Principal,
                 tokens: int, *, charge_only: bool = False) -> list[tuple[Slot, Counter]]:
        """The counters `hits` reserve for a request of `tokens` estimated tokens (amount 0 with
        `charge_only`: nothing is reserved, the answer is charged afterwards)."""
        slots = self.slots(policy, hits, action, principal)
        if charge_only:
            return [(s, Counter(s.key, s.cap, 0, s.end, s.thresholds, s.keep)) for s in slots]
        # inline (this runs on every counted request): Slot.amount
        return [(s, Counter(s.key, s.cap, 1 if s.kind == 0 else tokens if s.kind == 1 else
                            -(-tokens * s.rate[0] // s.rate[1]) if s.rate is not None else 0, s.end, s.thresholds,
                            s.keep))
                for s in slots]


async def admit(call: Call, body: dict[str, Any]) -> None:
    """Reserve this chat request on the limits that count it (`call.admission`), or change
    `call.decision` as the policy says at the limit. Raises `LimitExceeded` (its row recorded)
    when it is refused, `LimitsUnavailable` when the store is down and a limit fails closed."""
    rt = call.runtime
    limiter = rt.limiter
    if limiter is None or not call.decision.limits:
        return
    policy, m = call.policy, rt.metrics
    tokens = limiter.estimate_tokens(body, call.action.prompt_tokens)
    for _ in range(3):  # a reroute re-reserves once for the limits that still count the request
        d = call.decision
        if not d.limits:
            return
        entries = limiter.counters(policy, d.limits, call.action, call.principal, tokens)
        try:
            res = await limiter.store.reserve([c for _, c in entries])
        except LimitStoreUnavailable as exc:
            closed = [s.lm.rule_id for s, _ in entries if not s.lm.fail_open]
            if closed:
                m.limit_checks.labels("failed_closed").inc()
                log.error("decision %s: %s; refused (fail closed: %s)", call.decision_id, exc, ", ".join(closed))
                await call.record(extra={"outcome": "limits_unavailable", "limits": {"failed_closed": closed}})
                raise LimitsUnavailable("the limit counters are unavailable and a limit that counts this request "
                                        f"fails closed ({', '.join(closed)}); retry later",
                                        decision_id=call.decision_id, decision=call.decision)
            m.limit_checks.labels("failed_open").inc()
            log.warning("decision %s: %s; the request goes on uncounted (fail open)", call.decision_id, exc)
            call.admission = Admission(entries, reserved=False, mode="failed_open")
            return
        if res.ok:
            m.limit_checks.labels("ok").inc()
            call.admission = Admission(entries, reserved=True)
            if any(res.crossed) or any([s.shadow for s, _ in entries]):
                over = []
                for (s, c), (used, reserved), crossed in zip(entries, res.levels, res.crossed, strict=True):
                    for j in crossed:
                        _notify(call, s.lm, j, used + reserved, s.scope, c)
                    if s.shadow and used + reserved > s.lm.cap:
                        over.append((s.hit, describe_usage(s.lm, used + reserved, s.scope)))
                if over:  # what the shadow limits would have done: on the decision (and its log row), not enforced
                    call.decision = policy.shadow_at_limit(call.decision, over)
                    log.info("decision %s: shadow limit(s) at their limit, not enforced: %s", call.decision_id,
                             "; ".join(f"{h.rule_id} {why}" for h, why in over))
            return
        assert res.refused is not None
        slot, c = entries[res.refused]
        hit, lm, scope = slot.hit, slot.lm, slot.scope
        used, reserved = res.levels[res.refused]
        why = describe_usage(lm, used + reserved, scope) + f": this request needs {show_amount(lm, c.amount)} more"
        m.limit_exceeded.labels(lm.kind, lm.on_limit).inc()
        call.decision = new = policy.at_limit(d, [(hit, why)], call.action)
        if new.effect == "deny":
            m.limit_checks.labels("exceeded").inc()
            retry_after = max(1.0, c.expires_at - limiter.clock())
            info = {"rule_id": lm.rule_id, "kind": lm.kind, "limit": lm.limit_text, "window": lm.window,
                    "scope": scope, "used": show_amount(lm, used), "reserved": show_amount(lm, reserved),
                    "resets_at": c.expires_at}
            await call.record(extra={"outcome": "limited", "limit": info})
            m.chat_requests.labels("-", "limited").inc()
            raise LimitExceeded(f"{why} ({lm.source or lm.rule_id}); retry after {math.ceil(retry_after)}s",
                                retry_after=retry_after, decision_id=call.decision_id, decision=new,
                                extra={"limit": info})
        if new.effect in ("require_approval", "escalate"):
            m.limit_checks.labels("held").inc()
            # approved, the overage runs and is charged afterwards (no reservation: the limit is spent)
            call.admission = Admission(limiter.counters(policy, d.limits, call.action, call.principal, tokens,
                                                        charge_only=True), reserved=False, mode="approved_overage")
            return
        m.limit_checks.labels("rerouted").inc()
    call.admission = None


def _usage_numbers(usage: Any, body: dict[str, Any], text: str) -> tuple[int, int, str]:
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int):
            return p, c, "upstream"
        t = usage.get("total_tokens")
        if isinstance(t, int):
            return t, 0, "upstream"
    return estimate_prompt_tokens(body), math.ceil(len(text) / 4), "counted"


def _currency(policy: CompiledPolicy, model: str | None) -> str | None:
    spec = policy.models.get(model or "")
    if spec is not None and spec.cost_currency:
        return spec.cost_currency
    return next((lm.currency for lm in policy.limits if lm.currency), None)


def _moved(slot: Slot, call: Call, model: str) -> tuple[Counter, str]:
    """The counter of `slot`'s limit and window scoped to `model` instead of the primary (a limit
    counted `per model` after a failover), holding nothing, and its scope."""
    tenant, scope = scope_of(slot.lm, call.action, call.principal, model)
    return Counter(counter_key(tenant, slot.lm.rule_id, scope, slot.start), slot.lm.cap, 0, slot.end,
                   slot.lm.thresholds, slot.keep), scope


def _answering_model_slots(call: Call, model: str | None, adm: Admission | None) -> list[Slot]:
    """The slots of the limits `on model <model>` that count this caller's request but were not
    reserved for it, because `model` was not the chain's primary (it answered after a failover)."""
    rt, policy, d = call.runtime, call.policy, call.decision
    if model is None or rt.limiter is None or not policy.limits or not d.routing.chain or d.routing.chain[0] == model:
        return []
    have = {s.lm.rule_id for s, _ in adm.entries} if adm is not None else set()
    hits = [h for h in policy.limits_for(call.action, Routing(chain=[model]))
            if h.rule_id not in have and (lm := policy.limit(h.rule_id)) is not None and lm.models is not None]
    return rt.limiter.slots(policy, hits, call.action, call.principal) if hits else []


async def charge(call: Call, model: str | None, usage: Any, body: dict[str, Any], text: str = "",
                 *, answered: bool = True, sent: bool = True) -> dict[str, Any]:
    """What the answer used and cost, settled on the call's limits; the outcome row's fields.
    `answered` False (the chain failed, the call was cancelled before anything came): nothing was
    used; reservations are released (a request limit still counts the request on the primary,
    unless `sent` is False: the request never reached a model).
    `model` the model that answered: the settlement follows it (see the module docstring).
    Settles at most once per call; never raises: a failed settle is logged."""
    rt, policy = call.runtime, call.policy
    out: dict[str, Any] = {}
    total = 0
    cost = Decimal(0)
    if answered:
        p, c, source = _usage_numbers(usage, body, text)
        total = p + c
        spec = policy.models.get(model or "")
        cost = spec.cost_of(total) if spec is not None else Decimal(0)
        cur = _currency(policy, model)
        shown = usage if source == "upstream" else {"prompt_tokens": p, "completion_tokens": c, "total_tokens": total}
        out = {"usage": shown,
               "usage_source": source,
               "cost": {"amount": format(cost.normalize(), "f"), "currency": cur}}
        rt.metrics.tokens.labels(model or "-", source).inc(total)
        if cost:
            rt.metrics.spend.labels(model or "-", cur or "-").inc(float(cost))
    adm: Admission | None = call.admission
    extra_slots = _answering_model_slots(call, model, adm) if answered else []
    if adm is None and not extra_slots:
        return out
    call.admission = None
    if adm is not None and adm.mode == "failed_open":
        out["limits"] = {"mode": "failed_open"}
        return out
    settled: list[Settlement] = []
    scopes: list[tuple[Slot, str]] = []  # settled[i]'s slot and scope (for its notices)
    counters = []
    spent: int | None = None
    for slot in extra_slots:  # limits on the fallback that answered: charged, nothing was reserved
        actual = 1 if slot.kind == 0 else total if slot.kind == 1 else _units_of(slot.rate, total)
        settled.append((slot.counter(0), 0, actual))
        scopes.append((slot, slot.scope))
        counters.append({"rule_id": slot.lm.rule_id, "scope": slot.scope, "charged": show_amount(slot.lm, actual)
                         if slot.kind == 2 else str(actual), "answered_by": model})
    if adm is None:
        adm = Admission([], reserved=False, mode="charged")
    for slot, counter in adm.entries:
        lm = slot.lm
        held = counter.amount if adm.reserved else 0
        kind = slot.kind
        if not answered:
            settled.append((counter, held, 1 if kind == 0 and sent else 0))
            scopes.append((slot, slot.scope))
            counters.append({"rule_id": lm.rule_id, "scope": slot.scope,
                             "charged": "1" if kind == 0 and sent else show_amount(lm, 0)})
            continue
        if lm.models is not None and model not in lm.models:
            # another model answered (a failover): this limit does not count it
            settled.append((counter, held, 0))
            scopes.append((slot, slot.scope))
            counters.append({"rule_id": lm.rule_id, "scope": slot.scope, "charged": show_amount(lm, 0),
                             "released": f"answered by {model}"})
            continue
        if kind == 0:
            actual, shown_actual = 1, "1"
        elif kind == 1:
            actual = total
            shown_actual = str(total)
        else:  # the model that answered is charged at its own price (a fallback may cost more or less)
            if spent is None:
                spent = _units_of(slot.rate, total) if model == slot.hit.model else _micro(cost)
            actual = spent
            shown_actual = show_amount(lm, actual)
        if model is not None and model != slot.hit.model and "model" in lm.scope:
            # the counter is per model: give the primary's reservation back, charge the answering model's
            other, scope = _moved(slot, call, model)
            settled.append((counter, held, 0))
            scopes.append((slot, slot.scope))
            settled.append((other, 0, actual))
            scopes.append((slot, scope))
            counters.append({"rule_id": lm.rule_id, "scope": scope, "charged": shown_actual,
                             "moved_from": slot.scope})
            continue
        settled.append((counter, held, actual))
        scopes.append((slot, slot.scope))
        counters.append({"rule_id": lm.rule_id, "scope": slot.scope, "charged": shown_actual})

    def crossed(i: int, j: int, level: int) -> None:
        slot, scope = scopes[i]
        _notify(call, slot.lm, j, level, scope, settled[i][0])

    try:
        await rt.limiter.store.settle(settled, crossed)  # type: ignore[union-attr]
    except LimitStoreUnavailable as exc:
        log.error("decision %s: usage not settled on its limits: %s", call.decision_id, exc)
        out["limits_settled"] = False
    out["limits"] = {"mode": adm.mode, "counters": counters}
    return out


async def release(call: Call, *, sent: bool = False) -> None:
    """Give back what `call` still holds on the limit counters: it ends without an answer on a path
    that records no charge (held for approval, refused, the client left while it waited). With
    `sent` (the request reached a model) a request limit keeps counting it. No-op when nothing
    is held (the call was settled); never raises."""
    if call.admission is not None:
        await charge(call, None, None, {}, answered=False, sent=sent)


def _notify(call: Call, lm: CompiledLimit, j: int, level: int, scope: str, counter: Counter) -> None:
    """Send the `at P% notify` notice of threshold j (once per window: the store said it is the first)."""
    pct, channels = lm.notify[j]
    rt = call.runtime
    tenant = split_key(counter.key)[0]
    text = (f"Limit {pct:g}% reached: {describe_usage(lm, level, scope)} - {lm.source} "
            f"(tenant {tenant}; the window resets at "
            f"{datetime.fromtimestamp(counter.expires_at, UTC).isoformat(timespec='seconds')})")
    payload = {"event": "limit_threshold", "tenant": call.principal.tenant, "rule_id": lm.rule_id,
               "percent": pct, "scope": scope, "used": show_amount(lm, level), "limit": lm.limit_text,
               "window": lm.window, "resets_at": counter.expires_at, "text": text}
    sender = rt.limit_sender
    for ch in channels:
        rt.metrics.limit_notices.labels(ch.kind).inc()
        if sender is None:
            log.warning("limit notice not sent (no notifier is running): %s", text)
            continue
        kind, target = ch.kind, ch.target
        if target.startswith("env:"):  # `notify webhook "env:NAME"`: the URL is in the environment
            target = os.environ.get(target[4:], "")
            if not target:
                log.warning("limit notice not sent: %s is not set", ch.target[4:])
                continue
        if kind == "email":
            body: dict[str, Any] = {"to": [target], "subject": f"Limit {pct:g}% reached: {lm.rule_id}", "text": text,
                                    "html": f"<p>{text}</p>"}
        elif kind == "slack":
            body = {"channel": target, "text": text}
        else:
            body = payload
        task = asyncio.get_running_loop().create_task(_send(sender, kind, target, body, f"{counter.key}#{j}"))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Task[None]] = set()  # notices in flight (a task nobody holds may be collected)


async def _send(sender: Any, kind: str, target: str, body: dict[str, Any], key: str) -> None:
    try:
        await sender.send(kind, target, body, key=key)
    except Exception as exc:  # a notice must never break a request
        log.warning("limit notice to %s failed: %s", kind, exc)


WINDOWS = ("current", "previous", "all")
"""What `usage_report` may list: the current windows, the ones just before them, or both."""


async def usage_report(runtime: Any, tenant: str | None, window: str = "current") -> dict[str, Any]:
    """The limit counters of `tenant` (None: every tenant and the service-wide ones), each with its
    limit from the serving policy: used, reserved, remaining, the share used, its window's start
    and end (`resets_at`) and `window_state` (`current`, or `previous`: the window before the
    current one, kept until the current one ends). `window` picks which (one of `WINDOWS`).
    Raises `LimitsUnavailable` when the store cannot be reached."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    limiter: Limiter | None = runtime.limiter
    if limiter is None:
        return {"counters": []}
    policy = runtime.policies.current
    try:
        states = await limiter.store.usage(tenant)
    except LimitStoreUnavailable as exc:
        raise LimitsUnavailable(f"the limit counters are unavailable ({exc}); retry later")
    now = limiter.clock()
    out = []
    for st in states:
        t, rule_id, scope, start = split_key(st.key)
        lm = policy.limit(rule_id)
        if lm is None:  # a limit of an earlier policy version: its counters expire with their window
            continue
        end = window_bounds(lm, start)[1]
        state = "current" if end > now else "previous"
        if window != "all" and state != window:
            continue
        level = st.used + st.reserved
        out.append({
            "tenant": None if t == "*" else t, "rule_id": rule_id, "kind": lm.kind, "limit": lm.limit_text,
            "window": lm.window, "scope": scope, "used": show_amount(lm, st.used),
            "reserved": show_amount(lm, st.reserved), "remaining": show_amount(lm, max(0, lm.amount - level)),
            "percent": round(100 * level / lm.amount, 2) if lm.amount else 100.0, "window_start": start,
            "resets_at": end, "window_state": state, "source": lm.source})
    return {"counters": out}
