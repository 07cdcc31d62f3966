"""Intent behind a lexicon's topic: does the text *mean* it, not only use its words?

A lexicon finds words ("sue", "solicitor"); an intent model decides whether the writer
threatens, pursues or is preparing what the lexicon is about. Shipped topics are listed
in `INTENT_TOPICS` (today: `litigation`); a lexicon of that name uses the topic's model.

Method (the way sentiment trains its classifier): a logistic regression over the
sentence embedding (all-MiniLM-L6-v2) plus a few cues (negation before a topic word, a
third party as the subject, first person, a future/threat modal, a regulator instead of
a court), trained on `policyengine/signals/data/intent_<topic>.jsonl`, which ships with
the package. The text is split into sentences, and only sentences that contain a broad
topic term (an inflection- and typo-tolerant list, much wider than a policy's lexicon:
"counsel", "proceedings", "arbitration", "small claims", "letter before action"...) are
embedded. A text with no topic term has probability 0 and costs no embedding. The
text's probability is the maximum over those sentences (and the whole text when it is
short), and the sentence that gave it is kept as the evidence.

Guarantees: `probability()` is in [0, 1]; it is 0.0 exactly when no topic term occurs;
the model trains once per instance on first use; nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from policyengine.signals.embedder import Embedder, LazyEmbedder
from policyengine.signals.mentions import LexiconMatcher

if TYPE_CHECKING:  # numpy is part of the embeddings extra
    import numpy as np

__all__ = ["INTENT_TOPICS", "IntentModel", "IntentResult", "has_intent_model", "intent_training_set"]

# topic -> the broad terms that gate which sentences the model reads (matched with the
# lexicon matcher: word boundaries, inflections, names, typos on long words).
INTENT_TOPICS: dict[str, tuple[str, ...]] = {
    "litigation": (
        "sue", "lawsuit", "law suit", "lawyer", "legal", "legally", "solicitor", "attorney", "counsel", "barrister",
        "court", "courts", "judge", "judgment", "judgement", "tribunal", "proceedings", "litigation", "litigate",
        "arbitration", "class action", "group action", "group claim", "group litigation", "small claims",
        "small claim", "claim form", "money claim", "letter before", "pre-action", "redress", "remedies",
        "without prejudice", "issue a claim", "file suit", "defendant", "cort", "cout", "lawer", "lawyr",
        "sueing", "solicitr", "atturney", "llp", "act on my behalf", "act for me", "acting for me",
        "legal representation", "collective action", "clams",
    ),
}

_SENT = re.compile(r"[^.!?\n;]+[.!?;]*")
_NEG = re.compile(r"\b(?:not|never|no|won'?t|don'?t|isn'?t|aren'?t|wouldn'?t|can'?t|cannot|nobody|no one|"
                  r"haven'?t|without|nor|neither|rather not|no need|no intention|no plans?)\b|n't\b", re.I)
_FIRST = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|we|we'll|we've|we're|my|our|us|me)\b", re.I)
_MODAL = re.compile(r"\b(?:will|shall|going to|gonna|intend|'ll|about to|next step|expect|until|unless|or else|"
                    r"failing|otherwise|if)\b|'ll\b", re.I)
_REGULATOR = re.compile(r"\b(?:ombudsman|trading standards|regulator|ofcom|ofgem|ofwat|fca|cfpb|ftc|fcc|bbb|"
                        r"better business bureau|chargeback|citizens advice|cqc|commissioner|one-star review|the press)\b",
                        re.I)


def has_intent_model(lexicon: str) -> bool:
    """Does a shipped intent model exist for the lexicon's name (its topic)?"""
    return lexicon in INTENT_TOPICS


def intent_training_set(topic: str) -> list[tuple[str, bool]]:
    """The labelled sentences the topic's model trains on (shipped with the package)."""
    if topic not in INTENT_TOPICS:
        raise KeyError(f"no intent model for {topic!r}; topics: {', '.join(sorted(INTENT_TOPICS))}")
    raw = resources.files("policyengine.signals").joinpath(f"data/intent_{topic}.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [(r["text"], bool(r["label"])) for r in rows]


@dataclass(frozen=True)
class IntentResult:
    """The probability that the text means the topic, and the sentence that carried it."""

    topic: str
    probability: float
    sentence: str | None = None  # None when no topic term occurs
    start: int = 0
    end: int = 0


_CLAUSE = re.compile(r"[,;:]|\b(?:if|unless|but|until|or|should|because|so|otherwise)\b", re.I)
_PRONOUN = re.compile(r"\b(?:i|i'm|i'll|i've|i'd|we|we'll|we're|we've|you|he|she|they)\b", re.I)
_RELATION = re.compile(r"\b(?:brother|sister|son|daughter|mum|mom|mother|father|dad|husband|wife|partner|friend|"
                       r"couple|family|people|someone|somebody|next door|"
                       r"neighbou?r|colleague|boss|employer|client|tenant|landlord|aunt|uncle|flatmate|nephew|"
                       r"niece|cousin|company's|firm's|estate's|executor)\b", re.I)
_AGAINST = re.compile(r"\bagainst\s+(?:you|your|the\s+(?:company|bank|clinic|airline|hotel|firm|store|shop|"
                      r"provider|practice|business))\b|\byou(?:'ll| will)\s+(?:be\s+)?(?:hear|hearing|receive|"
                      r"be\s+served)\b|\b(?:sue|suing|sued)\s+(?:you|your|the)\b", re.I)
_ROLE_SELF = re.compile(r"\b(?:i'?m|i am|we'?re|we are)\s+an?\s+(?:\w+\s+){0,2}?(?:lawyer|solicitor|attorney|"
                        r"paralegal|barrister|journalist|witness|executor|receiver|deputy|reporter|consultant|"
                        r"firm|student|judge)\b|\b(?:estate|probate|jury|witness)\b|"
                        r"\bcourt[- ]appointed\b|\bappointed by the court\b", re.I)


# the legal action is aimed at someone else's party ("suing their builder", "taking her landlord to court")
_OTHERS_TARGET = re.compile(r"\b(?:su(?:e|es|ing|ed)|tak(?:e|es|ing)|took)\s+(?:their|his|her)\s+\w+", re.I)


def _clause(before: str) -> str:
    cut = list(_CLAUSE.finditer(before))
    return before[cut[-1].end():] if cut else before


_RELUCTANT = re.compile(r"\b(?:do(?:n'?t| not)|would(?:n'?t| not)|'?d rather not|rather not|prefer not|hate to|"
                        r"no wish to|nobody wants?|no one wants?|not want)\b(?:\s+\w+){0,3}?\s*(?:to|a|an|the|this)?\b",
                        re.I)
_DESPITE = re.compile(r"\b(?:but|if|unless|no (?:choice|option)|leaving me|heading|ready|will|otherwise)\b", re.I)


def _negated(before: str) -> bool:
    """A negator governs the topic word: within the six words before it, in the same
    clause, with no new subject ("I'm", "we") between the negator and the word.
    Reluctance ("I don't want to go to court") is not negation: see `_reluctant`."""
    clause = _clause(before)
    if _RELUCTANT.search(clause):
        return False
    words = clause.split()[-6:]
    last = max((i for i, w in enumerate(words) if _NEG.search(w)), default=None)
    if last is None:
        return False
    return not any(_PRONOUN.fullmatch(w.strip(".,!?\"'").lower()) for w in words[last + 1:])


def _third_party(sentence: str, before: str) -> bool:
    """Someone else's legal matter: a relation noun before the topic word in its clause
    with no first-person subject after it, or the writer naming a role ("I'm a paralegal")."""
    if _ROLE_SELF.search(sentence) or _OTHERS_TARGET.search(sentence):
        return True
    clause = _clause(before)
    found = list(_RELATION.finditer(clause))
    m = found[-1] if found else None
    return m is not None and not re.search(r"\b(?:i|i'm|i'll|i've|we|we'll|we've)\b", clause[m.end():], re.I)


def _cues(sentence: str, gate_hit_start: int) -> list[float]:
    before = sentence[:gate_hit_start]
    return [
        float(_negated(before)),
        float(_third_party(sentence, before)),
        float(bool(_FIRST.search(sentence))),
        float(bool(_MODAL.search(sentence))),
        float(bool(_AGAINST.search(sentence))),
        float(bool(_REGULATOR.search(sentence))),
        float("?" in sentence),
        float(bool(_RELUCTANT.search(before)) and bool(_DESPITE.search(sentence[gate_hit_start:]))),
    ]


class IntentModel(LazyEmbedder):
    """One topic's intent classifier. Construction is free; it trains on first use."""

    def __init__(self, topic: str = "litigation", embedder: Embedder | None = None, *,
                 regularisation: float = 32.0, cue_weight: float = 1.0, threshold: float = 0.3,
                 training: list[tuple[str, bool]] | None = None) -> None:
        if topic not in INTENT_TOPICS:
            raise KeyError(f"no intent model for {topic!r}; topics: {', '.join(sorted(INTENT_TOPICS))}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"intent threshold must be in (0, 1), got {threshold!r}")
        self.topic = topic
        # probability at or above which the text means the topic; 0.3 was chosen on the
        # tune split (tests/data/signals_tune), C and the cue weight likewise
        self.threshold = threshold
        self._embedder = embedder
        self.regularisation = regularisation
        self.cue_weight = cue_weight
        self._training = training
        self._terms = list(INTENT_TOPICS[topic])
        self._gate = LexiconMatcher()
        self._clf = None
        self._lock = threading.Lock()

    # -- windows -------------------------------------------------------------------

    def windows(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, first topic hit offset within the window) for each sentence with a
        topic term, plus the whole text when it is short (<= 3 sentences) and has one."""
        hits = self._gate.find_all(text, self.topic, self._terms)
        if not hits:
            return []
        out: list[tuple[int, int, int]] = []
        spans = [(m.start(), m.end()) for m in _SENT.finditer(text) if m.group(0).strip()]
        for s, e in spans:
            inside = [h for h in hits if s <= h.start < e]
            if inside:
                out.append((s, e, inside[0].start - s))
        if 1 < len(spans) <= 3:
            out.append((0, len(text), hits[0].start))
        return out

    def _features(self, texts: list[str], offsets: list[int]) -> np.ndarray:
        import numpy as np

        emb = self.embedder.embed(texts)
        cues = np.array([_cues(t, o) for t, o in zip(texts, offsets, strict=True)], dtype=np.float32)
        return np.hstack([emb, cues * self.cue_weight])

    def fit(self, rows: list[tuple[str, bool]] | None = None) -> IntentModel:
        """Train (or retrain) on labelled texts; called automatically on first use."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        rows = rows if rows is not None else (self._training or intent_training_set(self.topic))
        texts, offs = [], []
        for t, _ in rows:
            hits = self._gate.find_all(t, self.topic, self._terms)
            texts.append(t)
            offs.append(hits[0].start if hits else len(t))
        y = np.array([int(lab) for _, lab in rows])
        clf = LogisticRegression(C=self.regularisation, max_iter=3000, class_weight="balanced")
        clf.fit(self._features(texts, offs), y)
        self._clf = clf
        return self

    def _ensure(self):
        if self._clf is None:
            with self._lock:
                if self._clf is None:
                    self.fit()
        return self._clf

    # -- scoring -------------------------------------------------------------------

    def results(self, texts: list[str]) -> list[IntentResult]:
        """One IntentResult per text; texts without a topic term cost no embedding."""
        jobs: list[tuple[int, int, int, int]] = []  # text index, start, end, offset
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"intent needs text, got {type(t).__name__}")
            jobs += [(i, s, e, o) for s, e, o in self.windows(t)]
        out = [IntentResult(self.topic, 0.0) for _ in texts]
        if not jobs:
            return out
        clf = self._ensure()
        wins = [texts[i][s:e].strip() or texts[i][s:e] for i, s, e, _ in jobs]
        offs = [max(0, o - (len(texts[i][s:e]) - len(texts[i][s:e].lstrip()))) for i, s, e, o in jobs]
        proba = clf.predict_proba(self._features(wins, offs))[:, list(clf.classes_).index(1)]
        for (i, s, e, _), p, w in zip(jobs, proba, wins, strict=True):
            if out[i].sentence is None or p > out[i].probability:
                out[i] = IntentResult(self.topic, round(float(p), 4), w, s, e)
        return out

    def result(self, text: str) -> IntentResult:
        return self.results([text])[0]

    def probability(self, text: str) -> float:
        return self.result(text).probability

    def means(self, text: str) -> bool:
        """probability(text) >= threshold."""
        return self.probability(text) >= self.threshold
