"""Fact extraction and comparison: pure functions, no model."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policyengine.signals.checks import (
    Amount,
    compare_facts,
    extract_amounts,
    extract_dates,
    extract_facts,
    extract_quantities,
    extract_times,
    is_refusal,
    parse_number,
    polarity_claims,
)


def conflicts(a: str, b: str) -> list[str]:
    return [c.kind for c in compare_facts(extract_facts(a), extract_facts(b))]


@pytest.mark.parametrize(
    ("text", "value"),
    [("1,200.50", Decimal("1200.50")), ("fifty", 50), ("two hundred and fifty", 250), ("twenty-five", 25),
     ("three thousand", 3000), ("banana", None)],
)
def test_parse_number(text, value):
    assert parse_number(text) == (Decimal(value) if value is not None else None)


def test_amounts_in_every_common_form_are_the_same_amount():
    forms = ["£50", "£50.00", "50 GBP", "GBP 50", "fifty pounds", "50 quid"]
    for f in forms:
        assert extract_amounts(f"The refund is {f}.") == {Amount("GBP", Decimal(50))}, f
    assert extract_amounts("a $1.2k deposit and 30p change") == {Amount("USD", Decimal(1200)), Amount("GBP", Decimal("0.30"))}


def test_amount_difference_is_a_conflict_with_a_readable_reason():
    out = compare_facts(extract_facts("Your refund of £50 is approved."), extract_facts("Your refund of £500 is approved."))
    assert [c.reason for c in out] == ["amounts differ: £50 vs £500"]


def test_omitted_amount_is_not_a_conflict():
    assert conflicts("Your refund of £45 has been approved.", "Your refund has been approved.") == []
    assert conflicts("It costs £5 a month, plus £2 postage.", "It costs £5 a month.") == []


def test_quantities_ranges_and_doses():
    assert {str(q) for q in extract_quantities("Take 200mg twice daily for 3-5 days")} == {"200 mg", "2 times", "3-5 days"}
    assert conflicts("Take 200 mg.", "Take 400mg.") == ["quantities"]
    assert conflicts("Delivery takes 3-5 working days.", "It arrives in four business days.") == []
    assert conflicts("Take one tablet once a day.", "Take one tablet twice a day.") == ["quantities"]


def test_dates_in_different_formats_agree_and_different_dates_conflict():
    assert extract_dates("due 2025-07-01") == extract_dates("due 1 July 2025") == extract_dates("due 01/07/2025")
    assert conflicts("Payment is due on 3 March.", "Payment is due on March 3rd.") == []
    assert conflicts("The appointment is on 3 March.", "The appointment is on 13 March.") == ["dates"]
    assert conflicts("The engineer comes Monday.", "The engineer comes Wednesday.") == ["dates"]


def test_times():
    assert extract_times("at 3pm or 15:00 or 9.30am") == {"15:00", "09:30"}
    assert conflicts("Your flight departs at 7am.", "Your flight departs at 7pm.") == ["times"]


@pytest.mark.parametrize(
    ("a", "b"),
    [("Your refund has been approved.", "Your refund has not been approved."),
     ("Your claim was accepted.", "Your claim was rejected."),
     ("Yes, you are eligible.", "No, you are not eligible."),
     ("You can cancel free of charge.", "You cannot cancel."),
     ("The ticket is refundable.", "The ticket is non-refundable."),
     ("You need a visa.", "You don't need a visa."),
     ("Overtime is paid.", "Overtime is not paid."),
     ("Your data will be shared with partners.", "Your data will never be shared with partners."),
     ("The policy covers flood damage.", "The policy does not cover flood damage.")],
)
def test_polarity_and_negation_conflicts(a, b):
    assert "polarity" in conflicts(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [("You are not eligible for a refund.", "You are ineligible for a refund."),
     ("Your application has not been approved.", "We have declined your application."),
     ("We can't offer a refund after 30 days.", "Refunds aren't possible once 30 days have passed."),
     ("I can't provide legal advice.", "I'm unable to give legal advice."),
     ("The warranty covers faults but not accidental damage.", "Faults are covered; accidental damage isn't included.")],
)
def test_same_meaning_with_negation_is_not_a_conflict(a, b):
    assert conflicts(a, b) == []


def test_polarity_claims_shape():
    assert polarity_claims("The refund has not been approved.") == {"approval": {False}}
    assert polarity_claims("Legal advice is available.")["availability"] == {True}
    assert "permission" not in polarity_claims("I can't give legal advice.")  # attributive "legal"


@pytest.mark.parametrize(
    "text",
    ["I'm sorry, but I can't help with that.", "I am unable to provide medical advice.",
     "As an AI, I cannot give legal advice.", "Sorry, I can't share details about other customers.",
     "We're not able to assist with that request."],
)
def test_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    ["We can't offer a refund after 30 days.", "Refunds can't be processed on sale items.",
     "Sure, here is how to reset your password.", "You cannot cancel after dispatch."],
)
def test_business_no_is_not_a_refusal(text):
    assert not is_refusal(text)


def test_refusal_vs_compliance_conflict():
    assert conflicts("I'm sorry, I can't help with dosage questions.", "Take 10mg once a day.") == ["refusal"]


def test_repetitive_text_does_not_backtrack_catastrophically():
    # a looping model can emit "one one one ..."; this used to take over a minute
    facts = extract_facts("one " * 5000 + "x")
    assert facts.quantities == set()
