"""Attempts in words: what happened to each call or skip of a chain, and why.

Every attempt (`policyengine.dispatch.Attempt`, or its JSON dict in the log) is one of:

- answered: a call that returned (`status` 200, no error class, no reason);
- failed: a call that got an error, with its class (retry / failover / fatal) and the
  classifier's reason (`timeout`, `server_error`, `auth_invalid`, `connection_refused` ...);
- skipped: no call was made (`skipped=True`), because the model or key was cooling down
  (`cooldown:<why>`), its breaker was open, a key was missing, the context window was too
  small, ...;
- cancelled: a hedged call that lost the race (`reason="hedge_cancelled"`).

`outcome(a)` names which, `short(a)` is the attempts header's token for it, and `describe(a)`
the explanation's sentence. A skipped or cancelled attempt is never labelled "ok".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["describe", "outcome", "short", "why"]

# reasons a skip (or a failure) can carry, in words
_WORDS = {
    "breaker_open": "its circuit breaker is open (too many recent failures)",
    "key_missing": "the key's environment variable is not set",
    "context_too_small": "its context window is too small for this request",
    "deployment_at_capacity": "the deployment is at its concurrency limit",
    "no_prefill_support": "it does not support prefill",
    "no_streaming_support": "it does not support streaming",
    "no_tool_support": "it does not support tools",
    "excluded": "it was excluded for this request",
    "hedge_cancelled": "a hedged call that lost the race (cancelled)",
    "timeout": "no answer in time (timeout)",
    "deadline_exceeded": "the request's deadline passed",
    "health_check_failed": "its health check failed",
}


def _get(a: Any, name: str) -> Any:
    return a.get(name) if isinstance(a, Mapping) else getattr(a, name, None)


def outcome(a: Any) -> str:
    """`ok`, `skipped`, `cancelled`, or the error class (`retry`, `failover`, `fatal`) of attempt `a`."""
    if _get(a, "skipped"):
        return "skipped"
    cls = _get(a, "error_class")
    if cls:
        return str(cls)
    if _get(a, "reason"):
        return "cancelled" if _get(a, "reason") == "hedge_cancelled" else "failed"
    return "ok"


def why(reason: str | None) -> str:
    """`reason` (a classifier or skip reason, e.g. `cooldown:auth_invalid`) in words."""
    if not reason:
        return ""
    if reason.startswith("cooldown:"):
        cause = reason.split(":", 1)[1]
        return f"cooling down after {why(cause) or cause}"
    if reason.startswith("drained:"):
        return f"drained ({reason.split(':', 1)[1]})"
    if reason.startswith("outbound_refused:"):
        return f"its base_url is refused by the outbound policy ({reason.split(':', 1)[1]})"
    return _WORDS.get(reason, reason.replace("_", " "))


def short(a: Any) -> str:
    """The attempts header's token: `model[@deployment][#KEY]:status:outcome[:reason]`, e.g.
    `qwen-72b#QWEN_KEY_1:401:failover:auth_invalid`, `kimi-large:-:failover:timeout`,
    `gemma-9b:skipped:cooldown:rate_limited`, `gemma-27b:200:ok`."""
    who = str(_get(a, "model"))
    dep = _get(a, "deployment")
    if dep:
        who += f"@{dep}"
    if _get(a, "key_id"):
        who += f"#{_get(a, 'key_id')}"
    out = outcome(a)
    reason = _get(a, "reason")
    if out == "skipped":
        return f"{who}:skipped:{reason or '-'}"
    status = _get(a, "status") or "-"
    return f"{who}:{status}:{out}" + (f":{reason}" if reason and out != "ok" else "")


def describe(a: Any) -> str:
    """One sentence for the explanation: which model (deployment, key), what happened, and why."""
    who = str(_get(a, "model"))
    dep = _get(a, "deployment")
    if dep:
        who += f" ({dep})"
    key = _get(a, "key_id")
    if key:
        who += f" key={key}"
    out = outcome(a)
    reason = _get(a, "reason")
    if out == "skipped":
        return f"attempt {who}: skipped, {why(reason) or 'no reason given'}"
    latency = _get(a, "latency_ms")
    took = f" after {float(latency):.0f} ms" if isinstance(latency, int | float) and latency else ""
    if out == "ok":
        return f"attempt {who}: answered, status {_get(a, 'status') or '-'}{took}"
    if out == "cancelled":
        return f"attempt {who}: cancelled, {why(reason)}{took}"
    status = _get(a, "status")
    msg = _get(a, "message")
    detail = f": {msg}" if msg else ""
    return (f"attempt {who}: failed ({out}), {why(reason) or 'no reason given'}"
            f"{f', status {status}' if status else ''}{took}{detail}")
