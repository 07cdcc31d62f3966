"""Escalation signals (sentiment, lexicon mentions, confidence) and dual-model verification.

Importing this package is cheap and needs only the light install (`pip install
policyengine-llm`): no module here imports numpy, torch, sentence-transformers or
scikit-learn at import time. Lexicon mentions and confidence work with the light install;
sentiment, divergence and verification run the sentence-embedding model and need the
`embeddings` extra (`pip install 'policyengine-llm[embeddings]'`), imported and loaded on
first use. `require_available(policy)` checks, without importing it, that the stack a
policy needs is installed.
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
from policyengine.signals.judge import JUDGE_SYSTEM_PROMPT, JudgeVerdict, ask_judge, parse_verdict
from policyengine.signals.mentions import LexiconMatcher
from policyengine.signals.pair_model import PairModel, PairModelError, shared_pair_model
from policyengine.signals.provider import DefaultSignalProvider, precompute
from policyengine.signals.requirements import (
    EMBEDDINGS_EXTRA,
    EmbeddingsNotInstalled,
    embedding_uses,
    missing_extras,
    missing_modules,
    require_available,
)
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
    "EMBEDDINGS_EXTRA",
    "JUDGE_SYSTEM_PROMPT",
    "DefaultSignalProvider",
    "DivergenceResult",
    "DivergenceScorer",
    "Embedder",
    "EmbeddingModelError",
    "EmbeddingsNotInstalled",
    "JudgeVerdict",
    "LexiconMatcher",
    "MentionMatch",
    "PairModel",
    "PairModelError",
    "SentimentScorer",
    "SignalProvider",
    "VerificationResult",
    "VerifiedAnswer",
    "answer_text",
    "ask_judge",
    "confidence_from_fields",
    "confidence_from_logprobs",
    "default_model_path",
    "embedding_uses",
    "missing_extras",
    "missing_modules",
    "parse_confidence",
    "parse_verdict",
    "precompute",
    "require_available",
    "run_verification",
    "shared_embedder",
    "shared_pair_model",
    "vader_sentiment",
    "verify",
]
