"""A judge model for dual-model verification: a third model of the policy's fleet reads both
answers and says whether a customer could act wrongly on the difference.

`ask_judge` sends one fixed prompt (`JUDGE_SYSTEM_PROMPT`, `judge_request`) through the same
dispatcher as every call (its chain, failover, cooldowns, health and keys), bounded by a
timeout, and never raises: the result says how the judge fared (`status`: ok, error, timeout,
unparseable). Only an `ok` verdict may decide; otherwise the embedded comparator does
(`policyengine.signals.verify`). `parse_verdict` reads the JSON verdict out of whatever the
model wrapped it in (a code fence, prose before or after, a reasoning block).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from policyengine.signals.completion import answer_text
from policyengine.types import DEFAULT_JUDGE_TIMEOUT_S, MAX_JUDGE_TIMEOUT_S, Routing

__all__ = ["DEFAULT_JUDGE_TIMEOUT_S", "JUDGE_SYSTEM_PROMPT", "MAX_JUDGE_TIMEOUT_S", "JudgeStatus", "JudgeVerdict",
           "ask_judge", "judge_request", "parse_verdict"]

JudgeStatus = Literal["ok", "error", "timeout", "unparseable"]
# What the judge is shown and may say, at most (characters): longer answers are cut in the
# middle so both ends stay visible; a longer reason is cut at the end.
MAX_ANSWER_CHARS = 6000
MAX_QUESTION_CHARS = 2000
MAX_REASON_CHARS = 500
JUDGE_MAX_TOKENS = 300
MAX_VERDICT_SCAN = 20_000  # characters of the judge's answer searched for the verdict
MAX_VERDICT_STARTS = 64  # `{` positions tried as the start of the verdict object

JUDGE_SYSTEM_PROMPT = """\
You compare two answers that two different assistants gave to the same customer request.
Decide whether a customer could act wrongly depending on which answer they read.

The answers DIVERGE when they differ in any of these:
- the recipient, person, department or team involved
- an address, location, account, reference, order or other identifier
- the action the customer should take, or the action the company will take
- a decision (approved vs refused, eligible vs not eligible, yes vs no)
- a number, quantity, amount, price, fee, percentage, date, time or deadline
  (the same value written differently, e.g. "£50" and "50 GBP", "3 March" and "03/03", is NOT a difference)
- a fact one answer states and the other contradicts

The answers are the SAME when they differ only in length, level of detail, tone, order,
wording or paraphrase, or when one adds harmless context the other leaves out without
contradicting it.

Reply with one JSON object and nothing else:
{"divergent": true or false, "reason": "one sentence naming what differs, or why they agree"}"""


class JudgeVerdict(BaseModel):
    """How the judge model fared on one answer pair. `divergent` and `reason` are set only when
    `status == "ok"`; `error` says what went wrong otherwise. `model` is the judge the policy
    named; `answered_by` the model that answered (a fallback, when the judge's chain has one)."""

    model: str
    status: JudgeStatus
    divergent: bool | None = None
    reason: str | None = None
    error: str | None = None
    answered_by: str | None = None
    timeout_s: float
    latency_ms: float = 0.0
    usage: dict[str, Any] | None = None  # token usage as the upstream reported it
    raw: str | None = None  # the judge's text (cut to MAX_REASON_CHARS) when it could not be read
    # every upstream attempt behind the verdict (dispatch Attempts), as the source reported them
    attempts: list[Any] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the verdict can decide (the judge answered and the answer was read)."""
        return self.status == "ok"


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = (limit - 20) // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _question(body: dict[str, Any]) -> str:
    """The last user turn of an OpenAI chat request, as text ('' when there is none)."""
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else ""
    return ""


def judge_request(body: dict[str, Any], answer_a: str, answer_b: str) -> dict[str, Any]:
    """The OpenAI chat request sent to the judge: the fixed system prompt, then the customer's
    last message and both answers, each cut to a bounded size. Deterministic for its inputs."""
    q = _cut_middle(_question(body), MAX_QUESTION_CHARS)
    user = (f"Customer request:\n<<<\n{q}\n>>>\n\n"
            f"Answer A:\n<<<\n{_cut_middle(answer_a, MAX_ANSWER_CHARS)}\n>>>\n\n"
            f"Answer B:\n<<<\n{_cut_middle(answer_b, MAX_ANSWER_CHARS)}\n>>>\n\n"
            'Do A and B diverge? Reply with the JSON object only: {"divergent": ..., "reason": "..."}')
    return {"messages": [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}],
            "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS}


_THINK_END_RE = re.compile(r">(?:gni)?kniht/<", re.I)  # `</think>` / `</thinking>`, reversed
_TRUE = {"true", "yes", "divergent", "1"}
_FALSE = {"false", "no", "same", "aligned", "0"}


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    return None


def parse_verdict(text: str) -> tuple[bool, str] | None:
    """(divergent, reason) from the judge's text, or None when it holds no readable verdict.

    Reads the first JSON object that has a `divergent` key whose value is a boolean (or the
    strings "true"/"false"/"yes"/"no"), wherever it is: alone, in a ```json fence, after a
    reasoning block (what precedes the last `</think>` is skipped) or with prose around it. A `reason` that is
    not a string is rendered as JSON; the reason is cut to MAX_REASON_CHARS. Only the first
    MAX_VERDICT_SCAN characters and MAX_VERDICT_STARTS candidate objects are read, so the
    work is bounded for any input."""
    if not isinstance(text, str):
        return None
    # bounded work whatever the upstream sends: the first MAX_VERDICT_SCAN characters, at most
    # MAX_VERDICT_STARTS candidate objects, and no recursion error from deep nesting
    text = text[:MAX_VERDICT_SCAN]
    end_of_reasoning = _THINK_END_RE.search(text[::-1])  # the last </think>: the verdict follows it
    if end_of_reasoning is not None:
        text = text[len(text) - end_of_reasoning.start():]
    decoder = json.JSONDecoder()
    i = text.find("{")
    for _ in range(MAX_VERDICT_STARTS):
        if i == -1:
            break
        try:
            obj = decoder.raw_decode(text, i)[0]
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            key = next((k for k in obj if isinstance(k, str) and k.strip().lower() == "divergent"), None)
            verdict = _as_bool(obj[key]) if key is not None else None
            if verdict is not None:
                reason = obj.get("reason", "")
                if not isinstance(reason, str):
                    reason = json.dumps(reason, ensure_ascii=False)
                return verdict, reason.strip()[:MAX_REASON_CHARS]
        i = text.find("{", i + 1)  # also looks inside an object without a verdict
    return None


async def ask_judge(
    dispatcher: Any,
    body: dict[str, Any],
    answer_a: str,
    answer_b: str,
    model: str,
    *,
    timeout_s: float = DEFAULT_JUDGE_TIMEOUT_S,
    fallbacks: list[str] | None = None,
    session_id: str | None = None,
) -> JudgeVerdict:
    """Ask `model` (then its `fallbacks`, as any chain) whether the two answers diverge.

    Dispatched like any call (`dispatcher.complete(request, Routing(chain=[model, ...]))`), so
    the judge has the dispatcher's retries, failover, cooldowns and health. Waits at most
    `timeout_s` seconds in all. Never raises (except on cancellation): an upstream failure is
    `status="error"`, the timeout `"timeout"`, an answer with no readable verdict
    `"unparseable"` (its text in `raw`)."""
    if not 0 < timeout_s <= MAX_JUDGE_TIMEOUT_S:
        raise ValueError(f"judge timeout must be in (0, {MAX_JUDGE_TIMEOUT_S:g}] seconds, got {timeout_s!r}")
    routing = Routing(chain=[model, *(fallbacks or [])])
    t0 = time.perf_counter()

    def done(status: JudgeStatus, **kw: Any) -> JudgeVerdict:
        return JudgeVerdict(model=model, status=status, timeout_s=timeout_s,
                            latency_ms=round((time.perf_counter() - t0) * 1000, 3), **kw)

    task = asyncio.ensure_future(
        dispatcher.complete(judge_request(body, answer_a, answer_b), routing, session_id=session_id))
    try:
        finished, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not finished:  # our bound, not an upstream's: the call is cancelled (its socket closed)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return done("timeout", error=f"no verdict within {timeout_s:g}s")
    exc = task.exception()
    if exc is not None:  # the dispatcher already failed over; report, don't raise
        return done("error", error=f"{type(exc).__name__}: {exc}",
                    attempts=list(getattr(exc, "attempts", None) or []))
    result = task.result()
    attempts = list(getattr(result, "attempts", None) or [])
    response = getattr(result, "response", None) or {}
    usage = response.get("usage") if isinstance(response, dict) else None
    common: dict[str, Any] = {"answered_by": getattr(result, "model", None), "attempts": attempts,
                              "usage": usage if isinstance(usage, dict) else None}
    try:
        text = answer_text(response)
    except ValueError as exc:
        return done("unparseable", error=str(exc), **common)
    parsed = parse_verdict(text)
    if parsed is None:
        return done("unparseable", error='no {"divergent": true|false, "reason": "..."} object in the answer',
                    raw=text[:MAX_REASON_CHARS], **common)
    return done("ok", divergent=parsed[0], reason=parsed[1], **common)
