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
    lexicon: str
    phrase: str  # the lexicon entry that matched
    matched_text: str  # the text as it appeared, e.g. "suing"
    start: int
    end: int
    method: str = "lexical"  # lexical | embedding
    score: float = 1.0


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
