"""Format invariants and commitment slots for divergence, on texts written for these tests."""

from __future__ import annotations

import pytest

from policyengine.signals.commitments import commitment_conflicts
from policyengine.signals.formats import canonical


@pytest.mark.parametrize(("a", "b"), [
    ("Return it to 9 Quay St, Hull.", "Return it to 9 Quay Street, Hull."),
    ("Our depot is on Mill Rd.", "Our depot is on Mill Road."),
    ("Ring +44 161 496 0000.", "Ring 0161 496 0000."),
    ("Ring +44 (0)161 496 0000.", "Ring 0161 496 0000."),
    ("Call +1 (415) 555-0199.", "Call 415 555-0199."),
    ("Your usage was 23,456 units.", "Your usage was 23456 units."),
])
def test_one_value_in_two_formats_is_one_spelling(a, b):
    assert canonical(a) == canonical(b)


def test_no_dot_before_a_number_is_the_word_number_and_other_text_is_unchanged():
    assert canonical("The key is with the neighbour at no. 7.") == "The key is with the neighbour at number 7."
    for text in ("No. We can't do that.", "St Ives is lovely", "I'll stop by the st. later", "£1,250.00"):
        assert canonical(text) in (text, "£1250.00")


def test_a_fraction_discount_is_a_percentage():
    assert canonical("You get one fifth off.") == "You get 20% off."


@pytest.mark.parametrize(("a", "b", "kind"), [
    ("Your new card will arrive by post.", "Your new card will arrive by text message.", "channel"),
    ("Rewards are paid monthly.", "Rewards are paid once a year.", "period"),
    ("We can upgrade your broadband straight away.", "We can upgrade your broadband when your contract ends.",
     "timing"),
    ("We'll collect the old sofa when we deliver.", "You'll need to arrange collection of the old sofa yourself.",
     "agent"),
    ("You pay €30 today, then €10 a week.", "You pay €10 today, then €30 a week.", "amounts"),
    ("We'll refund the $40 in full.", "We'll refund $40 minus a $5 handling fee.", "amounts"),
])
def test_different_commitments_conflict(a, b, kind):
    assert kind in [k for k, _ in commitment_conflicts(a, b)]


@pytest.mark.parametrize(("a", "b"), [
    ("Your new card will arrive by post.", "We'll post your new card to you; it should arrive in a few days."),
    ("Rewards are paid monthly.", "You'll get your rewards every month."),
    ("We'll refund the $40.", "We'll refund the $40 to your card."),
    ("You pay €30 today, then €10 a week.", "It's €30 today and €10 a week after that."),
    ("We'll collect the old sofa.", "We'll take the old sofa away for you."),
])
def test_the_same_commitment_in_other_words_does_not(a, b):
    assert commitment_conflicts(a, b) == []


def test_divergence_sees_the_formats_as_equal(scorer):
    r = scorer.score("Post it to 3 Kings Rd, Leeds LS1 4AB.", "Please post it to 3 Kings Road, Leeds LS1 4AB.")
    assert r.aligned, r.reasons
    r = scorer.score("Call us on +44 113 496 0123.", "Call us on 0113 496 0123.")
    assert r.aligned, r.reasons
