"""The model-free divergence checks added in the second round of issue #16 tuning, and the
sentiment rules that sit after the classifier. Texts written for these tests."""

from __future__ import annotations

from decimal import Decimal

import pytest

from policyengine.signals.alignment import destinations, identifier_conflict, substitutions
from policyengine.signals.checks import (
    Amount,
    compare_facts,
    extract_amounts,
    extract_dates,
    extract_facts,
)
from policyengine.signals.negation import action_conflicts, parity, parity_agrees, parity_conflicts
from policyengine.signals.sentiment import (
    MILD_FLOOR,
    OUTBOUND_FLOOR,
    REGULATOR_CAP,
    idiom_override,
    sarcasm_cue,
)


@pytest.mark.parametrize(("text", "n"), [
    ("The gym is open on bank holidays.", 0),
    ("The gym isn't open on bank holidays.", 1),
    ("The gym is closed on bank holidays.", 1),
    ("Parking is free.", 1),
    ("No problem, parking costs £2 an hour.", 0),
    ("No, we don't charge for parking.", 1),
    ("Please don't hesitate to call.", 0),
])
def test_parity_counts_negators_and_lexical_negations(text, n):
    assert parity(text) == n


@pytest.mark.parametrize(("a", "b"), [
    ("The gym is closed on bank holidays.", "We don't open the gym on bank holidays."),
    ("Parking at the clinic is free.", "We don't charge for parking at the clinic."),
    ("The form can be signed online.", "The form can be signed online, with no need to print it."),
])
def test_same_parity_paraphrases_and_negated_details_do_not_conflict(a, b):
    assert parity_conflicts(a, b) == []


@pytest.mark.parametrize(("a", "b"), [
    ("There is a fault on your line.", "There is no fault on your line."),
    ("Parking at the clinic is free.", "Parking at the clinic costs £4."),
    ("The voucher can be used online.", "The voucher can't be used online."),
])
def test_one_answer_negating_the_other_conflicts(a, b):
    assert parity_conflicts(a, b)


def test_explicit_double_negation_agrees():
    assert parity_agrees("We can't extend the deadline.", "Extending the deadline isn't something we're able to do.")


@pytest.mark.parametrize(("a", "b", "name"), [
    ("We've unblocked your card.", "We've blocked your card.", "unblocked vs blocked"),
    ("We've extended your membership by a month.", "We've ended your membership.", "extended vs ended"),
    ("We'll fit a new thermostat.", "We'll remove the thermostat.", "added vs removed"),
])
def test_opposite_actions(a, b, name):
    assert name in action_conflicts(a, b)


def test_places_named_after_a_preposition():
    assert destinations("Your glasses will be posted to your home address.") == {"home"}
    assert destinations("Collect them from our Leeds branch.") == {"store"}
    assert destinations("The refund was issued as store credit.") == {"credit"}
    assert destinations("Thanks for your patience.") == set()


def test_a_recipient_after_the_same_preposition_is_a_substitution():
    subs = substitutions("The letter was sent to your accountant.", "The letter was sent to you.")
    assert subs and subs[0].kind == "name"


def test_the_same_numbers_bound_to_other_words_conflict():
    assert identifier_conflict("Deliver to Unit 4, 12 Mill Road.", "Deliver to Unit 12, 4 Mill Road.")
    assert identifier_conflict("Unit 4, 12 Mill Road.", "12 Mill Road, Unit 4.") is None


def test_money_words_with_a_minor_unit_are_one_amount():
    assert extract_amounts("It's three pounds fifty.") == {Amount("GBP", Decimal("3.50"))}
    assert extract_amounts("twelve dollars and 25 cents") == {Amount("USD", Decimal("12.25"))}


def test_days_of_the_month_and_day_month_dates():
    a, b = extract_facts("Rent is taken on the 2nd."), extract_facts("Rent is taken on the 22nd.")
    assert any(c.kind == "dates" for c in compare_facts(a, b))
    assert not compare_facts(extract_facts("Due on the 5th."), extract_facts("Due on 5 June."))
    assert {(d.month, d.day) for d in extract_dates("Renewal is 14/09.")} == {(9, 14)}
    assert not extract_dates("Support is 24/7.")


def test_time_ranges_that_each_state_another_time_conflict():
    a, b = extract_facts("Open from 9am to 1pm."), extract_facts("Open from 1pm to 5pm.")
    assert any(c.kind == "times" for c in compare_facts(a, b))
    assert not compare_facts(extract_facts("Between 8am and noon."), extract_facts("Between 08:00 and 12:00."))


def test_sentiment_rules_after_the_classifier():
    assert idiom_override("Dear customer, your refund is on its way.", 0.1) == OUTBOUND_FLOOR
    assert idiom_override("Slightly slow app today, not a big deal.", 0.1) == MILD_FLOOR
    assert idiom_override("I'm reporting this to Ofgem.", 0.6) == REGULATOR_CAP
    assert idiom_override("Please be advised that my solicitor acts for me in this matter.", 0.1) == MILD_FLOOR
    # a notice with an ultimatum, and a downplay next to a complaint pattern, keep the classifier's score
    assert idiom_override("Please note that unless you pay within 14 days I will issue a claim.", 0.1) == 0.1
    assert idiom_override("Third time it's broken, not a big deal I suppose.", 0.1) == 0.1
    assert not sarcasm_cue("Dear customer, your invoice is ready.")
