"""Round 11's rule change: dispute bodies and claims named without a court word open the gate.

The intent model reads only sentences with a topic term (`IntentModel.windows`); before this
round a tenancy board, a consumer forum or "a claim against the college" had none, so the
model never saw them and they scored 0 (holdout10's misses, benchmarks/signals.md "Round 11").
"""

from __future__ import annotations

import pytest

from policyengine.signals.intent import IntentModel


@pytest.mark.parametrize("text", [
    "I've now lodged an application with NCAT about the bond.",
    "I have a hearing date at the Residential Tenancies Board on 12 March.",
    "I'm going to the consumer forum next week with the bills.",
    "We have received the notice of appeal you lodged with the Tax Appeals Commission.",
    "I'll be filing a claim against the college for the job offer I lost.",
    "The Disputes Tribunal has set a date.",
])
def test_a_dispute_body_or_a_claim_against_the_recipient_is_read(text):
    assert IntentModel().windows(text), text


@pytest.mark.parametrize("text", [
    "I'd like to file a claim on my travel insurance for the lost bag.",  # an insurance claim
    "I'm filing a claim for the stolen bike. Policy number AU-5520913.",
    "Can you tell me the opening hours of the branch?",
])
def test_an_insurance_claim_is_not_read_as_a_dispute(text):
    assert not IntentModel().windows(text), text
