"""Issue #16's cases, on texts written for these tests (none is in the labelled set's holdout,
except the issue's own refund message)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("text", [
    "Dear customer, your refund is on its way.",  # the example: 0.105 before, held by `sentiment < 0.3`
    "Your new meter has been booked for Tuesday morning.",
    "We've refunded the £8.50 delivery charge to your card.",
    "Hi Priya, your account has been updated with the new address.",
])
def test_routine_outbound_text_is_neutral(provider, text):
    assert 0.3 <= provider.sentiment(text) <= 0.7


@pytest.mark.parametrize("text", [
    "Bit of a nuisance that the charger was missing from the box. Could you post one?",
    "The login page is a little slow this morning, any known issue?",
])
def test_mild_annoyance_is_above_the_escalation_threshold(provider, text):
    assert provider.sentiment(text) >= 0.3


@pytest.mark.parametrize("text", [
    "I'm terrified, the bailiffs' letter says they're coming on Friday and I have nothing.",
    "I've been crying all day, my son's school trip money went out twice and I can't cover it.",
])
def test_distress_without_abuse_is_below_it(provider, text):
    assert provider.sentiment(text) < 0.3


@pytest.mark.parametrize(("a", "b", "reason"), [
    ("We'll send the refund to your PayPal account.", "We'll send the refund to your bank account.",
     "different name: 'paypal' vs 'bank'"),
    ("The £20 credit is on the account ending 3390.", "The £20 credit is on the account ending 3309.",
     "identifiers differ: 3390 vs 3309"),
    ("Please call our lost property office.", "Please call our complaints office.",
     "different: 'lost property' vs 'complaints'"),
    ("We'll cancel the order.", "We'll pause the order.", "different: 'cancel' vs 'pause'"),
    ("Delivery on this order is free.", "Delivery on this order costs £3.99.", None),
])
def test_different_who_where_which_what_diverges(scorer, a, b, reason):
    r = scorer.score(a, b)
    assert not r.aligned, r
    if reason:
        assert reason in r.reasons


@pytest.mark.parametrize(("a", "b"), [
    ("Your new router will arrive on Friday.",
     "Your new router will arrive on Friday. It comes with a quick-start guide, and the engineer doesn't need to "
     "visit: plug it in and the lights turn green within ten minutes."),
    ("The voucher expires on 31/01/2026.", "The voucher is valid until 31 January 2026."),
    ("Your parcel has been sent.", "We've posted your parcel."),
])
def test_length_detail_and_format_alone_stay_aligned(scorer, a, b):
    r = scorer.score(a, b)
    assert r.aligned, r
