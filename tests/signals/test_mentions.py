"""Lexicon mentions: boundaries, inflections, phrases, names, false friends, typos."""

from __future__ import annotations

import pytest

from policyengine.signals import LexiconMatcher

LIT = ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]


@pytest.fixture(scope="module")
def m() -> LexiconMatcher:
    return LexiconMatcher()


@pytest.mark.parametrize(
    ("text", "phrase", "matched"),
    [("I will sue you.", "sue", "sue"),
     ("We are suing your company.", "sue", "suing"),
     ("She sued them last year.", "sue", "sued"),
     ("we are sueing you", "sue", "sueing"),
     ("I WILL SUE", "sue", "SUE"),
     ("I'm ready to Sue.", "sue", "Sue"),
     ("my solicitor will be in touch", "solicitor", "solicitor"),
     ("My solicitors' letter is attached", "solicitor", "solicitors'"),
     ("We are taking legal action.", "legal action", "legal action"),
     ("Expect legal-actions.", "legal action", "legal-actions"),
     ("legal\n   action", "legal action", "legal\n   action"),
     ("See you in court", "court", "court"),
     ("the court-ordered payment", "court", "court"),
     ("two lawsuits pending", "lawsuit", "lawsuits"),
     ("my solicter has the papers", "solicitor", "solicter"),
     ("i will get an atorney", "attorney", "atorney")],
)
def test_mentions(m, text, phrase, matched):
    hit = m.first(text, "litigation", LIT)
    assert hit is not None, text
    assert (hit.phrase, hit.matched_text, hit.lexicon) == (phrase, matched, "litigation")
    assert text[hit.start : hit.end] == matched


@pytest.mark.parametrize(
    "text",
    ["Sue from your team said the refund would be processed.",
     "Thanks Sue, all sorted.",
     "I spoke with Sue on Monday.",
     "Please pass this on to Sue in billing.",
     "SUE FROM BILLING RANG ME",
     "Sue and I have been customers for years.",
     "My new suit is too small.",
     "I'd like to pursue a refund.",
     "There's an issue with my invoice.",
     "I have power of attorney for my father.",
     "Is the shop near the food court?",
     "The staff were courteous.",
     "Please action my request.",
     "The payment was solicited by phone.",
     "Is it legal to keep my deposit?"],
)
def test_not_mentions(m, text):
    assert m.first(text, "litigation", LIT) is None, m.first(text, "litigation", LIT)


def test_sue_as_verb_with_object_even_when_capitalised(m):
    assert m.first("Sue you? Absolutely I will.", "litigation", LIT) is not None
    assert [h.start for h in m.find_all("Tell Sue I will sue", "litigation", LIT)] == [16]


def test_first_match_is_the_earliest_and_all_matches_are_listed(m):
    hits = m.find_all("My lawyer says we will sue, see you in court.", "litigation", [*LIT, "lawyer"])
    assert [h.phrase for h in hits] == ["lawyer", "sue", "court"]
    assert m.first("My lawyer says we will sue", "litigation", [*LIT, "lawyer"]).phrase == "lawyer"


def test_fuzzy_can_be_turned_off(m):
    assert LexiconMatcher(fuzzy=False).first("my solicter", "litigation", LIT) is None


def test_extra_exclusions():
    matcher = LexiconMatcher(exclusions={"court": [r"\bcourt\s+reporter\b"]})
    assert matcher.first("the court reporter", "l", ["court"]) is None
    assert matcher.first("see you in court", "l", ["court"]) is not None


def test_bad_lexicon_input_is_a_clear_error(m):
    with pytest.raises(ValueError, match="empty"):
        m.first("text", "lit", ["sue", " "])
    with pytest.raises(TypeError, match="list of strings"):
        m.first("text", "lit", "sue")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a string"):
        m.first(None, "lit", ["sue"])  # type: ignore[arg-type]
