"""POST /v1/chat/completions: the OpenAI-compatible gateway.

policy decision -> (deny: 403 | held: 409 + approval | verify: both models, divergence,
re-evaluate) -> dispatch (failover chain) -> decision row committed -> response.

Streaming: the first chunk is obtained (failover happens before it), the
decision row is committed, then the stream is relayed; when it ends an
outcome row (final model, attempts, usage) is committed before `[DONE]`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from policyengine.api import decide
from policyengine.api.auth import Principal, require_principal
from policyengine.api.body import headers, json_object
from policyengine.api.chat_request import action_fields, upstream_body, validate_chat
from policyengine.api.errors import ApiError, json_response
from policyengine.types import Action, Decision, RuleHit

log = logging.getLogger("policyengine.api.chat")
router = APIRouter(tags=["gateway"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# ---------------------------------------------------------------------------- helpers


def _attempts(atts: list[Any] | None) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") if hasattr(a, "model_dump") else dict(a) for a in atts or []]


def attempts_header(atts: list[dict[str, Any]]) -> str:
    """`model[#KEY_ENV]:status:class` per attempt, e.g. `qwen-72b#QWEN_KEY_1:429:retry, gemma-27b:200:ok`."""
    parts = []
    for a in atts:
        who = a["model"] + (f"#{a['key_id']}" if a.get("key_id") else "")
        if a.get("skipped"):
            parts.append(f"{who}:skipped:{a.get('reason') or '-'}")
        else:
            parts.append(f"{who}:{a.get('status') or '-'}:{a.get('error_class') or 'ok'}")
    return ", ".join(parts)


def _headers(decision_id: str, decision: Decision, model: str | None, atts: list[dict[str, Any]],
             tags: list[str] | None = None) -> dict[str, str]:
    h = {"X-PolicyEngine-Decision-Id": decision_id, "X-PolicyEngine-Effect": decision.effect,
         "X-PolicyEngine-Policy-Hash": decision.policy_hash,
         "X-PolicyEngine-Attempts": attempts_header(atts), "X-PolicyEngine-Attempt-Count": str(len(atts))}
    if model:
        h["X-PolicyEngine-Model"] = model
    if tags:
        h["X-PolicyEngine-Tags"] = ",".join(tags)
    return h


def _reasons(decision: Decision) -> str:
    hits = [r for r in decision.rules if r.effect == decision.effect] or decision.rules
    out = []
    for r in hits[:3]:
        where = f" ({r.span})" if r.span else ""
        because = f": {'; '.join(r.because)}" if r.because else ""
        out.append(f"{r.source or r.rule_id}{where}{because}")
    if decision.default_applied:
        out.append("no rule allows this action (default deny)")
    return " | ".join(out) or decision.effect


def _deny_model_choice(decision: Decision, requested: str) -> Decision:
    allowed = decision.allowed_models
    because = (f"model {requested!r} is not on this caller's allowlist "
               f"({', '.join(allowed) if allowed else 'no models may be chosen; send model=auto'})")
    hit = RuleHit(rule_id="gateway:model-choice", kind="allow_choice", effect="deny", source="allow model choice",
                  because=[because])
    return decision.model_copy(update={"effect": "deny", "rules": [*decision.rules, hit]})


def _dispatch_error(exc: Any, decision_id: str, atts: list[dict[str, Any]]) -> ApiError:
    cls, reason, status = exc.error_class, exc.reason, exc.status
    extra = {"decision_id": decision_id, "error_class": cls, "reason": reason, "attempts": atts}
    if cls == "fatal":
        # the upstream's own 4xx, unchanged in status and message
        upstream = exc.body if isinstance(exc.body, dict) else None
        message = exc.message or (str(exc.body) if exc.body else reason)
        if upstream and isinstance(upstream.get("error"), dict):
            message = upstream["error"].get("message") or message
        code = status if isinstance(status, int) and 400 <= status < 500 else 400
        return ApiError(code, message, code=reason, extra={**extra, "upstream": upstream,
                                                           "upstream_model": exc.model})
    headers = {}
    if cls == "retry":
        if exc.retry_after:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return ApiError(503, f"every model in the chain is unavailable ({reason})"
                        + (f": {exc.message}" if exc.message else ""), code=reason, extra=extra,
                        headers=headers, type="service_unavailable")
    return ApiError(502, f"every model in the chain failed ({reason})" + (f": {exc.message}" if exc.message else ""),
                    code=reason, extra=extra, type="upstream_error")


def _rename(resp: dict[str, Any], model: str) -> dict[str, Any]:
    resp = dict(resp)
    resp["model"] = model
    return resp


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _completion_chunks(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """A complete chat.completion as stream chunks (used to stream a verified answer)."""
    base = {"id": resp.get("id"), "object": "chat.completion.chunk", "created": resp.get("created", 0),
            "model": resp.get("model")}
    chunks = []
    for ch in resp.get("choices") or []:
        msg = ch.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant"}
        if msg.get("content") is not None:
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg["tool_calls"])]
        chunks.append({**base, "choices": [{"index": ch.get("index", 0), "delta": delta, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": ch.get("index", 0), "delta": {},
                                            "finish_reason": ch.get("finish_reason") or "stop"}]})
    if resp.get("usage"):
        chunks.append({**base, "choices": [], "usage": resp["usage"]})
    return chunks


# ---------------------------------------------------------------------------- the route


_auth = require_principal("app")


async def chat_completions(request: Request) -> Response:
    """OpenAI-compatible chat completions, routed by the policy."""
    principal: Principal = await _auth(request)
    t0 = time.perf_counter()
    ts = time.time()
    s = request.app.state.services
    body = await json_object(request)
    validate_chat(body)
    action = decide.make_action(action_fields(request, body, s.settings.default_use_case), principal)
    snap = s.policies.snapshot()
    policy, dispatcher = snap.policy, snap.dispatcher
    decision = await decide.evaluate(s, policy, action)
    decision_id = decide.new_decision_id()
    stream = bool(body.get("stream"))

    async def log(decision: Decision, **kw: Any) -> None:
        await decide.commit(s, kind="chat", principal=principal, action=action, decision=decision,
                            decision_id=decision_id, ts=ts, **kw)

    requested = action.requested_model
    if requested and requested not in decision.allowed_models:
        if decision.effect != "deny":
            decision = _deny_model_choice(decision, requested)
        allowed = decision.allowed_models
        msg = (f"model {requested!r} is not on this caller's allowlist "
               f"({'allowed: ' + ', '.join(allowed) if allowed else 'no models may be chosen; send model=auto'})")
        await log(decision, extra={"outcome": "model_not_allowed"})
        s.metrics.chat_requests.labels("-", "denied").inc()
        raise ApiError(403, msg, code="model_not_allowed", param="model",
                       extra={"decision_id": decision_id, "allowed_models": allowed},
                       headers=_headers(decision_id, decision, None, []))
    if decision.effect == "deny":
        await log(decision, extra={"outcome": "denied"})
        s.metrics.chat_requests.labels("-", "denied").inc()
        raise ApiError(403, f"denied by policy: {_reasons(decision)}", code="policy_denied",
                       extra={"decision_id": decision_id}, headers=_headers(decision_id, decision, None, []))
    if decision.effect in decide.HELD:
        return await _held(s, principal, action, decision, decision_id, log, t0,
                           request_id=headers(request).get("idempotency-key"))
    if decision.verification is not None:
        return await _verified(s, principal, policy, dispatcher, body, action, decision, decision_id, log, t0,
                               stream)
    if not decision.routing.chain:
        await log(decision, extra={"outcome": "no_route"})
        raise ApiError(503, "the policy gives no model chain for this request (add a `route default -> ...`)",
                       code="no_route", extra={"decision_id": decision_id})
    if dispatcher is None:
        raise ApiError(503, "no dispatcher is configured", code="dispatch_unavailable")
    up = upstream_body(body)
    if stream:
        return await _stream(s, principal, dispatcher, policy, up, action, decision, decision_id, log, t0)
    return await _complete(s, dispatcher, up, action, decision, decision_id, log, t0)


# A plain Starlette route serves the hot path (no dependency solving); the FastAPI route documents it.
router.add_route("/v1/chat/completions", chat_completions, methods=["POST"])


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completions, routed by the policy")
async def chat_completions_documented(request: Request) -> Response:
    return await chat_completions(request)


async def _held(s: Any, principal: Principal, action: Action, decision: Decision, decision_id: str, log: Any,
                t0: float, answers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                request_id: str | None = None) -> Response:
    await log(decision, extra={"outcome": "held", **(extra or {})},
              latency_ms=(time.perf_counter() - t0) * 1000)
    approval = await decide.hold(s, principal=principal, action=action, decision=decision,
                                 decision_id=decision_id, answers=answers, request_id=request_id)
    s.metrics.chat_requests.labels("-", "held").inc()
    msg = (f"held for human review ({decision.effect}): {_reasons(decision)}"
           + (f"; approval {approval['approval_id']}" if approval else ""))
    raise ApiError(409, msg, code="approval_required", type="approval_required",
                   extra={"decision_id": decision_id, "effect": decision.effect, "approval": approval},
                   headers=_headers(decision_id, decision, None, [], decision.tags))


async def _complete(s: Any, dispatcher: Any, up: dict[str, Any], action: Action, decision: Decision,
                    decision_id: str, log: Any, t0: float) -> Response:
    from policyengine.dispatch import DispatchError

    try:
        result = await dispatcher.complete(up, decision.routing, session_id=action.session_id,
                                           prompt_tokens=action.prompt_tokens)
    except DispatchError as exc:
        atts = _attempts(exc.attempts)
        _count_attempts(s, atts)
        await log(decision, attempts=atts, latency_ms=(time.perf_counter() - t0) * 1000,
                  extra={"outcome": "upstream_failed", "error_class": exc.error_class, "reason": exc.reason})
        s.metrics.chat_requests.labels(exc.model or "-", f"failed_{exc.error_class}").inc()
        err = _dispatch_error(exc, decision_id, atts)
        err.headers.update(_headers(decision_id, decision, None, atts))
        raise err
    atts = _attempts(result.attempts)
    _count_attempts(s, atts)
    latency = (time.perf_counter() - t0) * 1000
    await log(decision, model=result.model, attempts=atts, latency_ms=latency,
              extra={"outcome": "ok", "usage": result.usage, "finish_reason": result.finish_reason,
                     "upstream_latency_ms": round(result.latency_ms, 3)})
    s.metrics.chat_requests.labels(result.model, "ok").inc()
    s.metrics.upstream_latency.labels(result.model).observe(result.latency_ms / 1000)
    s.metrics.request_latency.labels("chat").observe(time.perf_counter() - t0)
    return json_response(_rename(result.response, result.model),
                         headers=_headers(decision_id, decision, result.model, atts, decision.tags))


def _count_attempts(s: Any, atts: list[dict[str, Any]]) -> None:
    for a in atts:
        if not a.get("skipped"):
            s.metrics.attempts.labels(a["model"], a.get("error_class") or "ok").inc()


def _stream_attempts(stream: Any) -> list[dict[str, Any]]:
    res = getattr(stream, "result", None)
    if res is not None:
        return _attempts(res.attempts)
    # before the end: the public `attempts` if the stream has one, else its run's (dispatch internals)
    atts = getattr(stream, "attempts", None)
    if atts is None:
        run = getattr(stream, "run", None) or getattr(stream, "_run", None)
        atts = getattr(run, "attempts", None)
    return _attempts(list(atts or []))


def background(s: Any, coro: Any) -> None:
    """Run `coro` after the response; the lifespan awaits every such task before the log closes."""
    tasks: set[asyncio.Task[Any]] = s.extras.setdefault("background", set())

    async def run() -> None:
        try:
            await coro
        except Exception as exc:
            log.error("background commit failed: %s", exc)

    t = asyncio.create_task(run())
    tasks.add(t)
    t.add_done_callback(tasks.discard)


def _stream_model(stream: Any, chunk: dict[str, Any], policy: Any) -> str | None:
    for attr in ("model", "current_model", "_last_model"):
        v = getattr(stream, attr, None)
        if isinstance(v, str):
            return v
    upstream = chunk.get("model")
    names = [n for n, spec in policy.models.items() if spec.upstream_model == upstream or n == upstream]
    return names[0] if len(names) == 1 else (upstream if isinstance(upstream, str) else None)


async def _stream(s: Any, principal: Principal, dispatcher: Any, policy: Any, up: dict[str, Any], action: Action,
                  decision: Decision, decision_id: str, log: Any, t0: float) -> Response:
    from policyengine.dispatch import DispatchError

    stream = dispatcher.stream(up, decision.routing, session_id=action.session_id,
                               prompt_tokens=action.prompt_tokens)
    it = stream.__aiter__()
    try:
        first = await it.__anext__()
    except StopAsyncIteration:
        first = None
    except DispatchError as exc:
        await stream.aclose()
        atts = _attempts(exc.attempts)
        _count_attempts(s, atts)
        await log(decision, attempts=atts, latency_ms=(time.perf_counter() - t0) * 1000,
                  extra={"outcome": "upstream_failed", "error_class": exc.error_class, "reason": exc.reason,
                         "stream": True})
        s.metrics.chat_requests.labels(exc.model or "-", f"failed_{exc.error_class}").inc()
        err = _dispatch_error(exc, decision_id, atts)
        err.headers.update(_headers(decision_id, decision, None, atts))
        raise err
    model = _stream_model(stream, first or {}, policy)
    atts_first = _stream_attempts(stream)
    await log(decision, model=model, attempts=atts_first, latency_ms=(time.perf_counter() - t0) * 1000,
              extra={"outcome": "streaming", "stream": True})
    headers = {**SSE_HEADERS, **_headers(decision_id, decision, model, atts_first, decision.tags)}

    async def relay() -> AsyncIterator[bytes]:
        outcome, err_info = "ok", None
        try:
            if first is not None:
                if model:
                    first["model"] = model
                yield _sse(first)
            try:
                async for chunk in it:
                    if "error" in chunk and "choices" not in chunk:  # the stream broke after it started
                        outcome, err_info = "failed_in_stream", {"error": chunk["error"]}
                        chunk = {"error": {**chunk["error"], "decision_id": decision_id}} \
                            if isinstance(chunk["error"], dict) else chunk
                    elif model:
                        chunk["model"] = model
                    yield _sse(chunk)
            except DispatchError as exc:
                outcome, err_info = f"failed_{exc.error_class}", {"error_class": exc.error_class,
                                                                  "reason": exc.reason}
                yield _sse({"error": {"message": f"stream failed ({exc.reason})"
                                      + (f": {exc.message}" if exc.message else ""),
                                      "type": "upstream_error", "code": exc.reason, "decision_id": decision_id}})
        finally:
            await stream.aclose()
        res = getattr(stream, "result", None)
        final_model = getattr(res, "model", None) or model
        atts = _stream_attempts(stream)
        _count_attempts(s, atts)
        s.metrics.chat_requests.labels(final_model or "-", outcome).inc()
        s.metrics.request_latency.labels("chat_stream").observe(time.perf_counter() - t0)
        # The decision row was committed before the first byte. The outcome row (final model, every
        # attempt, usage) goes through the same group commit, without holding the client's [DONE].
        outcome_entry = {"model": final_model, "attempts": atts, "latency_ms": (time.perf_counter() - t0) * 1000,
                         "extra": {"outcome": outcome, "decision_id": decision_id, "stream": True,
                                   "usage": getattr(res, "usage", None),
                                   "finish_reason": getattr(res, "finish_reason", None),
                                   "complete": getattr(res, "complete", None), **(err_info or {})}}
        background(s, decide.commit(s, kind="chat_outcome", principal=principal, action=action,
                                    decision=decision, decision_id=decide.outcome_id(decision_id), **outcome_entry))
        yield b"data: [DONE]\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)


async def _verified(s: Any, principal: Principal, policy: Any, dispatcher: Any, body: dict[str, Any],
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
                              session_id=action.session_id, scorer=_scorer(s))
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
        return await _held(s, principal, final_action, final, decision_id, log, t0, answers=answers,
                           extra=vextra)
    if final.effect == "deny":
        await log(final, extra={"outcome": "denied", **vextra})
        raise ApiError(403, f"denied by policy after verification: {_reasons(final)}", code="policy_denied",
                       extra={"decision_id": decision_id})
    ans = result.answer
    tags = list(dict.fromkeys([*final.tags, *result.tags]))
    final = final.model_copy(update={"tags": tags})
    await log(final, model=ans.model, attempts=atts, latency_ms=(time.perf_counter() - t0) * 1000,
              extra={"outcome": "ok", **vextra})
    s.metrics.chat_requests.labels(ans.model or "-", "ok_verified").inc()
    resp = _rename(ans.response or {}, ans.model or "")
    headers = _headers(decision_id, final, ans.model, atts, tags)
    headers["X-PolicyEngine-Divergence"] = f"{div:.4f}"
    if not stream:
        return json_response(resp, headers=headers)

    async def replay() -> AsyncIterator[bytes]:
        for chunk in _completion_chunks(resp):
            yield _sse(chunk)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(replay(), media_type="text/event-stream", headers={**SSE_HEADERS, **headers})


def _scorer(s: Any) -> Any:
    sc = s.extras.get("divergence_scorer")
    if sc is None:
        from policyengine.signals.divergence import DivergenceScorer

        sc = s.extras["divergence_scorer"] = DivergenceScorer()
    return sc
