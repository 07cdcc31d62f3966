"""`embed(call, body)`: an embeddings request routed by the policy, in the one commit order.

The Call's action is `embeddings`; the policy routes it through the routes whose primary
`serves [embeddings]` (policyengine.evaluator), and standing orders apply to it like to any
action (`deny embeddings when ...`). The decision row commits while the chain runs; the
answer is returned only once it is committed; the outcome row (the model that answered,
every attempt, usage) follows. A held decision is refused: an embeddings call is part of a
pipeline that cannot wait for a reviewer, and there is no answer a reviewer could release.
Dual-model verification does not apply to embeddings (there is no text answer to compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policyengine import tracing
from policyengine.dispatch import DispatchError
from policyengine.gateway.call import HELD, Call
from policyengine.gateway.errors import ModelNotAllowed, NoRoute, PolicyDenied
from policyengine.gateway.hold import reasons
from policyengine.gateway.paths import (
    _count_attempts,
    _decide_attrs,
    _internal,
    _upstream_failed,
    attempt_dicts,
)

__all__ = ["Embedded", "embed"]


@dataclass(slots=True)
class Embedded:
    """An embeddings answer, ready to send: the OpenAI embeddings list (its `model` renamed to the
    policy's name), the model that answered, every upstream attempt and the decision's tags. Its
    decision row is committed."""

    call: Call
    response: dict[str, Any]
    model: str
    attempts: list[dict[str, Any]]
    tags: list[str]


async def embed(call: Call, body: dict[str, Any]) -> Embedded:
    """Embeddings through the policy's chain. `body` is the OpenAI embeddings request to send
    upstream. Raises `ModelNotAllowed`, `PolicyDenied` (denied, or held), `NoRoute`,
    `UpstreamFailed` or `DecisionLogUnavailable`, each after its row is committed (except the last).
    Traced as one `policyengine.decide embeddings` span, the attempts' spans its children."""
    with tracing.span("policyengine.decide embeddings", lambda: _decide_attrs(call), kind="SERVER") as sp:
        call.trace = tracing.context_of(sp)
        result = await _embed(call, body)
        tracing.annotate(sp, {"policyengine.model": result.model})
        return result


async def _embed(call: Call, body: dict[str, Any]) -> Embedded:
    d = call.decision
    rt = call.runtime
    requested = call.action.requested_model
    if requested and d.effect == "deny" and any(h.kind == "allow_choice" and h.effect == "deny" for h in d.rules):
        await call.record(extra={"outcome": "model_not_allowed"})
        allowed = d.allowed_models
        raise ModelNotAllowed(
            f"model {requested!r} is not on this caller's allowlist "
            f"({'allowed: ' + ', '.join(allowed) if allowed else 'no models may be chosen; send model=auto'})",
            param="model", decision_id=call.decision_id, decision=d, extra={"allowed_models": allowed})
    if d.effect == "deny":
        await call.record(extra={"outcome": "denied"})
        raise PolicyDenied(f"denied by policy: {reasons(d)}", decision_id=call.decision_id, decision=d)
    if d.effect in HELD:
        await call.record(extra={"outcome": "blocked"})
        raise PolicyDenied(f"refused by policy: this embeddings request would be held for review, and an "
                           f"embeddings call cannot wait for a reviewer ({reasons(d)})",
                           decision_id=call.decision_id, decision=d)
    if not d.routing.chain or call.dispatcher is None:
        await call.record(extra={"outcome": "no_route"})
        raise NoRoute("the policy gives no chain of embedding models for this request (declare a model with "
                      "`serves [embeddings]` and a `route` to it)", decision_id=call.decision_id, decision=d)
    pending = call.record(extra={"outcome": "dispatched"})
    try:
        try:
            result = await call.dispatcher.embed(body, d.routing, session_id=call.action.session_id,
                                                 prompt_tokens=call.action.prompt_tokens)
        except DispatchError:
            raise
        except Exception as exc:  # not a classified chain failure (a bug below): still logged, a 502
            raise _internal(call, exc)
    except DispatchError as exc:
        await pending
        atts = attempt_dicts(exc.attempts)
        _count_attempts(call, atts)
        call.outcome(outcome="upstream_failed", model=None, attempts=atts, error_class=exc.error_class,
                     reason=exc.reason)
        raise _upstream_failed(call, exc, atts)
    except BaseException:
        pending.abandon()
        raise
    await pending
    atts = attempt_dicts(result.attempts)
    _count_attempts(call, atts)
    resp = {**result.response, "model": result.model}
    call.outcome(outcome="ok", model=result.model, attempts=atts, usage=result.usage,
                 upstream_latency_ms=round(result.latency_ms, 3))
    rt.metrics.upstream_latency.labels(result.model).observe(result.latency_ms / 1000)
    rt.metrics.request_latency.labels("embeddings").observe(call.elapsed_ms() / 1000)
    return Embedded(call, resp, result.model, atts, d.tags)
