"""Fleet state: every model of the serving policy, its deployments, and why each is (not) taking traffic.

`fleet_status(runtime)` reads, in one pass: the policy's models and their deployments (as the
dispatcher calls them), the shared cooldowns (model, deployment and key scopes) and breakers,
this replica's load figures (requests in flight, latency EWMA), the last active health check,
and the upstream latency histogram of this process. Nothing secret is shown: keys appear by
the name of their environment variable, base URLs by their env reference or their scheme,
host and port (never a path with a token or user info).

`clear_cooldown(runtime, scope)` and `reset_breaker(runtime, state_id)` are the operator's
levers (admin only at the transports); each refuses a scope or state id that names no
model or deployment of the serving policy, so a typo is an error, not a silent no-op.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from policyengine.types import EnvRef

if TYPE_CHECKING:
    from policyengine.gateway.runtime import Runtime

__all__ = ["FleetError", "clear_cooldown", "fleet_status", "public_url", "reset_breaker", "state_ids"]


class FleetError(ValueError):
    """An operator's request names no model, deployment or scope of the serving policy."""


def public_url(v: str | EnvRef | None, environ: Any = None) -> str | None:
    """A base URL as an operator may see it: `env(NAME) = scheme://host:port`, without path, query or user info."""
    import os

    env = os.environ if environ is None else environ
    if v is None:
        return None
    name = None
    if isinstance(v, EnvRef):
        name = v.name
        v = env.get(v.name)
        if not v:
            return f"env({name}) (not set)"
    try:
        parts = urlsplit(v)
        host = parts.hostname or "?"
        shown = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        shown = "(malformed URL)"
    return f"env({name}) = {shown}" if name else shown


def _dispatcher(rt: Runtime) -> Any:
    return rt.policies.snapshot().dispatcher


def state_ids(rt: Runtime) -> dict[str, tuple[str, str | None]]:
    """Every state id of the serving policy (`model` or `model@deployment`) -> (model, deployment)."""
    d = _dispatcher(rt)
    out: dict[str, tuple[str, str | None]] = {}
    if d is None:
        return out
    for name in d.models:
        for t in d.targets(name):
            out[t.state_id] = (t.model, t.deployment)
    return out


def _latency(rt: Runtime) -> dict[str, dict[str, float]]:
    """model -> {count, mean_ms} from this process's upstream latency histogram."""
    out: dict[str, dict[str, float]] = {}
    try:
        for metric in rt.metrics.upstream_latency.metric.collect():
            sums: dict[str, float] = {}
            counts: dict[str, float] = {}
            for s in metric.samples:
                model = s.labels.get("model")
                if model is None:
                    continue
                if s.name.endswith("_sum"):
                    sums[model] = s.value
                elif s.name.endswith("_count"):
                    counts[model] = s.value
            for m, n in counts.items():
                if n:
                    out[m] = {"count": n, "mean_ms": round(sums.get(m, 0.0) / n * 1000, 1)}
    except Exception:  # metrics are a view: never fail the status for them
        pass
    return out


def _attempt_counts(rt: Runtime) -> dict[str, dict[str, float]]:
    """model -> {outcome: count} of this process's upstream attempts."""
    out: dict[str, dict[str, float]] = {}
    try:
        for metric in rt.metrics.attempts.metric.collect():
            for s in metric.samples:
                if s.name.endswith("_total") and "model" in s.labels:
                    cls = s.labels.get("error_class") or "ok"
                    out.setdefault(s.labels["model"], {})[cls] = s.value
    except Exception:
        pass
    return out


async def fleet_status(rt: Runtime) -> dict[str, Any]:
    """The fleet as the dispatcher sees it now (see the module docstring). JSON-ready."""
    now = time.time()
    snap = rt.policies.snapshot()
    d = snap.dispatcher
    policy = snap.policy
    cooldowns = [c for c in await rt.state.cooldowns() if c.until > now]
    breakers = {b.model: b for b in await rt.state.breakers()}
    latency = _latency(rt)
    counts = _attempt_counts(rt)
    health = getattr(d, "health", None) if d is not None else None
    last_health = dict(getattr(health, "last", {}) or {})
    models = []
    for name, spec in sorted(policy.models.items()):
        tgts = d.targets(name) if d is not None and name in d.models else []
        deployments = []
        for t in tgts:
            sid = t.state_id
            cds = [{"scope": c.scope, "reason": c.reason, "until": c.until, "remaining_s": round(c.until - now, 1)}
                   for c in cooldowns
                   if c.scope == f"model:{sid}" or c.scope.startswith(f"key:{sid}/")]
            b = breakers.get(sid)
            st = d.balancer.stats.get(sid) if d is not None else None
            breaker = b.model_dump() if b is not None else {"model": sid, "state": "closed", "failures": 0}
            if b is not None and b.state == "open" and b.opened_until is not None and b.opened_until <= now:
                breaker["state"] = "half_open"  # open time over: the next request is its probe
            model_cd = next((c for c in cds if c["scope"] == f"model:{sid}"), None)
            keys = [k.name for k in t.spec.keys]
            keys_cooling = {c["scope"].split("/", 1)[1] for c in cds if c["scope"].startswith("key:")}
            if model_cd is not None:
                status = "cooling_down"
            elif breaker["state"] == "open":
                status = "breaker_open"
            elif keys and set(keys) <= keys_cooling:
                status = "all_keys_cooling_down"
            elif last_health.get(sid) is False:
                status = "unhealthy"
            else:
                status = "available"
            deployments.append({
                "state_id": sid, "deployment": t.deployment, "status": status,
                "base_url": public_url(t.spec.base_url), "region": t.spec.region, "keys": keys,
                "weight": t.weight, "max_concurrency": t.max_concurrency,
                "healthy": last_health.get(sid), "cooldowns": cds, "breaker": breaker,
                "outstanding": st.outstanding if st is not None else 0,
                "ewma_ms": round(st.ewma_ms, 1) if st is not None and st.ewma_ms is not None else None,
            })
        statuses = {x["status"] for x in deployments}
        models.append({
            "name": name, "provider": spec.provider.value, "upstream_model": spec.upstream_model,
            "self_hosted": spec.self_hosted, "context": spec.context, "balance": spec.balance,
            "status": "available" if "available" in statuses else (sorted(statuses)[0] if statuses else "unknown"),
            "deployments": deployments, "latency": latency.get(name), "attempts": counts.get(name, {}),
            "file": spec.file, "line": spec.line,
        })
    return {"object": "fleet", "policy": {"name": policy.name, "version": policy.version, "hash": policy.hash},
            "now": now, "models": models,
            "hedges": d.hedges.counts() if d is not None else {},
            "health_checks": health is not None}


async def clear_cooldown(rt: Runtime, scope: str) -> dict[str, Any]:
    """Clear one cooldown (`model:<state id>` or `key:<state id>/<KEY_ENV>`) of the serving policy's fleet.
    Raises FleetError for a scope that names no deployment (or key) of the policy."""
    ids = state_ids(rt)
    kind, _, rest = scope.partition(":")
    if kind == "model" and rest in ids:
        pass
    elif kind == "key" and "/" in rest and rest.split("/", 1)[0] in ids:
        sid, key = rest.split("/", 1)
        d = _dispatcher(rt)
        tgt = next(t for t in d.targets(ids[sid][0]) if t.state_id == sid)
        if key not in {k.name for k in tgt.spec.keys}:
            raise FleetError(f"model {sid!r} has no key {key!r} (keys: {', '.join(k.name for k in tgt.spec.keys) or 'none'})")
    else:
        raise FleetError(f"no cooldown scope {scope!r} in this fleet: use model:<model[@deployment]> or "
                         f"key:<model[@deployment]>/<KEY_ENV> (deployments: {', '.join(sorted(ids)) or 'none'})")
    before = await rt.state.get_cooldown(scope)
    await rt.state.clear_cooldown(scope)
    return {"scope": scope, "cleared": before is not None, "reason": before.reason if before is not None else None}


async def reset_breaker(rt: Runtime, state_id: str) -> dict[str, Any]:
    """Close the breaker of one deployment (`model` or `model@deployment`): as after a success.
    Raises FleetError for a state id that is not in the serving policy's fleet."""
    ids = state_ids(rt)
    if state_id not in ids:
        raise FleetError(f"no model or deployment {state_id!r} in this fleet (known: {', '.join(sorted(ids)) or 'none'})")
    before = await rt.state.breaker(state_id)
    await rt.state.breaker_success(state_id)
    return {"state_id": state_id, "was": before.state, "failures": before.failures, "now": "closed"}
