"""ChainDispatcher configuration: environment overrides, user classification rules, clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policyengine.dispatch import DispatchSettings, estimate_prompt_tokens
from policyengine.simulate import Fault
from policyengine.simulate.testing import USER
from policyengine.types import Routing


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("POLICYENGINE_DISPATCH_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("POLICYENGINE_DISPATCH_BREAKER__OPEN_FOR", "42")
    s = DispatchSettings()
    assert s.max_attempts == 5 and s.breaker.open_for == 42 and s.breaker.threshold == 3


@pytest.mark.parametrize("kw", [{"max_attempts": 0}, {"backoff_base": 2, "backoff_cap": 1}, {"transport": "curl"},
                                {"max_atempts": 3}])
def test_bad_settings_are_rejected(kw):
    with pytest.raises(ValidationError):
        DispatchSettings(**kw)


def test_token_estimate_is_chars_over_four():
    body = {"messages": [{"role": "user", "content": "x" * 396}], "max_tokens": 50}
    assert estimate_prompt_tokens(body) == 100  # (396 + 4 per message) / 4


async def test_user_rule_file_changes_classification(fleet, make_dispatcher, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("- name: gateway-maintenance\n  status: [400]\n  message: 'maintenance window'\n"
                     "  class: failover\n  reason: maintenance\n")
    p = await fleet.add("primary", "vllm")
    f = await fleet.add("fallback", "vllm")
    p.add_fault(Fault(kind="error", status=400, body={"error": "maintenance window in progress"}))
    d = make_dispatcher([fleet.model_spec("primary"), fleet.model_spec("fallback")], classifier_rules_file=rules)
    r = await d.complete(USER, Routing(chain=["primary", "fallback"]))
    assert r.model == "fallback" and r.attempts[0].reason == "maintenance" and len(f.seen()) == 1
