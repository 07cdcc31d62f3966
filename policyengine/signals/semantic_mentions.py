"""Optional second signal for lexicon mentions: sentence embeddings near a lexicon phrase.

Off by default. Measured on tests/data/litigation.jsonl it adds little: the
lexical matcher already finds every mention that uses a lexicon word, and the
embedding signal mostly adds false positives (a colleague called "Sue" embeds
close to "sue"). It is here for lexicons of concepts that customers paraphrase
("my legal representatives"); enable it with a high threshold and measure.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from policyengine.signals.base import MentionMatch
from policyengine.signals.embedder import Embedder, LazyEmbedder

if TYPE_CHECKING:  # numpy is part of the embeddings extra: imported where vectors are compared
    import numpy as np

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


class SemanticMentions(LazyEmbedder):
    def __init__(self, embedder: Embedder | None = None, threshold: float = 0.65) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"semantic mention threshold must be in (0, 1], got {threshold!r}")
        self._embedder = embedder
        self.threshold = threshold
        self._protos: dict[tuple[str, ...], np.ndarray] = {}
        self._lock = threading.Lock()

    def _prototypes(self, phrases: Sequence[str]) -> np.ndarray:
        key = tuple(phrases)
        with self._lock:
            got = self._protos.get(key)
        if got is None:
            got = self.embedder.embed(list(phrases))
            with self._lock:
                self._protos[key] = got
        return got

    def first(self, text: str, lexicon: str, phrases: Sequence[str]) -> MentionMatch | None:
        import numpy as np

        spans = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group(0).strip()]
        if not spans or not phrases:
            return None
        sims = self.embedder.embed([text[s:e].strip() for s, e in spans]) @ self._prototypes(phrases).T
        i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
        score = float(sims[i, j])
        if score < self.threshold:
            return None
        s, e = spans[i]
        return MentionMatch(lexicon=lexicon, phrase=phrases[j], matched_text=text[s:e].strip(), start=s, end=e,
                            method="embedding", score=round(score, 4))
