"""Dual-model verification for the gateway: both models answer, divergence is scored, the policy decides again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from policyengine.api import decide
from policyengine.api.auth import Principal
from policyengine.api.chat_common import (
    SSE_HEADERS,
    completion_chunks,
    held_response,
    reasons,
    rename_model,
    response_headers,
    sse,
)
from policyengine.api.chat_request import upstream_body
from policyengine.api.errors import ApiError, json_response
from policyengine.types import Action, Decision, RuleHit


async def verified_response(s: Any, principal: Principal, policy: Any, dispatcher: Any, body: dict[str, Any],
                    action: Action, decision: Decision, decision_id: str, log: Any, t0: float,
                    stream: bool) -> Response:
    """Dual-model verification: both models answer, divergence is scored, the policy decides again."""
    v = decision.verification
    assert v is not None
    try:
        from policyengine.signals.verify import verify
    except ImportError as exc:  # pragma: no cover - the signals package ships with policyengine
        await log(decision, extra={"outcome": "verification_unavailable"})
        raise ApiError(503, f"rule {v.rule_id} requires dual-model verification, but the divergence scorer "
                            f"is not available ({exc})", code="verification_unavailable",
                       extra={"decision_id": decision_id})
    up = upstream_body({k: val for k, val in body.items() if k not in ("stream", "stream_options")})
    try:
        result = await verify(dispatcher, up, list(v.models), v.threshold, tag=v.tag,
                              session_id=action.session_id, scorer=scorer(s))
    except ValueError as exc:
        await log(decision, extra={"outcome": "verification_error", "error": str(exc)})
        raise ApiError(500, f"verification rule {v.rule_id} cannot run: {exc}", code="verification_error",
                       extra={"decision_id": decision_id})
    div = result.divergence.divergence if result.divergence is not None else 1.0
    atts: list[dict[str, Any]] = []
    answers = {a.requested_model: (a.text if a.text is not None else f"(no answer: {a.error})")
               for a in result.answers}
    vextra = {"verification": {"models": v.models, "threshold": v.threshold, "divergence": div,
                               "aligned": result.aligned, "reasons": result.reasons,
                               "answered_by": {a.requested_model: a.model for a in result.answers},
                               "errors": {a.requested_model: a.error for a in result.answers if a.error}}}
    final_action = action.model_copy(update={"signals": {**action.signals, "divergence": div}})
    final = await decide.evaluate(s, policy, final_action)
    if result.escalate and final.effect not in (*decide.HELD, "deny"):
        # the scorer saw a missing or non-independent answer: never deliver as verified
        final = final.model_copy(update={"effect": "escalate", "rules": [*final.rules, RuleHit(
            rule_id=v.rule_id or "verify", kind="verify", effect="escalate", source="dual-model verification",
            because=result.reasons or ["verification could not confirm the answer"])]})
    if final.effect in decide.HELD:
        return await held_response(s, principal, final_action, final, decision_id, log, t0, answers=answers,
                           extra=vextra)
    if final.effect == "deny":
        await log(final, extra={"outcome": "denied", **vextra})
        raise ApiError(403, f"denied by policy after verification: {reasons(final)}", code="policy_denied",
                       extra={"decision_id": decision_id})
    ans = result.answer
    tags = list(dict.fromkeys([*final.tags, *result.tags]))
    final = final.model_copy(update={"tags": tags})
    await log(final, model=ans.model, attempts=atts, latency_ms=(time.perf_counter() - t0) * 1000,
              extra={"outcome": "ok", **vextra})
    s.metrics.chat_requests.labels(ans.model or "-", "ok_verified").inc()
    resp = rename_model(ans.response or {}, ans.model or "")
    headers = response_headers(decision_id, final, ans.model, atts, tags)
    headers["X-PolicyEngine-Divergence"] = f"{div:.4f}"
    if not stream:
        return json_response(resp, headers=headers)

    async def replay() -> AsyncIterator[bytes]:
        for chunk in completion_chunks(resp):
            yield sse(chunk)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(replay(), media_type="text/event-stream", headers={**SSE_HEADERS, **headers})


def scorer(s: Any) -> Any:
    sc = s.extras.get("divergence_scorer")
    if sc is None:
        from policyengine.signals.divergence import DivergenceScorer

        sc = s.extras["divergence_scorer"] = DivergenceScorer()
    return sc
