"""Warm-up and readiness of the models and classifiers the serving policy needs.

A policy that reads `sentiment`, runs `verify ... divergence`, or mentions a lexicon `by
intent` / `by both` (or without a mode, when the lexicon has an intent model) needs the sentence-embedding model (seconds to load) and, for sentiment
and intent, a classifier trained on it at first use. Without a warm-up the first request that
needs one pays that (17 s was seen on a loaded machine). `start_warmup(runtime)` loads exactly
what the policy needs, in a worker thread, once per policy set; `warmup_check(runtime)` is what
`/readyz` reports: `ok` when nothing is needed or everything is loaded, `loading: ...` while
it runs, `error: ...` when loading failed (the service still answers; readiness says why).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policyengine.gateway.runtime import Runtime

__all__ = ["needed_warmups", "start_warmup", "warm", "warmup_check"]

log = logging.getLogger("policyengine.gateway")


def needed_warmups(policy: Any) -> list[str]:
    """What `policy` needs loaded before it can serve without a cold start, in a stable order:
    `sentiment`, `divergence`, `intent:<lexicon>`. Empty for a policy that needs no embedding."""
    try:
        from policyengine.signals.requirements import embedding_uses

        uses = embedding_uses(policy)
    except Exception:  # a policy object without plans (tests, stubs): nothing to warm
        return []
    out: list[str] = []
    for u in uses:
        sig = u.signal
        name = f"intent:{sig.split(':')[1]}" if sig.startswith("mentions:") else sig
        if name not in out:
            out.append(name)
    # `text mentions LEXICON` without a mode is intent-aware (`by both`) for a lexicon with an intent
    # model, so its classifier is loaded too, where the embeddings extra is installed
    from policyengine.signals.intent import has_intent_model
    from policyengine.signals.requirements import can_run, policy_rules

    for r in policy_rules(policy):
        for sig in getattr(r, "signals", ()):
            parts = sig.split(":")
            if (len(parts) == 2 and parts[0] == "mentions" and has_intent_model(parts[1])
                    and can_run(f"{sig}:intent")):
                name = f"intent:{parts[1]}"
                if name not in out:
                    out.append(name)
    return sorted(out)


def warm(rt: Runtime, needs: list[str]) -> list[str]:
    """Load every item of `needs` now (blocking; run it in a worker thread). Returns what it loaded."""
    sig = rt.signals
    for name in needs:
        if name == "sentiment":
            sig.sentiment("warm up")  # type: ignore[attr-defined]  # loads the embedder, trains the classifier
        elif name == "divergence":
            rt.divergence_scorer().score("warm up", "warm up too")
        elif name.startswith("intent:"):
            model = getattr(sig, "intent_model", None)
            if model is not None:
                model(name.split(":", 1)[1]).result("warm up")
    return needs


def start_warmup(rt: Runtime) -> None:
    """Start loading what the serving policy needs (see `needed_warmups`) in a worker thread, unless
    that exact set is already loaded or loading. Call it on the running loop after each (re)load."""
    needs = needed_warmups(rt.policies.current)
    fut = rt.signals_warmup
    if not needs:
        return
    if fut is not None and getattr(fut, "pe_needs", None) == needs and not (fut.done() and fut.exception()):
        return
    loop = asyncio.get_running_loop()
    log.info("warming up for the policy: %s", ", ".join(needs))
    fut = loop.run_in_executor(None, warm, rt, needs)
    fut.pe_needs = needs  # type: ignore[attr-defined]
    fut.add_done_callback(_report)
    rt.signals_warmup = fut


def _report(fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.error("warm-up failed: %s: %s", type(exc).__name__, exc)
    else:
        log.info("warm-up done: %s", ", ".join(fut.result()))


def warmup_check(rt: Runtime) -> str:
    """`/readyz`'s `signals` check: `ok ...`, `loading: ...`, `not started: ...` or `error: ...`."""
    needs = needed_warmups(rt.policies.current) if rt.policies.loaded else []
    if not needs:
        return "ok (nothing to load)"
    fut = rt.signals_warmup
    what = ", ".join(needs)
    if fut is None or getattr(fut, "pe_needs", needs) != needs:
        return f"not started: {what}"
    if not fut.done():
        return f"loading: {what}"
    if fut.cancelled():
        return f"error: warm-up cancelled ({what})"
    exc = fut.exception()
    if exc is not None:
        return f"error: {type(exc).__name__} while loading {what}"
    return f"ok {what}"
