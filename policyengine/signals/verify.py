"""Dual-model verification (article Step 4 B).

Run the same request through two models concurrently via the dispatcher (each
with its own failover chain if given), compare the answers, and say whether to
deliver (aligned: add the policy's tag) or escalate with both answers attached.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from policyengine.signals.completion import answer_text
from policyengine.signals.confidence import confidence_from_logprobs
from policyengine.signals.divergence import DEFAULT_THRESHOLD, DivergenceResult, DivergenceScorer
from policyengine.signals.judge import (
    DEFAULT_JUDGE_TIMEOUT_S,
    MAX_JUDGE_TIMEOUT_S,
    JudgeVerdict,
    ask_judge,
)
from policyengine.types import Routing, Verification


class _DispatchResult(Protocol):
    response: dict
    model: str


class CompletionSource(Protocol):
    """Completes an OpenAI chat request on the model(s) a Routing names (e.g. a ChainDispatcher).

    `complete` returns an object with `response` (an OpenAI chat.completion) and `model` (the
    model that answered), or raises when no model answered.
    """

    async def complete(self, body: dict, routing: Routing, session_id: str | None = None) -> Any: ...


class VerifiedAnswer(BaseModel):
    requested_model: str  # the model verification asked for
    model: str | None = None  # the model that actually answered (may be a fallback)
    text: str | None = None
    response: dict | None = None  # the full OpenAI chat.completion
    confidence: float | None = None  # from token logprobs, when the upstream returned them
    error: str | None = None  # why this model produced no answer
    # every upstream attempt behind this answer, as the source reported them (e.g. dispatch
    # Attempts), including those of a chain that failed entirely
    attempts: list[Any] = Field(default_factory=list)


class VerificationResult(BaseModel):
    """What verification found. `divergence` is the embedded comparator's result (always computed
    when both answered); `judge` the judge model's verdict when the rule names one and both
    answered independently. `decided_by` says which of the two decided: the judge when its
    verdict is `ok`, else the embedded comparator. `score` is the divergence the policy's
    `divergence > T` reads: the judge's verdict as 1.0 (divergent) or 0.0 (same) when the judge
    decided, else the embedded score; None when an answer is missing."""

    answers: list[VerifiedAnswer]
    divergence: DivergenceResult | None = None  # None when an answer is missing
    threshold: float
    aligned: bool  # True only when both answered, independently, and agree
    escalate: bool  # not aligned -> a human must look (both answers are attached)
    tags: list[str] = Field(default_factory=list)  # the policy's tag when aligned
    confidence: float | None = None  # 1 - score (dual-model agreement)
    reasons: list[str] = Field(default_factory=list)
    judge: JudgeVerdict | None = None
    decided_by: Literal["judge", "embedded"] | None = None  # None: an answer is missing
    score: float | None = None

    @property
    def answer(self) -> VerifiedAnswer:
        """The answer to deliver when aligned: the first model's."""
        return self.answers[0]


async def verify(
    dispatcher: CompletionSource,
    body: dict,
    models: list[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    scorer: DivergenceScorer | None = None,
    tag: str | None = "high-confidence",
    session_id: str | None = None,
    fallbacks: dict[str, list[str]] | None = None,
    judge: str | None = None,
    judge_timeout: float = DEFAULT_JUDGE_TIMEOUT_S,
) -> VerificationResult:
    """Ask `models[0]` and `models[1]` the same `body` concurrently and compare.

    `fallbacks` optionally gives each model its own failover chain
    (`{"qwen-72b": ["kimi-large"]}`). If both answers end up coming from the
    same model, the check is not independent and the result escalates. A model
    that fails entirely also escalates, with its error in `answers[i].error`.

    With `judge` (a third model; its chain may have `fallbacks[judge]`), once both answered
    independently the judge is asked (`policyengine.signals.judge.ask_judge`, at most
    `judge_timeout` seconds) while the embedded comparator scores the pair. A judge verdict
    that was read decides (`divergent` -> escalate, with the judge's reason); on error,
    timeout or an unreadable answer the embedded comparator decides and the reasons say so.
    """
    if len(models) != 2 or models[0] == models[1]:
        raise ValueError(f"dual-model verification needs two different models, got {models!r}")
    if judge is not None and judge in models:
        raise ValueError(f"the judge {judge!r} cannot be one of the models it compares ({models!r})")
    if judge is not None and not 0 < judge_timeout <= MAX_JUDGE_TIMEOUT_S:
        raise ValueError(f"judge timeout must be in (0, {MAX_JUDGE_TIMEOUT_S:g}] seconds, got {judge_timeout!r}")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise ValueError("body must be an OpenAI chat request with a 'messages' list")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    scorer = scorer or DivergenceScorer()
    fallbacks = fallbacks or {}
    # model embeddings load in a thread while the models are being called
    warm = asyncio.create_task(scorer.embedder.aload())

    async def ask(model: str) -> VerifiedAnswer:
        routing = Routing(chain=[model, *fallbacks.get(model, [])])
        try:
            result = await dispatcher.complete(dict(body), routing, session_id=session_id)
        except Exception as exc:  # the dispatcher already failed over; report, don't raise
            return VerifiedAnswer(requested_model=model, error=f"{type(exc).__name__}: {exc}",
                                  attempts=list(getattr(exc, "attempts", None) or []))
        response = result.response
        attempts = list(getattr(result, "attempts", None) or [])
        try:
            text = answer_text(response)
        except ValueError as exc:
            return VerifiedAnswer(requested_model=model, model=result.model, response=response, error=str(exc),
                                  attempts=attempts)
        choice = response.get("choices", [{}])[0]
        return VerifiedAnswer(
            requested_model=model, model=result.model, text=text, response=response,
            confidence=confidence_from_logprobs(choice), attempts=attempts,
        )

    answers = list(await asyncio.gather(ask(models[0]), ask(models[1])))
    await warm
    reasons: list[str] = []
    failed = [a for a in answers if a.error or a.text is None]
    if failed:
        reasons += [f"{a.requested_model} gave no answer: {a.error}" for a in failed]
        return VerificationResult(answers=answers, threshold=threshold, aligned=False, escalate=True,
                                  reasons=reasons)
    a, b = answers[0].text or "", answers[1].text or ""
    independent = answers[0].model != answers[1].model
    verdict: JudgeVerdict | None = None
    if judge is not None and independent:  # a non-independent pair escalates whatever the judge says
        div, verdict = await asyncio.gather(
            scorer.ascore(a, b, threshold),
            ask_judge(dispatcher, body, a, b, judge, timeout_s=judge_timeout, fallbacks=fallbacks.get(judge),
                      session_id=session_id))
    else:
        div = await scorer.ascore(a, b, threshold)
    if verdict is not None and verdict.ok:
        decided_by, score, agree = "judge", (1.0 if verdict.divergent else 0.0), not verdict.divergent
        reasons.append(f"judge {verdict.answered_by or judge}: "
                       f"{'divergent' if verdict.divergent else 'same'}: {verdict.reason or '(no reason given)'}")
    else:
        decided_by, score, agree = "embedded", div.divergence, div.aligned
        reasons += div.reasons
        if verdict is not None:
            reasons.append(f"judge {judge} {verdict.status} ({verdict.error}): the embedded comparator decided")
    if not independent:
        reasons.append(f"both answers came from {answers[0].model} (failover): not an independent check")
    aligned = agree and independent
    return VerificationResult(
        answers=answers,
        divergence=div,
        threshold=threshold,
        aligned=aligned,
        escalate=not aligned,
        tags=[tag] if aligned and tag else [],
        confidence=round(1.0 - score, 4),
        reasons=reasons,
        judge=verdict,
        decided_by=decided_by,
        score=score,
    )


async def run_verification(
    dispatcher: CompletionSource,
    body: dict,
    verification: Verification,
    *,
    scorer: DivergenceScorer | None = None,
    session_id: str | None = None,
    fallbacks: dict[str, list[str]] | None = None,
) -> VerificationResult:
    """`verify()` driven by a Decision's `verification` obligation (models, threshold, tag, judge,
    the judge's fallbacks unless `fallbacks` gives the judge its own chain)."""
    if verification.judge and verification.judge_fallback:
        fallbacks = {verification.judge: list(verification.judge_fallback), **(fallbacks or {})}
    return await verify(
        dispatcher, body, list(verification.models), verification.threshold,
        scorer=scorer, tag=verification.tag, session_id=session_id, fallbacks=fallbacks,
        judge=verification.judge,
        judge_timeout=verification.judge_timeout if verification.judge_timeout is not None
        else DEFAULT_JUDGE_TIMEOUT_S,
    )
