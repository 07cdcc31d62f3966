"""The default SignalProvider the evaluator uses: sentiment, lexicon mentions, confidence."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from policyengine.signals.base import MentionMatch
from policyengine.signals.confidence import confidence_from_fields
from policyengine.signals.embedder import Embedder
from policyengine.signals.intent import IntentModel, has_intent_model
from policyengine.signals.mentions import LexiconMatcher
from policyengine.signals.semantic_mentions import SemanticMentions
from policyengine.signals.sentiment import Method, SentimentScorer

# (topic, embedder or None for the shared one) -> its intent model; IntentModel trains under its own lock
_SHARED_INTENTS: dict[tuple[str, Embedder | None], IntentModel] = {}
# (method, embedder or None) -> its sentiment scorer, fitted on the shipped data under its own lock
_SHARED_SENTIMENT: dict[tuple[str, Embedder | None], SentimentScorer] = {}
_SHARED_LOCK = threading.Lock()


class DefaultSignalProvider:
    """Implements `SignalProvider`. Cheap to construct; models load on first use. The trained
    models (sentiment, each topic's intent) are one per process for each embedder, shared by
    every provider built on it.

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
        self._intents: dict[str, IntentModel] = {}
        self._sentiment = self._shared_sentiment(sentiment_method)
        self._matcher = LexiconMatcher(fuzzy=fuzzy_mentions, exclusions=dict(exclusions or {}))
        # optional embedding second signal, only consulted when no phrase matched
        self._semantic = SemanticMentions(embedder, semantic_mentions) if semantic_mentions is not None else None

    def _shared_sentiment(self, method: Method) -> SentimentScorer:
        """The sentiment scorer for (method, embedder): one per process, shared by every provider
        like the intent models, and reading litigation from the shared litigation model, so a
        second service or a reload never fits it again (fitting embeds about 4,000 texts and
        scores each through the litigation model)."""
        key = (method, self.embedder)
        with _SHARED_LOCK:
            scorer = _SHARED_SENTIMENT.get(key)
        if scorer is None:
            litigation = self.intent_model("litigation")
            with _SHARED_LOCK:
                scorer = _SHARED_SENTIMENT.setdefault(
                    key, SentimentScorer(self.embedder, method=method, intent=litigation))
        return scorer

    def sentiment(self, text: str) -> float:
        return self._sentiment.score(text)

    def mentions(self, text: str, lexicon: str, phrases: list[str]) -> MentionMatch | None:
        hit = self._matcher.first(text, lexicon, phrases)
        if hit is None and self._semantic is not None and text.strip():
            hit = self._semantic.first(text, lexicon, phrases)
        return hit

    def intent_model(self, lexicon: str) -> IntentModel:
        """The lexicon topic's intent model, trained on first use: one per process for each
        (topic, embedder), shared by every provider, so a second service or a reload in the same
        process never trains it again (training embeds about 4,000 texts)."""
        model = self._intents.get(lexicon)
        if model is None:
            with _SHARED_LOCK:
                key = (lexicon, self.embedder)
                model = _SHARED_INTENTS.get(key)
                if model is None:
                    model = _SHARED_INTENTS[key] = IntentModel(lexicon, self.embedder)
            self._intents[lexicon] = model
        return model

    def mention_intent(self, text: str, lexicon: str, phrases: list[str], mode: str = "both") -> MentionMatch | None:
        """`text mentions LEXICON by intent` / `by both`: a MentionMatch when the lexicon topic's
        intent model says the text means it (probability >= the model's threshold), else None.

        `intent` ignores the lexicon's words for the decision; `both` decides the same way and
        reports the lexicon word found in (or, failing that, anywhere outside) the evidence
        sentence. A lexicon without an intent model is decided by words (`mentions`). Raises
        ValueError for an unknown mode."""
        if mode not in ("intent", "both"):
            raise ValueError(f"mention_intent mode must be intent or both, got {mode!r}")
        if not has_intent_model(lexicon):
            return self.mentions(text, lexicon, phrases)
        model = self.intent_model(lexicon)
        res = model.result(text)
        if res.probability < model.threshold or res.sentence is None:
            return None
        hits = self._matcher.find_all(text, lexicon, phrases)
        inside = [h for h in hits if res.start <= h.start < res.end] or hits
        word = inside[0] if inside else None
        return MentionMatch(
            lexicon=lexicon, phrase=word.phrase if word else None, matched_text=word.matched_text if word else None,
            start=res.start, end=res.end, method="intent", score=res.probability, mode=mode,
            intent=res.probability, evidence=res.sentence,
        )

    def all_mentions(self, text: str, lexicon: str, phrases: list[str]) -> list[MentionMatch]:
        return self._matcher.find_all(text, lexicon, phrases)

    def confidence(self, text: str | None, fields: dict) -> float | None:
        if not isinstance(fields, Mapping):
            raise TypeError("fields must be a mapping")
        return confidence_from_fields(fields)

    def warm_up(self) -> None:
        """Load the embedding model and train the sentiment classifier and the shipped intent
        models now."""
        self._sentiment.score("warm up")
        for topic in ("litigation",):
            self.intent_model(topic).result("warm up: I will sue")


async def precompute(
    provider: Any,
    action: Any,
    needed: set[str],
    lexicons: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Compute the signals a decision needs, off the event loop, for `Action.signals`.

    `needed` names signals: "sentiment", "confidence", or "mentions:<lexicon>" (the default
    mode: intent-aware for a lexicon with an intent model), "mentions:<lexicon>:words",
    "mentions:<lexicon>:intent" (phrases taken from `lexicons`). Values the action already carries in
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
                _, lex, *rest = name.split(":")
                if lex not in lexicons:
                    raise ValueError(f"signal {name!r} needs the phrases of lexicon {lex!r}")
                mode = rest[0] if rest else ("both" if has_intent_model(lex) else "words")
                if mode not in ("words", "intent", "both"):
                    raise ValueError(f"unknown mention mode in {name!r} (words, intent, both)")
                if not text:
                    out[name] = None
                elif mode == "words" or not hasattr(provider, "mention_intent"):
                    out[name] = provider.mentions(text, lex, list(lexicons[lex]))
                else:
                    out[name] = provider.mention_intent(text, lex, list(lexicons[lex]), mode)
            else:
                raise ValueError(f"unknown signal {name!r} (sentiment, confidence, mentions:<lexicon>[:mode])")
        return out

    return await asyncio.to_thread(work)
