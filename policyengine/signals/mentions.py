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
from typing import NamedTuple

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


# Every entry's pattern is _LEFT_EDGE (?:body) _RIGHT_EDGE; the shared edges let the
# lexicon's pre-check test them once per position rather than once per entry.
_LEFT_EDGE = r"(?<![\w'\u2019-])"
_RIGHT_EDGE = r"(?!\w)"


def _compile(phrase: str, extra_exclusions: Iterable[str] = ()) -> _Entry:
    words = re.findall(r"[\w'\u2019]+", phrase.lower())
    if not words:
        raise ValueError(f"lexicon phrase {phrase!r} has no words")
    body = r"[\s\-]+".join("(?:" + "|".join(_inflections(w)) + ")" for w in words)
    pattern = re.compile(f"{_LEFT_EDGE}(?:{body}){_RIGHT_EDGE}", re.I)
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
    """One edit for 7-8 letter words, two for longer ones, a swap (or for 6 letters one inserted
    letter) for shorter ones; same first letter."""
    if token == target or token[0] != target[0]:
        return False
    stem = target[:-2]
    if token.startswith(stem) and token[len(stem):] in _DERIVED_SUFFIXES:
        return False  # "solicited", "solicitation": a related real word, not a typo
    if len(target) < 7:  # short words: a swapped pair of letters ("lawyre"), or for 6 letters one extra ("lawywer")
        if len(target) == 6 and len(token) == 7 and edit_distance(token, target, 1) <= 1:
            return True
        return len(token) == len(target) and sorted(token) == sorted(target) and edit_distance(token, target, 1) <= 1
    limit = 1 if len(target) < 9 else 2
    # Lower bound first: every letter of the token that the target lacks costs an edit
    # ("summarise" vs "solicitor": 5 > 2), which settles most tokens without the DP.
    if sum(c not in target for c in token) > limit:
        return False
    return edit_distance(token, target, limit) <= limit


_WORD = re.compile(r"[A-Za-z]+")
_PLURAL = re.compile(r"(?:'s|s)$")


class _FuzzyTarget(NamedTuple):
    entry: _Entry
    target: str
    min_len: int  # shorter tokens are never tried against the target
    # A token with more than max_foreign + 1 letters that the target lacks is a typo of it
    # neither as it stands nor without a plural "s": _typo_of's letter-count lower bound
    # (at most 1 for 6-8 letters, 2 for longer; 0 for shorter words, which need the same
    # letters), and dropping the "s" removes at most one such letter.
    max_foreign: int
    letters: bytes  # the target's ASCII letters, for bytes.translate(None, letters)


def _fuzzy_target(entry: _Entry, target: str) -> _FuzzyTarget:
    # 6 letters admit one inserted letter (a foreign one); shorter words only a swap
    max_foreign = 0 if len(target) < 6 else 1 if len(target) < 9 else 2
    return _FuzzyTarget(entry, target, len(target) - 1, max_foreign,
                        bytes(sorted({ord(c) for c in target if ord(c) < 128})))


@dataclass(frozen=True)
class _Plan:
    """A compiled lexicon: its entries plus what lets find_all skip work on texts without hits."""

    entries: list[_Entry]
    # Matches somewhere iff some entry's pattern does (None: no pre-check, run every entry).
    exact_check: re.Pattern[str] | None
    # The _WORD tokens that can be a typo of some fuzzy target: those whose first letter
    # starts a target and that are long enough for the shortest such target.
    fuzzy_tokens: re.Pattern[str] | None
    # token's first letter -> _FuzzyTarget in entry order, then target order
    fuzzy_by_letter: dict[str, tuple[_FuzzyTarget, ...]]


def _exact_check(entries: Sequence[_Entry]) -> re.Pattern[str] | None:
    """One regex that finds a match iff at least one entry's pattern finds one.

    An alternation finds a match at a position iff one of its alternatives does, and
    every pattern here is _LEFT_EDGE (?:body) _RIGHT_EDGE, so the edges are tested once:
    `LEFT (?:(?:b1)|(?:b2)|...) RIGHT`. Patterns that do not have that shape (or
    different flags) fall back to the plain alternation `(?:p1)|(?:p2)|...`, or to no
    pre-check at all.
    """
    if not entries or len({e.pattern.flags for e in entries}) != 1:
        return None
    flags = entries[0].pattern.flags
    sources = [e.pattern.pattern for e in entries]
    bodies = [p[len(_LEFT_EDGE) : len(p) - len(_RIGHT_EDGE)] for p in sources
              if p.startswith(_LEFT_EDGE) and p.endswith(_RIGHT_EDGE)
              and len(p) > len(_LEFT_EDGE) + len(_RIGHT_EDGE)]
    candidates = ["|".join(f"(?:{p})" for p in sources)]
    if len(bodies) == len(sources):
        candidates.insert(0, _LEFT_EDGE + "(?:" + "|".join(f"(?:{b})" for b in bodies) + ")" + _RIGHT_EDGE)
    for source in candidates:
        try:
            return re.compile(source, flags)
        except re.error:  # pragma: no cover - every entry's own pattern compiled
            continue
    return None  # pragma: no cover


def _plan(entries: list[_Entry]) -> _Plan:
    by_letter: dict[str, list[_FuzzyTarget]] = {}
    for entry in entries:
        for target in entry.fuzzy_words:
            by_letter.setdefault(target[0], []).append(_fuzzy_target(entry, target))
    # Tokens are ASCII letters lower-cased, so only an ASCII lower-case first letter can
    # ever equal a token's; the shortest target there bounds the token length from below.
    letters = sorted(c for c in by_letter if "a" <= c <= "z")
    fuzzy_tokens = None
    if letters:
        least = min(f.min_len for c in letters for f in by_letter[c])
        cls = "".join(letters) + "".join(letters).upper()
        # A maximal run of ASCII letters (what _WORD yields), starting with one of the
        # letters and at least `least` long. The letter comes first so the regex engine
        # can skip ahead to it; the look-behind then says the run starts there (the
        # letter just read is itself a letter, so this fails iff the one before it is).
        fuzzy_tokens = re.compile(f"[{cls}](?<![A-Za-z][A-Za-z])[A-Za-z]{{{max(least - 1, 0)},}}")
    return _Plan(entries, _exact_check(entries), fuzzy_tokens,
                 {c: tuple(v) for c, v in by_letter.items()})


class LexiconMatcher:
    """Compiled matchers for named lexicons, cached by (lexicon, phrases)."""

    def __init__(self, *, fuzzy: bool = True, exclusions: dict[str, Sequence[str]] | None = None) -> None:
        self.fuzzy = fuzzy
        self.exclusions = {k.lower(): tuple(v) for k, v in (exclusions or {}).items()}
        self._cache: dict[tuple[str, tuple[str, ...]], _Plan] = {}
        self._lock = threading.Lock()

    def entries(self, lexicon: str, phrases: Sequence[str]) -> list[_Entry]:
        return self._plan(lexicon, phrases).entries

    def _plan(self, lexicon: str, phrases: Sequence[str]) -> _Plan:
        if isinstance(phrases, str):
            raise TypeError(f"lexicon {lexicon!r}: phrases must be a list of strings, not one string")
        key = (lexicon, tuple(phrases))
        got = self._cache.get(key)  # a dict lookup is atomic; the lock guards only the fill
        if got is None:
            entries = []
            for p in phrases:
                if not isinstance(p, str) or not p.strip():
                    raise ValueError(f"lexicon {lexicon!r} has an empty or non-string phrase: {p!r}")
                entries.append(_compile(p, self.exclusions.get(p.lower(), ())))
            got = _plan(entries)
            with self._lock:
                self._cache[key] = got
        return got

    def find_all(self, text: str, lexicon: str, phrases: Sequence[str]) -> list[MentionMatch]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        hits: list[MentionMatch] = []
        taken: list[tuple[int, int]] = []
        plan = self._plan(lexicon, phrases)
        if plan.exact_check is None or plan.exact_check.search(text) is not None:
            for entry in plan.entries:
                for m in entry.pattern.finditer(text):
                    s, e = m.span()
                    if self._excluded(entry, text, s, e):
                        continue
                    if entry.name_like and _is_name(text, s, e):
                        continue
                    hits.append(MentionMatch(lexicon=lexicon, phrase=entry.phrase, matched_text=m.group(0),
                                             start=s, end=e))
                    taken.append((s, e))
        if self.fuzzy and plan.fuzzy_tokens is not None:
            # Token by token rather than entry by entry: a token goes to the first (entry,
            # target) that takes it, as before, since a fuzzy hit covers only its own token.
            # Fuzzy hits never share a start with each other or with an exact hit, so the
            # stable sort below puts everything in the same order as before.
            by_letter = plan.fuzzy_by_letter
            for m in plan.fuzzy_tokens.finditer(text):
                s, e = m.span()
                if taken and any(a <= s < b for a, b in taken):
                    continue
                word = m.group(0)
                tok = word.lower()
                raw = tok.encode("ascii")  # _WORD tokens are ASCII letters
                base: str | None = None
                for entry, target, min_len, max_foreign, letters in by_letter[tok[0]]:
                    if len(tok) < min_len or len(raw.translate(None, letters)) - 1 > max_foreign:
                        continue
                    if base is None:
                        base = _PLURAL.sub("", tok) if not tok.endswith("ss") else tok
                    if _typo_of(tok, target) or (base != tok and _typo_of(base, target)):
                        if self._excluded(entry, text, s, e):
                            continue
                        hits.append(MentionMatch(lexicon=lexicon, phrase=entry.phrase, matched_text=word,
                                                 start=s, end=e, method="fuzzy", score=0.9))
                        break
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
