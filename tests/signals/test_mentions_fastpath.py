"""LexiconMatcher.find_all's fast path (one pre-check regex, fuzzy tokens looked up by first
letter) must give exactly what the old entry-by-entry scan gave: same hits, order, method,
score and spans, for every text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine.signals.base import MentionMatch
from policyengine.signals.mentions import _WORD, LexiconMatcher, _is_name, _typo_of


def reference_find_all(self: LexiconMatcher, text: str, lexicon: str, phrases: list[str]) -> list[MentionMatch]:
    """The find_all this fast path replaced, verbatim (with `self` the matcher)."""
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


LIT = ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]
LEXICONS: dict[str, list[str]] = {
    "litigation": LIT,
    "litigation+lawyer": [*LIT, "lawyer"],
    # overlapping entries, several fuzzy targets per first letter, a duplicate, capitals
    "broad": ["legal action", "action", "legal", "solicitor", "settlement", "summons", "Solicitor", "sue",
              "lawyer", "lawsuit", "litigation", "attorney", "attorneys", "tribunal", "court", "courts",
              "small claims court", "ombudsman", "barrister", "complaint"],
    "odd": ["x-ray", "don't", "café", "naïve", "größe", "a", "I", "ok"],
}
MATCHERS = {
    "default": LexiconMatcher(),
    "no-fuzzy": LexiconMatcher(fuzzy=False),
    # an exclusion that rejects a fuzzy hit for one entry so the next entry may take the token
    "exclusions": LexiconMatcher(exclusions={"attorney": [r"\batorneys?\b"], "court": [r"\bcourt\s+reporter\b"],
                                             "solicitor": [r"\bsolicter\b"]}),
}
CASES = [(mk, lk) for mk in MATCHERS for lk in LEXICONS]


def _dump(hits: list[MentionMatch]) -> list[dict[str, Any]]:
    return [h.model_dump() for h in hits]


def assert_same(text: str) -> None:
    for mk, lk in CASES:
        matcher, phrases = MATCHERS[mk], LEXICONS[lk]
        got = matcher.find_all(text, lk, phrases)
        want = reference_find_all(matcher, text, lk, phrases)
        assert _dump(got) == _dump(want), (mk, lk, text)


def _strings(x: Any) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in _strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in _strings(v)]
    return []


DATA = Path(__file__).resolve().parents[1] / "data"
DATA_TEXTS = sorted({s for f in sorted(DATA.glob("*.jsonl")) for line in f.read_text().splitlines() if line.strip()
                     for s in _strings(json.loads(line))})


def test_the_labelled_sets_are_there():
    names = {f.name for f in DATA.glob("*.jsonl")}
    assert {"litigation.jsonl", "sentiment.jsonl", "divergence_pairs.jsonl"} <= names
    assert len(DATA_TEXTS) > 400


def test_labelled_texts_match_the_reference():
    hits = 0
    for text in DATA_TEXTS:
        assert_same(text)
        hits += bool(MATCHERS["default"].find_all(text, "litigation", LIT))
    assert hits > 20  # the sets do exercise the hit paths


def test_labelled_texts_joined_match_the_reference():
    # several hits (exact and fuzzy) in one text, and long texts
    for i in range(0, len(DATA_TEXTS), 25):
        assert_same("\n".join(DATA_TEXTS[i : i + 25]))


EDGE_CASES = [
    "", " ", "Summarise my last ticket.", "sue", "Sue", "SUE", "suing", "sueing",
    "my solicter has the papers", "my solicters' letter", "the lawsiut is pending", "two lawsiuts",
    "the attorny's fees", "i will get an atorney", "atorneys everywhere", "my attorneys",
    "Sue from billing said it was fine", "thanks Sue", "Tell Sue I will sue", "I'm ready to Sue.",
    "Sue you? Absolutely I will.", "I have power of attorney for my father.", "lasting power of atorney",
    "the attorney general", "Is the shop near the food court?", "tennis courts", "the court reporter",
    "court shoes", "see you in court", "court-ordered", "Expect legal-actions.", "legal\n   action",
    "taking legal action", "legal - action", "legal--action", "legal action legal action legal action",
    "My lawyer says we will sue, see you in court.", "solicitor solicter solicitors solicited solicitation",
    "lawsuit lawsuits lawsuite lawsiut lawsut", "atorney attorney attorny attroney attorneys' attorney\u2019s",
    "\u017fue", "SUİNG", "\u017folicitor", "\u212a court", "the cour\u0301t", "café naïve größe GRÖSSE x-ray X-RAY don't don\u2019t",
    "我要起诉你 lawsuit 律师 solicitor", "\uff53\uff4f\uff4c\uff49\uff43\uff49\uff54\uff4f\uff52", "🙂 sue 🙂 solicter 🙂", "sue\u2019s", "o'sue", "-sue", "sue-",
    "summons sumons summonses setlement settlment settlements barister barrister's tribunel ombudsmen",
    "complaint complant complaints compliant", "litigaton litigations", "Solicitor SOLICTOR solicitor.",
    "I'm taking this to the small claims court", "small-claims-court", "action figure", "action camera",
    # two edits from a 9+ letter word plus a plural "s" the word lacks (three foreign letters)
    "litigatxyns", "complxynts", "barrxstyrs", "settlxmynts", "ombudsmxyns", "lawyres", "the lawyres' fees",
    "a", "I", "ok OK Ok", "aaaaaaaa", "ss", "sss solicitorss lawsuitss",
    "Summarise my last ticket. " * 200,
    ("I will sue and my solicter will write to your attorny about the lawsiut. " * 60),
    "x" * 5000, "solicitor" * 300, ("s " * 3000),
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_match_the_reference(text):
    assert_same(text)


def test_a_token_goes_to_the_first_entry_that_takes_it():
    m = MATCHERS["exclusions"]
    # "attorney" fuzzily matches "atorneys" but its exclusion rejects it; "attorneys" then takes it
    hits = m.find_all("my atorneys called", "broad", LEXICONS["broad"])
    assert [(h.phrase, h.matched_text, h.method) for h in hits] == [("attorneys", "atorneys", "fuzzy")]
    assert _dump(hits) == _dump(reference_find_all(m, "my atorneys called", "broad", LEXICONS["broad"]))
    hits = LexiconMatcher().find_all("my solicter", "dup", ["solicitor", "Solicitor"])
    assert [(h.phrase, h.method) for h in hits] == [("solicitor", "fuzzy")]


def test_entries_is_still_the_cached_list():
    m = LexiconMatcher()
    first = m.entries("litigation", LIT)
    assert m.entries("litigation", list(LIT)) is first
    assert [e.phrase for e in first] == LIT
    m.find_all("see you in court", "litigation", LIT)
    assert m.entries("litigation", LIT) is first


def test_input_errors_are_unchanged():
    m = LexiconMatcher()
    with pytest.raises(TypeError, match="list of strings"):
        m.find_all("text", "lit", "sue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        m.find_all("text", "lit", ["sue", " "])
    with pytest.raises(ValueError, match="empty"):
        m.find_all("text", "lit", ["sue", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="text must be a string"):
        m.find_all(b"text", "lit", ["sue"])  # type: ignore[arg-type]
    assert m.find_all("I will sue", "lit", ("sue",)) == m.find_all("I will sue", "lit", ["sue"])


# --- property test: random texts from lexicon words, near misses and filler ---------------

_LEXICON_WORDS = sorted({w for ps in LEXICONS.values() for p in ps for w in re.findall(r"[\w'\u2019]+", p)}
                        | {"sues", "sued", "suing", "sueing", "lawsuits", "solicitors'", "attorney's", "courts",
                           "actions", "legal-action", "legal-actions", "power of attorney", "food court",
                           "attorney general", "court shoes", "action figure", "Sue from billing", "thanks Sue"})
_FILLER = ["the", "my", "you", "your", "I", "will", "to", "from", "in", "and", "said", "Summarise", "last",
           "ticket", "refund", "order", "billing", "solicited", "solicitation", "pursue", "issue", "suit",
           "courteous", "legally", "attorneyship", "lawsuitless", "summary", "soliciting", "Hi", "thanks", "spoke",
           "with", "we", "ready", "power", "of", "food", "tennis", "general", "reporter", "figure", "sss", "ok"]
_SEPARATORS = [" ", " ", " ", "  ", "\n", "-", "--", " - ", ", ", ". ", "! ", "? ", "'", "\u2019", "\u2019s ", "'s ",
               "\t", ": ", "; ", "(", ") ", "\"", "\u201c", "/", "_", "0", "é", "—"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _edit(draw: st.DrawFn, w: str) -> str:
    if len(w) < 2:
        return w
    i = draw(st.integers(0, len(w) - 1))
    kind = draw(st.sampled_from(["drop", "swap", "replace", "insert", "double"]))
    c = draw(st.sampled_from(_LETTERS))
    if kind == "drop":
        w = w[:i] + w[i + 1 :]
    elif kind == "swap" and i + 1 < len(w):
        w = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    elif kind == "replace":
        w = w[:i] + c + w[i + 1 :]
    elif kind == "insert":
        w = w[:i] + c + w[i:]
    else:
        w = w[:i] + w[i] + w[i:]
    return w or "x"


@st.composite
def _near_miss(draw: st.DrawFn) -> str:
    """A lexicon word with one to three edits, sometimes with a plural ending."""
    w = draw(st.sampled_from(_LEXICON_WORDS))
    for _ in range(draw(st.integers(1, 3))):
        w = _edit(draw, w)
    return w + draw(st.sampled_from(["", "", "", "s", "'s", "es", "ss"]))


def _cased(draw: st.DrawFn, w: str) -> str:
    return draw(st.sampled_from([w, w.lower(), w.upper(), w.capitalize(), w.title()]))


@st.composite
def _texts(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.one_of(st.sampled_from(_LEXICON_WORDS), _near_miss(), st.sampled_from(_FILLER),
                                     st.text(max_size=4)), max_size=30))
    out = []
    for p in pieces:
        out.append(_cased(draw, p))
        out.append(draw(st.sampled_from(_SEPARATORS)))
    return "".join(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts())
def test_random_texts_match_the_reference(text):
    assert_same(text)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_matches_the_reference(text):
    assert_same(text)
