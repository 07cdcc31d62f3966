"""The interface between the pure evaluator and signal computation.

The evaluator asks for a signal only when a rule needs it, and only if the
action did not supply the value itself. Implementations may be slow (an
embedding model) but must not do network I/O: the evaluator is synchronous.
Divergence is not here: it needs two model answers, so the service runs the
verification and re-evaluates with `signals["divergence"]` supplied.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class MentionMatch(BaseModel):
    """A text that mentions a lexicon: the words that matched and, when the lexicon's topic
    has an intent model and the mode asked for it, the intent probability and its sentence.

    By words (`mode="words"`): `phrase` is the lexicon entry, `matched_text` the text as
    written, `start`/`end` its span. By intent or both: `intent` is the probability (at or
    above the model's threshold), `evidence` the sentence that carried it (`start`/`end` its
    span), and `phrase`/`matched_text` the lexicon word inside it, or None when the intent
    came without any lexicon word (an indirect form: "my legal team will be in touch")."""

    lexicon: str
    phrase: str | None  # the lexicon entry that matched (None: intent without a lexicon word)
    matched_text: str | None  # the text as it appeared, e.g. "suing"
    start: int
    end: int
    method: str = "lexical"  # lexical | fuzzy | embedding | intent
    score: float = 1.0
    mode: str = "words"  # words | intent | both
    intent: float | None = None  # P(the text means the lexicon's topic), for intent and both
    evidence: str | None = None  # the sentence the intent model read


@runtime_checkable
class SignalProvider(Protocol):
    def sentiment(self, text: str) -> float:
        """0 = very negative ... 1 = very positive."""
        ...

    def mentions(self, text: str, lexicon: str, phrases: list[str]) -> MentionMatch | None:
        """First match of any phrase of the named lexicon in text, or None."""
        ...

    def confidence(self, text: str | None, fields: dict) -> float | None:
        """Model confidence for the action when the caller did not supply one."""
        ...
