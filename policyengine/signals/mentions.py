"""Lexicon mentions: word boundaries, inflections, phrases, names and known false friends.

`"sue"` matches "sue", "sues", "sued", "suing" but not "suit", "pursue", "issue"
or "Sue from your team"; `"solicitor"` matches "my solicitors'" and (one typo
allowed on long words) "solicter"; `"attorney"` does not match "power of
attorney"; multi-word entries match across spaces, hyphens and line breaks
("legal   action", "legal-actions", "taking legal action").
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policyengine.signals.base import MentionMatch

# Phrases that contain a lexicon word but are not about it. Keyed by the lexicon
# word (lower case); each value is a regex matched around the hit.
DEFAULT_EXCLUSIONS: dict[str, tuple[str, ...]] = {
    "attorney": (r"\b(?:lasting\s+|enduring\s+)?powers?\s+of\s+attorney\b", r"\battorney[\s-]+general\b"),
    "court": (r"\b(?:food|tennis|basketball|squash|netball|badminton|volleyball)\s+courts?\b", r"\bcourt\s+shoes?\b",
              r"\bcourt\s+of\s+public\s+opinion\b"),
    "courts": (r"\b(?:food|tennis|basketball|squash|netball|badminton|volleyball)\s+courts\b",),
    "action": (r"\baction\s+(?:figure|camera)s?\b",),
}
# Lexicon words that are also first names: a capitalised mid-sentence hit, or one
# in a name context ("Sue from billing", "thanks Sue"), is a person, not a verb.
NAME_WORDS = frozenset({"sue"})
_OBJECT_AFTER = re.compile(
    r"^\s*(?:you|u|ya|your|yours|them|him|her|the|this|that|every|for|over|if|unless|immediately|"
    r"straight\s+away|me|us|everyone)\b", re.I)
_NAME_AFTER = re.compile(
    r"^\s*(?:,|from|at|and\s+(?:I|me|my)\b|in\s+(?:your|the|customer|billing|accounts|support)|on\s+(?:the\s+phone|chat)|"
    r"said|says|told|was|has|had|is|mentioned|promised|confirmed|explained|helped|called|emailed|"
    r"(?:[A-Z][a-z]+)\b(?!\s+(?:you|your|them)))", re.X)
_NAME_BEFORE = re.compile(
    r"(?:\b(?:hi|hello|dear|thanks|thank\s+you|cheers|spoke\s+(?:to|with)|talked\s+to|speaking\s+(?:to|with)|"
    r"asked|named|called|with|by|and|agent|colleague|manager|advisor|adviser|rep|ask\s+for|wife|husband|mum|"
    r"mother|sister|daughter|friend|partner|aunt|gran|nan)|[,&])\s*$", re.I)


@dataclass(frozen=True)
class _Entry:
    phrase: str
    pattern: re.Pattern[str]
    exclusions: tuple[re.Pattern[str], ...]
    name_like: bool
    fuzzy_words: tuple[str, ...]  # long single words that tolerate one typo


def _inflections(word: str) -> list[str]:
    w = word.lower()
    forms = {w}
    if len(w) < 3 or not w.isalpha():
        return [re.escape(w)]
    forms |= {w + "s", w + "es", w + "'s", w + "s'", w + "\u2019s"}
    if w.endswith("e"):
        forms |= {w + "d", w[:-1] + "ing", w + "ing"}  # "suing" and the common "sueing"
    else:
        forms |= {w + "ed", w + "ing"}
    if w.endswith("y") and w[-2] not in "aeiou":
        forms |= {w[:-1] + "ies", w[:-1] + "ied"}
    if re.search(r"[^aeiou][aeiou][bdgklmnprt]$", w) and len(w) <= 5:
        forms |= {w + w[-1] + "ed", w + w[-1] + "ing"}
    return sorted((re.escape(f) for f in forms), key=len, reverse=True)


def _compile(phrase: str, extra_exclusions: Iterable[str] = ()) -> _Entry:
    words = re.findall(r"[\w'\u2019]+", phrase.lower())
    if not words:
        raise ValueError(f"lexicon phrase {phrase!r} has no words")
    body = r"[\s\-]+".join("(?:" + "|".join(_inflections(w)) + ")" for w in words)
    pattern = re.compile(rf"(?<![\w'\u2019-])(?:{body})(?!\w)", re.I)
    excl = [re.compile(x, re.I) for w in words for x in DEFAULT_EXCLUSIONS.get(w, ())]
    excl += [re.compile(x, re.I) for x in extra_exclusions]
    fuzzy = tuple(words) if len(words) == 1 and len(words[0]) >= 6 and words[0].isalpha() else ()
    return _Entry(phrase, pattern, tuple(excl), len(words) == 1 and words[0] in NAME_WORDS, fuzzy)


def _sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'\u201c\u2018(")
    return not before or before[-1] in ".!?\n:;" or before.endswith(("-", "—"))


_VERB_BEFORE = re.compile(r"(?:\b(?:will|would|shall|must|might|could|should|can|gonna|going\s+to|ready\s+to|want\s+to|"
                          r"have\s+to|need\s+to|to|then|just)|'ll)\s*$", re.I)
_TO_PERSON = re.compile(r"\b(?:pass(?:ed)?|send|sent|give|gave|forward(?:ed)?|speak|spoke|talk(?:ed)?|write|wrote|"
                        r"reply|replied|email(?:ed)?|mention(?:ed)?|explain(?:ed)?|said|over|on|back|it|this|that|"
                        r"letter|message|note)\s+to\s*$", re.I)


def _is_name(text: str, start: int, end: int) -> bool:
    """Is the hit a person's name ("Sue from billing") rather than the verb ("sue you")?"""
    token = text[start:end]
    after = text[end : end + 40]
    before = text[max(0, start - 30) : start]
    if _OBJECT_AFTER.match(after):
        return False  # "sue you", "Sue the company": a verb with its object
    if _TO_PERSON.search(before):
        return True  # "pass this on to Sue", "I spoke to Sue"
    if _NAME_BEFORE.search(before) and not _VERB_BEFORE.search(before):
        return True  # "thanks Sue", "Hi Sue", "my colleague Sue"
    if _VERB_BEFORE.search(before) and not re.match(r"^\s*(?:from|at)\s", after, re.I):
        return False  # "I'm ready to Sue.", "we will sue, see you in court"
    if _NAME_AFTER.match(after) or re.match(r"^\s*(?:from|at)\s", after, re.I):
        return True  # "Sue from your team said", "SUE FROM BILLING"
    if token[:1].isupper() and token[1:].islower():
        return not _sentence_start(text, start)  # "I spoke with Sue yesterday"
    return False


def edit_distance(a: str, b: str, limit: int = 2) -> int:
    """Optimal-string-alignment distance (a transposition counts once), capped at limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


_DERIVED_SUFFIXES = frozenset({"ed", "ing", "s", "es", "er", "ers", "ation", "ations", "ive", "ous", "ly", "ment"})


def _typo_of(token: str, target: str) -> bool:
    """One edit for 7-8 letter words, two for longer ones; same first letter."""
    if token == target or token[0] != target[0]:
        return False
    stem = target[:-2]
    if token.startswith(stem) and token[len(stem):] in _DERIVED_SUFFIXES:
        return False  # "solicited", "solicitation": a related real word, not a typo
    if len(target) < 7:  # short words: only a swapped pair of letters ("lawyre")
        return len(token) == len(target) and sorted(token) == sorted(target) and edit_distance(token, target, 1) <= 1
    limit = 1 if len(target) < 9 else 2
    # Lower bound first: every letter of the token that the target lacks costs an edit
    # ("summarise" vs "solicitor": 5 > 2), which settles most tokens without the DP.
    if sum(c not in target for c in token) > limit:
        return False
    return edit_distance(token, target, limit) <= limit


_WORD = re.compile(r"[A-Za-z]+")


class LexiconMatcher:
    """Compiled matchers for named lexicons, cached by (lexicon, phrases)."""

    def __init__(self, *, fuzzy: bool = True, exclusions: dict[str, Sequence[str]] | None = None) -> None:
        self.fuzzy = fuzzy
        self.exclusions = {k.lower(): tuple(v) for k, v in (exclusions or {}).items()}
        self._cache: dict[tuple[str, tuple[str, ...]], list[_Entry]] = {}
        self._lock = threading.Lock()

    def entries(self, lexicon: str, phrases: Sequence[str]) -> list[_Entry]:
        if isinstance(phrases, str):
            raise TypeError(f"lexicon {lexicon!r}: phrases must be a list of strings, not one string")
        key = (lexicon, tuple(phrases))
        got = self._cache.get(key)  # a dict lookup is atomic; the lock guards only the fill
        if got is None:
            got = []
            for p in phrases:
                if not isinstance(p, str) or not p.strip():
                    raise ValueError(f"lexicon {lexicon!r} has an empty or non-string phrase: {p!r}")
                got.append(_compile(p, self.exclusions.get(p.lower(), ())))
            with self._lock:
                self._cache[key] = got
        return got

    def find_all(self, text: str, lexicon: str, phrases: Sequence[str]) -> list[MentionMatch]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        hits: list[MentionMatch] = []
        taken: list[tuple[int, int]] = []
        entries = self.entries(lexicon, phrases)
        for entry in entries:
            for m in entry.pattern.finditer(text):
                s, e = m.span()
                if self._excluded(entry, text, s, e):
                    continue
                if entry.name_like and _is_name(text, s, e):
                    continue
                hits.append(MentionMatch(lexicon=lexicon, phrase=entry.phrase, matched_text=m.group(0), start=s, end=e))
                taken.append((s, e))
        if self.fuzzy:
            words: list[tuple[re.Match[str], int, int, str]] | None = None  # tokenised once, on demand
            for entry in entries:
                for target in entry.fuzzy_words:
                    if words is None:
                        words = [(m, *m.span(), m.group(0).lower()) for m in _WORD.finditer(text)]
                    for m, s, e, tok in words:
                        if any(a <= s < b for a, b in taken) or len(tok) < len(target) - 1 or tok[0] != target[0]:
                            continue
                        base = re.sub(r"(?:'s|s)$", "", tok) if not tok.endswith("ss") else tok
                        if _typo_of(tok, target) or _typo_of(base, target):
                            if self._excluded(entry, text, s, e):
                                continue
                            hits.append(MentionMatch(lexicon=lexicon, phrase=entry.phrase, matched_text=m.group(0),
                                                     start=s, end=e, method="fuzzy", score=0.9))
                            taken.append((s, e))
        hits.sort(key=lambda h: (h.start, -(h.end - h.start)))
        return hits

    def first(self, text: str, lexicon: str, phrases: Sequence[str]) -> MentionMatch | None:
        hits = self.find_all(text, lexicon, phrases)
        return hits[0] if hits else None

    @staticmethod
    def _excluded(entry: _Entry, text: str, s: int, e: int) -> bool:
        lo, hi = max(0, s - 40), min(len(text), e + 40)
        window = text[lo:hi]
        for rx in entry.exclusions:
            for m in rx.finditer(window):
                if m.start() + lo <= s and e <= m.end() + lo:
                    return True
        return False
