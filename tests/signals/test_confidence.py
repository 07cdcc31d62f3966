"""Confidence from fields, logprobs (OpenAI / vLLM shapes) and agreement."""

from __future__ import annotations

import math

import pytest

from policyengine.signals import confidence_from_fields, confidence_from_logprobs, parse_confidence

# What vLLM / OpenAI return for chat completions with logprobs=true
VLLM_CHOICE = {
    "index": 0,
    "message": {"role": "assistant", "content": "Yes."},
    "logprobs": {"content": [
        {"token": "Yes", "logprob": -0.01, "bytes": [89, 101, 115], "top_logprobs": []},
        {"token": ".", "logprob": -0.5, "bytes": [46], "top_logprobs": []},
    ]},
    "finish_reason": "stop",
}


def test_chat_logprobs_geometric_mean():
    assert confidence_from_logprobs(VLLM_CHOICE) == pytest.approx(math.exp((-0.01 - 0.5) / 2), abs=1e-4)


def test_legacy_completion_logprobs():
    assert confidence_from_logprobs({"logprobs": {"token_logprobs": [None, -0.1, -0.1]}}) == pytest.approx(
        math.exp(-0.1), abs=1e-4)


@pytest.mark.parametrize("choice", [None, {}, {"logprobs": None}, {"logprobs": {"content": []}}, "x"])
def test_no_logprobs_is_none(choice):
    assert confidence_from_logprobs(choice) is None


def test_fields_lookup_order():
    assert confidence_from_fields({"confidence": 0.4, "logprobs": [-0.0]}) == 0.4
    assert confidence_from_fields({"model_confidence": "85%"}) == 0.85
    assert confidence_from_fields({"logprobs": [-0.2, -0.2]}) == pytest.approx(math.exp(-0.2), abs=1e-4)
    assert confidence_from_fields({"choice": VLLM_CHOICE}) == confidence_from_logprobs(VLLM_CHOICE)
    assert confidence_from_fields({"response": {"choices": [VLLM_CHOICE]}}) == confidence_from_logprobs(VLLM_CHOICE)
    assert confidence_from_fields({"divergence": 0.1}) == 0.9
    assert confidence_from_fields({"amount": "150 GBP"}) is None


@pytest.mark.parametrize(("value", "out"), [(0.7, 0.7), ("0.7", 0.7), ("70%", 0.7), (70, 0.7), (1, 1.0), (0, 0.0)])
def test_parse_confidence(value, out):
    assert parse_confidence(value) == pytest.approx(out)


@pytest.mark.parametrize("value", ["high", -0.1, 140, float("nan"), True, None])
def test_bad_confidence_is_a_clear_error(value):
    with pytest.raises(ValueError, match="confidence"):
        parse_confidence(value)
