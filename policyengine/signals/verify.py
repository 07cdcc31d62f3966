"""Dual-model verification (article Step 4 B).

Run the same request through two models concurrently via the dispatcher (each
with its own failover chain if given), compare the answers, and say whether to
deliver (aligned: add the policy's tag) or escalate with both answers attached.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from pydantic import BaseModel, Field

from policyengine.signals.confidence import confidence_from_logprobs
from policyengine.signals.divergence import DEFAULT_THRESHOLD, DivergenceResult, DivergenceScorer
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
    answers: list[VerifiedAnswer]
    divergence: DivergenceResult | None = None  # None when an answer is missing
    threshold: float
    aligned: bool  # True only when both answered, independently, and agree
    escalate: bool  # not aligned -> a human must look (both answers are attached)
    tags: list[str] = Field(default_factory=list)  # the policy's tag when aligned
    confidence: float | None = None  # 1 - divergence (dual-model agreement)
    reasons: list[str] = Field(default_factory=list)

    @property
    def answer(self) -> VerifiedAnswer:
        """The answer to deliver when aligned: the first model's."""
        return self.answers[0]


def answer_text(response: dict) -> str:
    """The assistant text of an OpenAI chat.completion (tool calls rendered as JSON)."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError("response is not an OpenAI chat.completion (no choices[0].message)") from exc
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    parts = [content] if content else []
    if message.get("tool_calls"):
        parts.append(json.dumps(
            [tc.get("function", tc) for tc in message["tool_calls"]], sort_keys=True, ensure_ascii=False
        ))
    return "\n".join(parts)


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
) -> VerificationResult:
    """Ask `models[0]` and `models[1]` the same `body` concurrently and compare.

    `fallbacks` optionally gives each model its own failover chain
    (`{"qwen-72b": ["kimi-large"]}`). If both answers end up coming from the
    same model, the check is not independent and the result escalates. A model
    that fails entirely also escalates, with its error in `answers[i].error`.
    """
    if len(models) != 2 or models[0] == models[1]:
        raise ValueError(f"dual-model verification needs two different models, got {models!r}")
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
    div = await scorer.ascore(answers[0].text or "", answers[1].text or "", threshold)
    reasons += div.reasons
    independent = answers[0].model != answers[1].model
    if not independent:
        reasons.append(f"both answers came from {answers[0].model} (failover): not an independent check")
    aligned = div.aligned and independent
    return VerificationResult(
        answers=answers,
        divergence=div,
        threshold=threshold,
        aligned=aligned,
        escalate=not aligned,
        tags=[tag] if aligned and tag else [],
        confidence=round(1.0 - div.divergence, 4),
        reasons=reasons,
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
    """`verify()` driven by a Decision's `verification` obligation (models, threshold, tag)."""
    return await verify(
        dispatcher, body, list(verification.models), verification.threshold,
        scorer=scorer, tag=verification.tag, session_id=session_id, fallbacks=fallbacks,
    )
