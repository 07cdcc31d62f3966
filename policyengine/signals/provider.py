"""The default SignalProvider the evaluator uses: sentiment, lexicon mentions, confidence."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from policyengine.signals.base import MentionMatch
from policyengine.signals.confidence import confidence_from_fields
from policyengine.signals.embedder import Embedder
from policyengine.signals.mentions import LexiconMatcher
from policyengine.signals.semantic_mentions import SemanticMentions
from policyengine.signals.sentiment import Method, SentimentScorer


class DefaultSignalProvider:
    """Implements `SignalProvider`. Cheap to construct; models load on first use.

    The methods are synchronous and may take tens of milliseconds (sentiment
    runs the embedding model; the very first call also loads it, ~5 s), so an
    async service should either call `evaluate` in a worker thread or use
    `precompute()` to fill `Action.signals` off the event loop first.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        sentiment_method: Method = "combined",
        fuzzy_mentions: bool = True,
        exclusions: Mapping[str, Sequence[str]] | None = None,
        semantic_mentions: float | None = None,
    ) -> None:
        self.embedder = embedder
        self._sentiment = SentimentScorer(embedder, method=sentiment_method)
        self._matcher = LexiconMatcher(fuzzy=fuzzy_mentions, exclusions=dict(exclusions or {}))
        # optional embedding second signal, only consulted when no phrase matched
        self._semantic = SemanticMentions(embedder, semantic_mentions) if semantic_mentions is not None else None

    def sentiment(self, text: str) -> float:
        return self._sentiment.score(text)

    def mentions(self, text: str, lexicon: str, phrases: list[str]) -> MentionMatch | None:
        hit = self._matcher.first(text, lexicon, phrases)
        if hit is None and self._semantic is not None and text.strip():
            hit = self._semantic.first(text, lexicon, phrases)
        return hit

    def all_mentions(self, text: str, lexicon: str, phrases: list[str]) -> list[MentionMatch]:
        return self._matcher.find_all(text, lexicon, phrases)

    def confidence(self, text: str | None, fields: dict) -> float | None:
        if not isinstance(fields, Mapping):
            raise TypeError("fields must be a mapping")
        return confidence_from_fields(fields)

    def warm_up(self) -> None:
        """Load the embedding model and train the sentiment classifier now."""
        self._sentiment.score("warm up")


async def precompute(
    provider: Any,
    action: Any,
    needed: set[str],
    lexicons: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Compute the signals a decision needs, off the event loop, for `Action.signals`.

    `needed` names signals: "sentiment", "confidence", or "mentions:<lexicon>"
    (phrases taken from `lexicons`). Values the action already carries in
    `action.signals` are left alone. Returns only the newly computed values:
    `{"sentiment": 0.12, "confidence": 0.8, "mentions:litigation": MentionMatch | None}`.
    """
    have = dict(getattr(action, "signals", {}) or {})
    text = getattr(action, "text", None) or ""
    fields = dict(getattr(action, "fields", {}) or {})
    lexicons = lexicons or {}

    def work() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in sorted(needed):
            if name in have:
                continue
            if name == "sentiment":
                if text:
                    out[name] = provider.sentiment(text)
            elif name == "confidence":
                out[name] = provider.confidence(text or None, fields)
            elif name.startswith("mentions:"):
                lex = name.split(":", 1)[1]
                if lex not in lexicons:
                    raise ValueError(f"signal {name!r} needs the phrases of lexicon {lex!r}")
                out[name] = provider.mentions(text, lex, list(lexicons[lex])) if text else None
            else:
                raise ValueError(f"unknown signal {name!r} (sentiment, confidence, mentions:<lexicon>)")
        return out

    return await asyncio.to_thread(work)
