"""The signals behind the real support-desk policy: the evaluator asks, the provider answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from policyengine.signals import precompute
from policyengine.types import Action

dsl = pytest.importorskip("policyengine.dsl")
POLICY = Path(__file__).resolve().parents[2] / "policies" / "support-desk"


@pytest.fixture(scope="module")
def policy():
    if not POLICY.is_dir():
        pytest.skip(f"{POLICY} is not there")
    return dsl.load_policy_set([str(POLICY)])


def _rules(decision) -> list[str]:
    return [" ".join(h.because) for h in decision.rules if h.kind == "escalate"]


def test_litigation_mention_escalates_and_says_which_phrase(policy, provider):
    d = policy.evaluate(Action(action="draft_response", text="Fix this or we are suing you.",
                               fields={"confidence": 0.95}), provider)
    assert d.effect == "escalate"
    assert d.signals["mentions:litigation"]["phrase"] == "sue"
    assert d.signals["mentions:litigation"]["matched_text"] == "suing"


def test_colleague_called_sue_does_not_escalate(policy, provider):
    d = policy.evaluate(Action(action="draft_response", text="Sue from your team was lovely, thank you so much!",
                               fields={"confidence": 0.95}), provider)
    assert d.effect == "allow", d.rules
    assert d.signals["mentions:litigation"] is None


def test_sarcastic_customer_escalates_on_sentiment(policy, provider):
    d = policy.evaluate(Action(action="draft_response",
                               text="Oh brilliant, charged twice again. Just what I needed.",
                               fields={"confidence": 0.95}), provider)
    assert d.effect == "escalate"
    assert d.signals["sentiment"] < 0.3


def test_low_logprob_confidence_escalates(policy, provider):
    choice = {"logprobs": {"content": [{"token": "x", "logprob": -1.2}, {"token": "y", "logprob": -0.9}]}}
    d = policy.evaluate(Action(action="draft_response", text="What are your opening hours?",
                               fields={"choice": choice}), provider)
    assert d.effect == "escalate"
    assert d.signals["confidence"] < 0.7


async def test_precompute_then_evaluate_without_the_provider(policy, provider):
    action = Action(action="draft_response", text="My solicitor will be in touch.", fields={"confidence": 0.9})
    needed = policy.signals_needed(action)
    assert {"sentiment", "mentions:litigation"} <= needed
    action.signals.update(await precompute(provider, action, needed, lexicons=policy.lexicons))
    d = policy.evaluate(action)  # no provider: everything was pre-computed
    assert d.effect == "escalate"
    assert d.signals["mentions:litigation"]["phrase"] == "solicitor"
