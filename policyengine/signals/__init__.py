"""Escalation signals (sentiment, lexicon mentions, confidence) and dual-model verification.

Everything heavy (the sentence-transformers model, the sentiment classifier)
loads lazily on first use; importing this package is cheap.
"""

from policyengine.signals.base import MentionMatch, SignalProvider
from policyengine.signals.confidence import (
    confidence_from_fields,
    confidence_from_logprobs,
    parse_confidence,
)
from policyengine.signals.divergence import DEFAULT_THRESHOLD, DivergenceResult, DivergenceScorer
from policyengine.signals.embedder import (
    Embedder,
    EmbeddingModelError,
    default_model_path,
    shared_embedder,
)
from policyengine.signals.mentions import LexiconMatcher
from policyengine.signals.provider import DefaultSignalProvider, precompute
from policyengine.signals.sentiment import SentimentScorer, vader_sentiment
from policyengine.signals.verify import (
    VerificationResult,
    VerifiedAnswer,
    answer_text,
    run_verification,
    verify,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "DefaultSignalProvider",
    "DivergenceResult",
    "DivergenceScorer",
    "Embedder",
    "EmbeddingModelError",
    "LexiconMatcher",
    "MentionMatch",
    "SentimentScorer",
    "SignalProvider",
    "VerificationResult",
    "VerifiedAnswer",
    "answer_text",
    "confidence_from_fields",
    "confidence_from_logprobs",
    "default_model_path",
    "parse_confidence",
    "precompute",
    "run_verification",
    "shared_embedder",
    "vader_sentiment",
    "verify",
]
