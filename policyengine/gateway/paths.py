"""The gateway's paths: one function per kind of request, each following the one commit order.

- `decide(call)`: an action submitted for a decision (`/v1/evaluate`).
- `chat(call, body, stream=...)`: a model call routed by the policy; it refuses, holds, or
  hands over to `complete` (one answer), `stream` (relayed chunks) or `verify` (two models,
  divergence, a second decision).
- `hold(call, ...)`: the approval for a held decision.

The commit order, the same on every path (stated once, in policyengine/gateway/__init__.py):
decide -> record the decision row -> [call models while it commits] -> confirm the commit ->
[a decision that depends on the answers: record it and confirm it] -> act -> outcome row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from policyengine import tracing
from policyengine.dispatch import Attempt, DispatchError
from policyengine.gateway import held
from policyengine.gateway import limits as limits_mod
from policyengine.gateway.call import HELD, Call, PendingCommit, evaluate
from policyengine.gateway.errors import (
    DecisionLogUnavailable,
    GatewayError,
    ModelNotAllowed,
    NoRoute,
    PolicyDenied,
    UpstreamFailed,
    VerificationFailed,
)
from policyengine.gateway.held import Held
from policyengine.gateway.hold import hold, reasons
from policyengine.gateway.tools import (
    ToolCallBuffer,
    ToolVerdict,
    apply_verdicts,
    judge_tool_calls,
    strip_denied_tools,
)
from policyengine.types import Decision, RuleHit

__all__ = ["ChatStream", "Completion", "Decided", "StreamEncoder", "attempt_dicts", "chat", "decide", "hold",
           "reasons"]

log = logging.getLogger("policyengine.gateway")


# ------------------------------------------------------------------------------ results


@dataclass(slots=True)
class Decided:
    """The outcome of `decide`: the committed decision, and the approval when it is held."""

    call: Call
    approval: dict[str, Any] | None


@dataclass(slots=True)
class Completion:
    """One answer, ready to send: the OpenAI chat.completion (its `model` renamed to the policy's
    name), the model that answered, every upstream attempt, the tags, and the divergence when
    dual-model verification ran. Its decision row is committed."""

    call: Call
    response: dict[str, Any]
    model: str | None
    attempts: list[dict[str, Any]]
    tags: list[str]
    divergence: float | None = None


class StreamEncoder(Protocol):
    """How a dialect writes stream items on the wire (e.g. OpenAI's `data: {...}` SSE lines)."""

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """One chunk (or in-band error object)."""
        ...

    def done(self) -> bytes:
        """The end of a complete answer."""
        ...

    def comment(self, text: str) -> bytes:
        """A keep-alive the client ignores (while a held stream waits for its reviewer)."""
        ...


@dataclass(slots=True)
class ChatStream:
    """A streamed answer whose decision row is committed and whose first chunk is in hand.

    `model` and `attempts` are as of the first chunk. `relay(encoder)` yields the encoded
    stream once; when it ends (or the client goes away and the generator is closed) the
    outcome row is queued. A broken stream ends on its error item, never on `done()`.
    """

    call: Call
    model: str | None
    attempts: list[dict[str, Any]]
    tags: list[str]
    _relay: Any = field(repr=False)
    divergence: float | None = None

    def relay(self, encoder: StreamEncoder) -> AsyncIterator[bytes]:
        """The encoded stream (call once)."""
        return self._relay(encoder)


# ------------------------------------------------------------------------------ helpers


def attempt_dicts(atts: list[Any] | None) -> list[dict[str, Any]]:
    """Attempts as the JSON dicts the log and the headers use."""
    return [a.as_json() if isinstance(a, Attempt) else dict(a) for a in atts or []]


def _count_attempts(call: Call, atts: list[dict[str, Any]]) -> None:
    m = call.runtime.metrics.attempts
    for a in atts:
        if not a.get("skipped"):
            m.labels(a["model"], a.get("error_class") or "ok").inc()


def _upstream_failed(call: Call, exc: DispatchError, atts: list[dict[str, Any]]) -> UpstreamFailed:
    cls, reason = exc.error_class, exc.reason
    upstream = exc.body if isinstance(exc.body, dict) else None
    if cls == "fatal":  # the upstream's own 4xx message, unchanged
        message = exc.message or (str(exc.body) if exc.body else reason)
        if upstream and isinstance(upstream.get("error"), dict):
            message = upstream["error"].get("message") or message
    else:
        what = "is unavailable" if cls == "retry" else "failed"
        message = f"every model in the chain {what} ({reason})" + (f": {exc.message}" if exc.message else "")
    return UpstreamFailed(message, error_class=cls, reason=reason, status=exc.status, upstream=upstream,
                          upstream_model=exc.model, retry_after=exc.retry_after, decision_id=call.decision_id,
                          decision=call.decision, attempts=atts)


def _internal(call: Call, exc: Exception) -> DispatchError:
    """An exception the model chain did not mean to raise, as a failover the paths log and answer
    like any other (an outcome row, a 502); its detail goes to the server log only."""
    log.error("decision %s: the model chain raised an unexpected error", call.decision_id, exc_info=exc)
    return DispatchError("failover", "internal_error")


def _rename(resp: dict[str, Any], model: str) -> dict[str, Any]:
    resp = dict(resp)
    resp["model"] = model
    return resp


# ------------------------------------------------------------------------------ decide


def _decide_attrs(call: Call) -> dict[str, Any]:
    d = call.decision
    return {"policyengine.decision.id": call.decision_id, "policyengine.action": call.action.action,
            "policyengine.kind": call.kind, "policyengine.tenant": call.principal.tenant,
            "policyengine.effect": d.effect, "policyengine.policy.hash": d.policy_hash,
            "policyengine.route": list(d.routing.chain)}


async def decide(call: Call, *, callback_url: str | None = None, answers: dict[str, str] | None = None) -> Decided:
    """An action's decision: recorded and confirmed, then held when the policy says so (one
    `policyengine.decide` span when tracing is on, the approval's span inside it)."""
    with tracing.span(f"policyengine.decide {call.action.action}", lambda: _decide_attrs(call), kind="SERVER") as sp:
        await call.record(extra={})
        approval = await hold(call, callback_url=callback_url, answers=answers)
        if sp is not None and approval is not None:
            tracing.annotate(sp, {"policyengine.approval.id": approval.get("approval_id"),
                                  "policyengine.outcome": "held"})
        return Decided(call, approval)


# ------------------------------------------------------------------------------ chat


def _model_choice_refused(decision: Decision) -> bool:
    """True when the evaluator refused the request's `requested_model` (an `allow_choice` deny hit).

    The evaluator is the one judge of a requested model (on the caller's allowlist, or the
    route's own primary: allowed; anything else: denied with the reason); the gateway only
    turns its refusal into `ModelNotAllowed`, so it can never disagree with `policyengine eval`."""
    return any(h.kind == "allow_choice" and h.effect == "deny" for h in decision.rules)


async def _hold_chat(call: Call, *, answers: dict[str, str] | None = None,
                     pending: PendingCommit | None = None) -> Held:
    """Record and confirm the held decision, then create (or find again) its approval."""
    if pending is None:
        pending = call.record(extra={"outcome": "held"})
    await pending
    res = await hold(call, answers=answers)
    call.runtime.metrics.chat_requests.labels("-", "held").inc()
    if res is None:  # no approvals service runs: nobody could ever release it
        raise held.required(call, None)
    return Held.of_hold(res, answers)


async def _resume(call: Call, body: dict[str, Any], h: Held, *, stream: bool, recorded: bool,
                  answered: bool = False) -> Completion | ChatStream:
    """Carry on with a held chat whose approval is `h`: wait if the request asked to, then
    answer (approved), refuse (rejected, expired, cancelled) or say it is still pending.
    `recorded`: this call's decision row is committed already; `answered`: its outcome row too."""
    if h.pending and call.hold_wait_s > 0:
        if stream:
            return await _waiting_stream(call, body, h, recorded=recorded, answered=answered)
        h = await held.wait(call, h, call.hold_wait_s)
    if h.approved:
        extra = {"outcome": "resumed", "approval_id": h.approval_id}
        if h.answers:
            return await _released(call, h, stream=stream, recorded=recorded, answered=answered)
        _check_route(call)
        if stream:
            return await stream_chat(call, body, recorded=recorded, extra=extra)
        return await complete(call, body, recorded=recorded, extra=extra)
    if not recorded:
        await call.record(extra={"outcome": "held" if h.pending else "refused", "approval_id": h.approval_id})
    if h.pending:
        raise held.required(call, h)
    call.runtime.metrics.chat_requests.labels("-", "refused").inc()
    raise held.refused(call, h)


async def _released(call: Call, h: Held, *, stream: bool, recorded: bool, answered: bool) -> Completion | ChatStream:
    """The answer a reviewer released for a held pair of dual-model answers (no model is called)."""
    if not recorded:
        await call.record(extra={"outcome": "resumed", "approval_id": h.approval_id})
    text = h.released_answer() or ""
    model = next((m for m, t in (h.answers or {}).items() if t == text), None)
    if not answered:
        call.outcome(outcome="released_by_reviewer", model=model, attempts=[], approval_id=h.approval_id)
    tags = list(dict.fromkeys([*call.decision.tags, "human-reviewed"]))
    resp = {"id": f"chatcmpl-{call.decision_id}", "object": "chat.completion", "created": int(call.ts),
            "model": model or "human-reviewed",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "policyengine": {"approval": h.json}}
    if not stream:
        return Completion(call, resp, model, [], tags)

    async def replay(enc: StreamEncoder) -> AsyncIterator[bytes]:
        for chunk in completion_chunks(resp):
            yield enc.chunk(chunk)
        yield enc.done()

    return ChatStream(call, model, [], tags, replay)


async def _waiting_stream(call: Call, body: dict[str, Any], h: Held, *, recorded: bool,
                          answered: bool) -> ChatStream:
    """A streamed held chat that waits for its reviewer: SSE comments every
    `chat_hold_keepalive_s` while it waits, then the answer, or an in-band error (refused, still
    pending at the end of the wait, or a failure on the way)."""
    if not recorded:  # the decision row is durable before the first byte, as on every stream
        await call.record(extra={"outcome": "held", "approval_id": h.approval_id})
    rt = call.runtime
    keepalive = rt.settings.chat_hold_keepalive_s

    async def relay(enc: StreamEncoder) -> AsyncIterator[bytes]:
        started[0] = True
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + call.hold_wait_s
            cur = h
            while cur.pending and (left := deadline - loop.time()) > 0:
                yield enc.comment(f"held for human review: approval {cur.approval_id}")
                cur = await held.wait(call, cur, min(keepalive, left))
            try:
                if not cur.approved:
                    raise held.required(call, cur) if cur.pending else held.refused(call, cur)
                if cur.answers:
                    res = await _released(call, cur, stream=True, recorded=True, answered=answered)
                else:
                    _check_route(call)
                    res = await stream_chat(call, body, recorded=True,
                                            extra={"outcome": "resumed", "approval_id": cur.approval_id})
            except GatewayError as exc:
                yield enc.chunk({"error": {"message": exc.message, "type": exc.code, "code": exc.code,
                                           "decision_id": call.decision_id, **exc.extra}})
                return
            assert isinstance(res, ChatStream)
            async with contextlib.aclosing(res.relay(enc)) as parts:  # closed with this one (it settles then)
                async for part in parts:
                    yield part
        finally:
            # refused, still pending, or the client left while it waited: nothing was answered
            await limits_mod.release(call)

    started = [False]

    async def never_started() -> None:
        if not started[0]:
            started[0] = True
            await limits_mod.release(call)

    return ChatStream(call, None, [], call.decision.tags, lambda enc: _Relay(relay(enc), never_started))


def _check_route(call: Call) -> None:
    d = call.decision
    if not d.routing.chain:
        raise NoRoute("the policy gives no model chain for this request (add a `route default -> ...`)",
                      decision_id=call.decision_id, decision=d)
    if call.dispatcher is None:
        raise NoRoute("no dispatcher is configured", decision_id=call.decision_id, decision=d)


async def chat(call: Call, body: dict[str, Any], *, stream: bool) -> Completion | ChatStream:
    """A chat request routed by the policy. `body` is the OpenAI chat request to send upstream
    (gateway-only fields removed). Raises `ModelNotAllowed`, `PolicyDenied`, `ApprovalRequired`,
    `NoRoute`, `UpstreamFailed` or `DecisionLogUnavailable`, each after its row is committed
    (except the last). Traced as one `policyengine.decide chat` span (the attempts' spans are
    its children, also for a stream that ends after this returns)."""
    with tracing.span("policyengine.decide chat", lambda: _decide_attrs(call), kind="SERVER") as sp:
        call.trace = tracing.context_of(sp)
        try:
            result = await _chat(call, body, stream=stream)
        except BaseException:
            # every path that raises without having settled (held for approval, refused, cancelled):
            # what the call still holds on the limit counters is given back
            await limits_mod.release(call)
            raise
        if sp is not None:
            tracing.annotate(sp, {"policyengine.effect": call.decision.effect,
                                  "policyengine.model": getattr(result, "model", None)})
        return result


async def _chat(call: Call, body: dict[str, Any], *, stream: bool) -> Completion | ChatStream:
    d = call.decision
    requested = call.action.requested_model
    if requested and _model_choice_refused(d):
        allowed = d.allowed_models
        await call.record(extra={"outcome": "model_not_allowed"})
        call.runtime.metrics.chat_requests.labels("-", "denied").inc()
        raise ModelNotAllowed(
            f"model {requested!r} is not on this caller's allowlist "
            f"({'allowed: ' + ', '.join(allowed) if allowed else 'no models may be chosen; send model=auto'})",
            param="model", decision_id=call.decision_id, decision=d,
            extra={"allowed_models": allowed})
    if d.effect == "deny":
        await call.record(extra={"outcome": "denied"})
        call.runtime.metrics.chat_requests.labels("-", "denied").inc()
        raise PolicyDenied(f"denied by policy: {reasons(d)}", decision_id=call.decision_id, decision=d)
    if d.limits and d.verification is None:
        # reserve on the limits that count it; at a limit the decision becomes what the policy says
        # (a reroute, a hold) or the request is refused here (429, its row recorded)
        await limits_mod.admit(call, body)
        d = call.decision
    if call.resume_id or (call.request_id and (d.effect in HELD or d.verification is not None)):
        found = await held.find(call)  # a resent held request picks up its approval: no second hold
        if found is not None:
            return await _resume(call, body, found, stream=stream, recorded=False)
    review = False
    if d.effect in HELD:
        mode = held.chat_mode(d)
        if mode == "block":
            await call.record(extra={"outcome": "blocked"})
            call.runtime.metrics.chat_requests.labels("-", "denied").inc()
            raise PolicyDenied(f"refused by policy (held rules block chat): {reasons(d)}",
                               decision_id=call.decision_id, decision=d)
        if mode == "hold":
            return await _resume(call, body, await _hold_chat(call), stream=stream, recorded=True)
        review = True  # answer, then a review case
    if d.verification is not None:
        return await verify(call, body, stream=stream)
    if not d.routing.chain:
        await call.record(extra={"outcome": "no_route"})
    _check_route(call)
    if call.runtime.settings.strip_denied_tools:
        body = strip_denied_tools(call, body)
    if stream:
        return await stream_chat(call, body, review=review)
    return await complete(call, body, review=review)


async def complete(call: Call, body: dict[str, Any], *, recorded: bool = False, extra: dict[str, Any] | None = None,
                   review: bool = False) -> Completion:
    """One answer through the failover chain. The decision row commits while the chain runs
    (`recorded`: it was committed before); the answer is returned only once it is committed;
    the outcome row (model, attempts, usage) follows. `review`: the answer goes out tagged
    `under-review` and a review case (an approval holding the answer) is opened first."""
    assert call.dispatcher is not None
    rt, d = call.runtime, call.decision
    pending = (PendingCommit.confirmed(call) if recorded
               else call.record(extra={"outcome": "dispatched", **(extra or {})}))
    try:
        try:
            result = await call.dispatcher.complete(body, d.routing, session_id=call.action.session_id,
                                                    prompt_tokens=call.action.prompt_tokens)
        except DispatchError:
            raise
        except Exception as exc:  # not a classified chain failure (a bug below): still logged, a 502
            raise _internal(call, exc)
    except DispatchError as exc:
        charged = await limits_mod.charge(call, None, None, body, answered=False)
        await pending
        atts = attempt_dicts(exc.attempts)
        _count_attempts(call, atts)
        call.outcome(outcome="upstream_failed", model=None, attempts=atts, error_class=exc.error_class,
                     reason=exc.reason, **charged)
        rt.metrics.chat_requests.labels(exc.model or "-", f"failed_{exc.error_class}").inc()
        raise _upstream_failed(call, exc, atts)
    except BaseException:
        pending.abandon()
        if call.admission is not None:
            await limits_mod.charge(call, None, None, body, answered=False)
        raise
    charged = await limits_mod.charge(call, result.model, result.usage, body, _text_or_empty(result.response))
    await pending
    atts = attempt_dicts(result.attempts)
    _count_attempts(call, atts)
    call.response_model = result.response.get("model") if isinstance(result.response, dict) else None
    resp = _rename(result.response, result.model)
    verdicts = await _judge_tools(call, resp)
    call.outcome(outcome="ok", model=result.model, attempts=atts, **charged,
                 finish_reason=resp["choices"][0].get("finish_reason") if verdicts else result.finish_reason,
                 upstream_latency_ms=round(result.latency_ms, 3),
                 **({"tool_calls": [v.as_json() for v in verdicts]} if verdicts else {}))
    rt.metrics.chat_requests.labels(result.model, "ok").inc()
    rt.metrics.upstream_latency.labels(result.model).observe(result.latency_ms / 1000)
    rt.metrics.request_latency.labels("chat").observe(call.elapsed_ms() / 1000)
    tags = d.tags
    if review:
        tags = await _open_review(call, result.model, resp)
    return Completion(call, resp, result.model, atts, tags)


async def _open_review_pair(call: Call, answers: dict[str, str]) -> list[str]:
    """The review case of a dual answer released under `on chat review`."""
    await hold(call, answers=answers)
    return ["under-review"]


async def _open_review(call: Call, model: str | None, resp: dict[str, Any]) -> list[str]:
    """Open the review case of an answered held chat (`on chat review`): an approval that holds
    the answer; the answer carries it in `policyengine.review`. Returns the answer's tags."""
    approval = await hold(call, answers={model or "answer": _text_or_empty(resp)})
    resp.setdefault("policyengine", {})["review"] = approval
    return list(dict.fromkeys([*call.decision.tags, "under-review"]))


async def _judge_tools(call: Call, resp: dict[str, Any]) -> list[ToolVerdict]:
    """Judge the tool calls of a complete answer and rewrite it in place (only the allowed calls
    stay executable; `policyengine.tool_calls` lists every verdict). No tool calls: []."""
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return []
    message = choices[0].get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not calls or not isinstance(calls, list):
        return []
    verdicts = await judge_tool_calls(call, calls)
    msg, left = apply_verdicts(message, verdicts, note=call.runtime.settings.tool_calls_denied == "note")
    choice = {**choices[0], "message": msg}
    if not left and choice.get("finish_reason") == "tool_calls":
        choice["finish_reason"] = "stop"
    resp["choices"] = [choice, *choices[1:]]
    resp["policyengine"] = {"tool_calls": [v.as_json() for v in verdicts]}
    return verdicts


def _stream_model(stream: Any, chunk: dict[str, Any], call: Call) -> str | None:
    v = getattr(stream, "model", None)
    if isinstance(v, str):
        return v
    upstream = chunk.get("model")
    names = [n for n, spec in call.policy.models.items() if spec.upstream_model == upstream or n == upstream]
    return names[0] if len(names) == 1 else (upstream if isinstance(upstream, str) else None)


def _stream_attempts(stream: Any) -> list[dict[str, Any]]:
    res = getattr(stream, "result", None)
    return attempt_dicts(res.attempts if res is not None else list(getattr(stream, "attempts", None) or []))


async def stream_chat(call: Call, body: dict[str, Any], *, recorded: bool = False,
                      extra: dict[str, Any] | None = None, review: bool = False) -> ChatStream:
    """A streamed answer. The decision row commits while failover finds a first chunk (`recorded`:
    it was committed before); both are needed before anything is sent (a failed commit closes the
    stream unread); the outcome row follows the end of the stream. `review`: the stream is tagged
    `under-review` and, once it ends, a review case holding the answer is opened (its approval
    is in the last chunk's `policyengine.review`)."""
    assert call.dispatcher is not None
    rt, d = call.runtime, call.decision
    pending = (PendingCommit.confirmed(call) if recorded
               else call.record(extra={"outcome": "streaming", "stream": True, **(extra or {})}))
    stream = call.dispatcher.stream(body, d.routing, session_id=call.action.session_id,
                                    prompt_tokens=call.action.prompt_tokens)
    it = stream.__aiter__()
    failed: DispatchError | None = None
    first: dict[str, Any] | None
    try:
        try:
            first = await it.__anext__()
        except (StopAsyncIteration, DispatchError):
            raise
        except Exception as exc:  # not a classified chain failure (a bug below)
            raise _internal(call, exc)
    except StopAsyncIteration:
        first = None
    except DispatchError as exc:
        failed, first = exc, None
    except BaseException:  # cancelled before the first chunk (the client went away, shutdown)
        pending.abandon()
        await _abandon(call, stream, "cancelled")
        raise
    try:
        await pending
    except BaseException:  # the decision row could not be committed, or cancelled meanwhile
        await _abandon(call, stream, None)
        raise
    if failed is not None:
        await stream.aclose()
        charged = await limits_mod.charge(call, None, None, body, answered=False)
        atts = attempt_dicts(failed.attempts)
        _count_attempts(call, atts)
        call.outcome(outcome="upstream_failed", model=None, attempts=atts, stream=True,
                     error_class=failed.error_class, reason=failed.reason, **charged)
        rt.metrics.chat_requests.labels(failed.model or "-", f"failed_{failed.error_class}").inc()
        raise _upstream_failed(call, failed, atts)
    model = _stream_model(stream, first or {}, call)
    decision_id = call.decision_id

    note = rt.settings.tool_calls_denied == "note"

    async def relay(enc: StreamEncoder) -> AsyncIterator[bytes]:
        started[0] = True
        outcome, err_info = "ok", None
        tools = ToolCallBuffer()
        verdicts: list[ToolVerdict] = []
        gone = True  # until the loop below ends by itself: the client went away (closed or cancelled)

        async def send(chunk: dict[str, Any]) -> list[dict[str, Any]]:
            """What to send for one upstream chunk: tool calls are held back until judged."""
            nonlocal verdicts
            if model:
                chunk["model"] = model
            now, finished = tools.feed(chunk)
            if finished is None:
                return [now] if now is not None else []
            verdicts = await judge_tool_calls(call, tools.calls())
            return tools.release(finished, verdicts, note=note)

        try:
            try:
                if first is not None:
                    for c in await send(first):
                        yield enc.chunk(c)
                async for chunk in it:
                    if "error" in chunk and "choices" not in chunk:  # the stream broke after it started
                        outcome, err_info = "failed_in_stream", {"error": chunk["error"]}
                        if isinstance(chunk["error"], dict):
                            chunk = {"error": {**chunk["error"], "decision_id": decision_id}}
                        yield enc.chunk(chunk)
                        continue
                    for c in await send(chunk):
                        yield enc.chunk(c)
            except DecisionLogUnavailable as exc:  # a tool call's decision could not be committed
                outcome, err_info = "failed_log", {"error_class": "log", "reason": exc.code}
                yield enc.chunk({"error": {"message": exc.message, "type": "service_unavailable",
                                           "code": exc.code, "decision_id": decision_id}})
            except Exception as exc:
                if not isinstance(exc, DispatchError):  # not a classified chain failure (a bug below)
                    exc = _internal(call, exc)
                outcome, err_info = f"failed_{exc.error_class}", {"error_class": exc.error_class,
                                                                  "reason": exc.reason}
                yield enc.chunk({"error": {"message": f"stream failed ({exc.reason})"
                                           + (f": {exc.message}" if exc.message else ""),
                                           "type": "upstream_error", "code": exc.reason, "decision_id": decision_id}})
            gone = False
        finally:
            await stream.aclose()
            if gone:  # the client left mid-stream: charge what was relayed (no more yields here)
                await _settle_gone(call, stream, model, body, verdicts)
        res = getattr(stream, "result", None)
        final_model = getattr(res, "model", None) or model
        atts = _stream_attempts(stream)
        _count_attempts(call, atts)
        rt.metrics.chat_requests.labels(final_model or "-", outcome).inc()
        rt.metrics.request_latency.labels("chat_stream").observe(call.elapsed_ms() / 1000)
        # streamed usage: the upstream's final chunk, else counted from the text relayed
        text = _text_or_empty(res.response) if res is not None else ""
        charged = await limits_mod.charge(call, final_model, getattr(res, "usage", None), body, text,
                                          answered=res is not None or bool(text))
        call.outcome(outcome=outcome, model=final_model, attempts=atts, stream=True, **charged,
                     finish_reason=getattr(res, "finish_reason", None), complete=getattr(res, "complete", None),
                     **({"tool_calls": [v.as_json() for v in verdicts]} if verdicts else {}), **(err_info or {}))
        if outcome == "ok":
            if review and res is not None:
                approval = await hold(call, answers={final_model or "answer": _text_or_empty(res.response)})
                yield enc.chunk({"object": "chat.completion.chunk", "choices": [],
                                 "policyengine": {"review": approval}})
            # A broken stream ends on its error item, never on done(): a client must not
            # mistake a truncated answer for a complete one.
            yield enc.done()

    tags = list(dict.fromkeys([*d.tags, "under-review"])) if review else d.tags
    started = [False]

    async def never_started() -> None:  # the response was dropped before its body was read
        if not started[0]:
            started[0] = True
            await _abandon(call, stream, "client_disconnected")

    return ChatStream(call, model, _stream_attempts(stream), tags, lambda enc: _Relay(relay(enc), never_started))


class _Relay:
    """A stream's relay generator that also settles when it is closed without ever being started
    (the client went away before the response's body was read): `aclose` then releases the
    limits the call holds, closes the upstream stream and records the outcome row."""

    __slots__ = ("_gen", "_unstarted")

    def __init__(self, gen: AsyncIterator[bytes], unstarted: Any) -> None:
        self._gen, self._unstarted = gen, unstarted

    def __aiter__(self) -> _Relay:
        return self

    def __anext__(self) -> Any:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        """Close the relay; if its body never ran, abandon the call's stream (see the class)."""
        try:
            await self._gen.aclose()  # type: ignore[attr-defined]
        finally:
            await self._unstarted()


async def _abandon(call: Call, stream: Any, outcome: str | None) -> None:
    """A stream that ends before anything was relayed: its limits are released (a request limit
    keeps the request) whatever happens to the rest; the upstream stream is closed; with `outcome`
    the outcome row says so (None: the decision row was not committed, there is nothing to complete)."""
    try:
        charged = await limits_mod.charge(call, None, None, {}, answered=False) if call.admission is not None else {}
        if outcome is not None:
            call.outcome(outcome=outcome, model=None, attempts=_stream_attempts(stream), stream=True, **charged)
    finally:
        await stream.aclose()


async def _settle_gone(call: Call, stream: Any, model: str | None, body: dict[str, Any],
                       verdicts: list[ToolVerdict]) -> None:
    """The client left a stream after its first chunk: charge what the upstream produced so far
    (its usage if it sent any, else counted from the text relayed) and record the outcome row."""
    res = getattr(stream, "result", None)
    final_model = getattr(res, "model", None) or model
    text = _text_or_empty(res.response) if res is not None else ""
    charged = await limits_mod.charge(call, final_model, getattr(res, "usage", None), body, text)
    atts = _stream_attempts(stream)
    _count_attempts(call, atts)
    call.runtime.metrics.chat_requests.labels(final_model or "-", "client_disconnected").inc()
    call.outcome(outcome="client_disconnected", model=final_model, attempts=atts, stream=True, **charged,
                 finish_reason=None, complete=False,
                 **({"tool_calls": [v.as_json() for v in verdicts]} if verdicts else {}))


def _text_or_empty(resp: dict[str, Any]) -> str:
    """The assistant text of a chat.completion ("" when it has none)."""
    try:
        content = resp["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


# ------------------------------------------------------------------------------ verify


def _judge_extra(call: Call, result: Any) -> dict[str, Any]:
    """The verification row's account of who decided: `decided_by` (judge | embedded), the
    embedded score, and the judge's verdict when the rule names one (`judge_status` ok | error |
    timeout | unparseable, its reason or error, usage and cost at the judge's price)."""
    out: dict[str, Any] = {"decided_by": result.decided_by,
                           "embedded_divergence": result.divergence.divergence if result.divergence else None}
    j = result.judge
    if j is None:
        return out
    judge: dict[str, Any] = {"model": j.model, "answered_by": j.answered_by, "status": j.status,
                             "divergent": j.divergent, "reason": j.reason, "error": j.error,
                             "timeout_s": j.timeout_s, "latency_ms": j.latency_ms}
    if j.raw is not None:
        judge["raw"] = j.raw
    if j.usage is not None:
        judge["usage"] = j.usage
        spec = call.policy.models.get(j.answered_by or j.model)
        total = j.usage.get("total_tokens")
        if spec is not None and isinstance(total, int):
            judge["cost"] = {"amount": format(spec.cost_of(total).normalize(), "f"), "currency": spec.cost_currency}
    return {**out, "judge_status": j.status, "judge": judge}


def _with_judge(hit: RuleHit, rule_id: str | None, result: Any) -> RuleHit:
    """The verify rule's hit with a line saying what the judge said, or that it failed and the
    embedded comparator decided (other hits unchanged)."""
    j = result.judge
    if hit.kind != "verify" or hit.rule_id != rule_id or j is None:
        return hit
    if j.ok:
        line = (f"judge {j.answered_by or j.model}: {'divergent' if j.divergent else 'same'}: "
                f"{j.reason or '(no reason given)'} (divergence {1.0 if j.divergent else 0.0:g} from the verdict; "
                f"embedded score {result.divergence.divergence:g})")
    else:
        line = f"judge {j.model} {j.status} ({j.error}): the embedded comparator decided"
    return hit.model_copy(update={"because": [*hit.because, line]})


def completion_chunks(resp: dict[str, Any]) -> list[dict[str, Any]]:
    """A complete chat.completion as stream chunks (to stream a verified answer)."""
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


async def verify(call: Call, body: dict[str, Any], *, stream: bool) -> Completion | ChatStream:
    """Dual-model verification: both models answer while the decision row commits; divergence is
    scored and the policy decides again on it; that second decision is the outcome row, committed
    before anything is sent or held. Every upstream attempt of both models is in that row."""
    # the embedding stack: imported on first use
    from policyengine.signals.verify import verify as run_verify

    assert call.dispatcher is not None
    rt, d = call.runtime, call.decision
    v = d.verification
    assert v is not None
    pending = call.record(extra={"outcome": "verifying"})
    up = {k: val for k, val in body.items() if k not in ("stream", "stream_options")}
    try:
        result = await run_verify(call.dispatcher, up, list(v.models), v.threshold, tag=v.tag,
                                  session_id=call.action.session_id, scorer=rt.divergence_scorer(),
                                  judge=v.judge, **({"judge_timeout": v.judge_timeout} if v.judge_timeout else {}),
                                  fallbacks={v.judge: v.judge_fallback} if v.judge and v.judge_fallback else None)
    except ValueError as exc:
        await pending
        call.outcome(outcome="verification_error", model=None, attempts=[], error=str(exc))
        raise VerificationFailed(f"verification rule {v.rule_id} cannot run: {exc}", decision_id=call.decision_id,
                                 decision=d)
    except BaseException:
        pending.abandon()
        raise
    await pending
    atts = [a for ans in result.answers for a in attempt_dicts(ans.attempts)]
    if result.judge is not None:  # the judge's calls are attempts like the answers' (log, metrics, trace)
        atts += attempt_dicts(result.judge.attempts)
    _count_attempts(call, atts)
    # what `divergence > T` reads: the judge's verdict as 1.0 / 0.0 when it decided, else the embedded score
    div = result.score if result.score is not None else 1.0
    # only real answers can be released by a reviewer; a model that gave none is in the reasons
    # (and with no answer at all, an approval lets the request go to the chain instead)
    answers = {a.requested_model: a.text for a in result.answers if a.text is not None}
    vextra = {"verification": {"models": v.models, "threshold": v.threshold, "divergence": div,
                               "aligned": result.aligned, "reasons": result.reasons,
                               "answered_by": {a.requested_model: a.model for a in result.answers},
                               "errors": {a.requested_model: a.error for a in result.answers if a.error},
                               **_judge_extra(call, result)}}
    call.action = call.action.model_copy(update={"signals": {**call.action.signals, "divergence": div}})
    final = await evaluate(rt, call.policy, call.action)
    if result.judge is not None:  # the verify rule's explanation says how the judge fared
        final = final.model_copy(update={"rules": [_with_judge(h, v.rule_id, result) for h in final.rules]})
    if result.escalate and final.effect not in (*HELD, "deny"):
        # the scorer saw a missing or non-independent answer: never deliver as verified
        final = final.model_copy(update={"effect": "escalate", "rules": [*final.rules, RuleHit(
            rule_id=v.rule_id or "verify", kind="verify", effect="escalate", source="dual-model verification",
            because=result.reasons or ["verification could not confirm the answer"])]})
    ans = result.answer
    if final.effect not in (*HELD, "deny"):
        final = final.model_copy(update={"tags": list(dict.fromkeys([*final.tags, *result.tags]))})
    # what the held verdict means for this chat (`on chat hold | review | block`), decided before
    # the verdict row is written, so the row says what happens
    mode = held.chat_mode(final) if final.effect in HELD else None
    outcome = ("denied" if final.effect == "deny" or mode == "block" else "held" if mode == "hold"
               else "ok_under_review" if mode == "review" else "ok")
    verdict = call.outcome(outcome=outcome, model=ans.model if outcome.startswith("ok") else None, attempts=atts,
                           decision=final, wait=True, **vextra)
    assert verdict is not None
    call.decision = final
    if outcome == "held":
        h = await _hold_chat(call, answers=answers, pending=verdict)
        return await _resume(call, body, h, stream=stream, recorded=True, answered=True)
    await verdict
    if outcome == "denied":
        why = "held rules block chat" if mode == "block" else "denied by policy"
        raise PolicyDenied(f"{why} after verification: {reasons(final)}", decision_id=call.decision_id,
                           decision=final, attempts=atts)
    if outcome == "ok_under_review":  # the first answer goes out tagged; the pair is reviewed afterwards
        tags = await _open_review_pair(call, answers)
        final = call.decision = final.model_copy(update={"tags": list(dict.fromkeys([*final.tags, *tags]))})
    rt.metrics.chat_requests.labels(ans.model or "-", "ok_verified").inc()
    resp = _rename(ans.response or {}, ans.model or "")
    await _judge_tools(call, resp)
    if not stream:
        return Completion(call, resp, ans.model, atts, final.tags, divergence=div)

    async def replay(enc: StreamEncoder) -> AsyncIterator[bytes]:
        for chunk in completion_chunks(resp):
            yield enc.chunk(chunk)
        yield enc.done()

    return ChatStream(call, ans.model, atts, final.tags, replay, divergence=div)
