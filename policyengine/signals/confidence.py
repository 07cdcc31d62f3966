"""Model confidence: supplied by the caller, derived from token logprobs, or from agreement."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CONFIDENCE_FIELDS = ("confidence", "model_confidence")


def _mean_prob(logprobs: Sequence[Any]) -> float | None:
    values = [float(x) for x in logprobs if isinstance(x, int | float) and not isinstance(x, bool)]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    # geometric mean of the token probabilities: exp(mean log p)
    return round(min(1.0, max(0.0, math.exp(sum(values) / len(values)))), 4)


def confidence_from_logprobs(choice: Mapping[str, Any] | None) -> float | None:
    """exp(mean token logprob) of one OpenAI choice, or None when it has no logprobs.

    Understands chat completions (`choice.logprobs.content[*].logprob`, as vLLM,
    Ollama's OpenAI API and OpenAI send) and legacy completions
    (`choice.logprobs.token_logprobs`).
    """
    if not isinstance(choice, Mapping):
        return None
    lp = choice.get("logprobs")
    if not isinstance(lp, Mapping):
        return None
    content = lp.get("content")
    if isinstance(content, list):
        return _mean_prob([t.get("logprob") for t in content if isinstance(t, Mapping)])
    tokens = lp.get("token_logprobs")
    if isinstance(tokens, list):
        return _mean_prob(tokens)
    return None


def parse_confidence(value: Any, name: str = "confidence") -> float:
    """0.82, "0.82", "82%" or 82 (a percentage) -> 0.82; anything else is a clear error."""
    raw = value
    if isinstance(value, str):
        s = value.strip()
        pct = s.endswith("%")
        try:
            value = float(s.rstrip("%").strip())
        except ValueError:
            raise ValueError(f"{name} must be a number in [0, 1] or a percentage, got {raw!r}") from None
        if pct:
            value /= 100.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1] or a percentage, got {raw!r}")
    if 1.0 < value <= 100.0:
        value = value / 100.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (or 0-100 as a percentage), got {raw!r}")
    return float(value)


def confidence_from_fields(fields: Mapping[str, Any]) -> float | None:
    """The first confidence the action's fields carry, or None.

    Looked up in order: an explicit `confidence` / `model_confidence`;
    `logprobs` (a list of token logprobs or an OpenAI logprobs object);
    `choice` or `response` (an OpenAI choice / chat.completion with logprobs);
    `divergence` from a dual-model verification (confidence = 1 - divergence).
    """
    for key in CONFIDENCE_FIELDS:
        if fields.get(key) is not None:
            return parse_confidence(fields[key], key)
    lp = fields.get("logprobs")
    if isinstance(lp, list):
        if lp and all(isinstance(x, Mapping) for x in lp):
            return confidence_from_logprobs({"logprobs": {"content": lp}})
        return _mean_prob(lp)
    if isinstance(lp, Mapping):
        return confidence_from_logprobs({"logprobs": lp})
    choice = fields.get("choice")
    if isinstance(choice, Mapping):
        return confidence_from_logprobs(choice)
    response = fields.get("response")
    if isinstance(response, Mapping):
        choices = response.get("choices")
        if isinstance(choices, list) and choices:
            return confidence_from_logprobs(choices[0])
    if fields.get("divergence") is not None:
        return round(1.0 - parse_confidence(fields["divergence"], "divergence"), 4)
    return None
