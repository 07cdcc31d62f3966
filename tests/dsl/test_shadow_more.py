"""`shadow` before `verify`, `limit` and `budget`: parsed, formatted, counted and evaluated, their
would-be effect on the decision (`shadow`, `shadow_effect`), never enforced."""

from __future__ import annotations

from policyengine.dsl import check_sources, compile_sources
from policyengine.dsl.formatter import format_source
from policyengine.types import Action

POLICY = """policy "s" version 1
model qwen { provider openai  base_url "http://127.0.0.1:9/v1"  cost 1 GBP per 1k tokens }
model gemma { provider openai  base_url "http://127.0.0.1:9/v2"  cost 0 }
route default -> qwen
authorize chat
shadow verify when use_case == "legal" with qwen, gemma {
  escalate when divergence > 0.25 otherwise tag "checked"
}
shadow limit requests 2 per minute per user
shadow budget 1 GBP per day per tenant {
  at 100% require approval group "finance"
}
limit requests 100 per minute per user
"""


def policy():
    return compile_sources({"s.policy": POLICY})


def test_parses_formats_and_lints_clean() -> None:
    assert [d.format() for d in check_sources({"s.policy": POLICY})] == []
    formatted = format_source(POLICY, "s.policy")
    assert format_source(formatted, "s.policy") == formatted
    for head in ("shadow verify when", "shadow limit requests 2 per minute per user", "shadow budget 1 GBP per day"):
        assert head in formatted
    assert compile_sources({"s.policy": formatted}).hash  # the canonical text means the same
    p = policy()
    assert [lm.shadow for lm in p.limits] == [True, True, False]


def test_shadow_verify_never_asks_for_verification() -> None:
    p = policy()
    d = p.evaluate(Action(action="chat", use_case="legal"))
    assert d.effect == "allow" and d.verification is None and d.shadow_effect == "allow"
    [h] = d.shadow
    assert h.kind == "verify" and h.effect is None and h.rule_id == "s.policy:6"
    assert "would ask for dual-model verification (shadow: not run)" in h.because
    div = p.evaluate(Action(action="chat", use_case="legal", signals={"divergence": 0.4}))
    assert div.effect == "allow" and not div.obligations and div.tags == []
    assert div.shadow[0].effect == "escalate" and div.shadow_effect == "escalate"
    calm = p.evaluate(Action(action="chat", use_case="legal", signals={"divergence": 0.1}))
    assert calm.shadow[0].effect is None and calm.shadow_effect == "allow"
    assert p.evaluate(Action(action="chat", use_case="code")).shadow == []


def test_shadow_limits_are_listed_and_logged_at_the_limit_not_enforced() -> None:
    p = policy()
    d = p.evaluate(Action(action="chat", actor="bob"))
    assert [(h.rule_id, h.shadow) for h in d.limits] == [("s.policy:9", True), ("s.policy:10", True),
                                                         ("s.policy:13", False)]
    over = p.evaluate_with_usage(Action(action="chat", actor="bob", prompt_tokens=100),
                                 {"s.policy:9": 2, "s.policy:10": "1 GBP"})
    assert over.effect == "allow" and over.routing.chain == ["qwen"] and not over.obligations
    assert [(h.rule_id, h.kind, h.effect) for h in over.shadow] == [("s.policy:9", "limit", "deny"),
                                                                   ("s.policy:10", "limit", "require_approval")]
    assert over.shadow_effect == "deny"
    assert over.shadow[0].source.startswith("shadow limit requests 2 per minute")
    assert "shadow: not enforced" in over.shadow[0].because
    # the enforced limit still bites
    enforced = p.evaluate_with_usage(Action(action="chat", actor="bob"), {"s.policy:13": 100})
    assert enforced.effect == "deny" and enforced.shadow == []
    under = p.evaluate_with_usage(Action(action="chat", actor="bob"), {"s.policy:9": 1})
    assert under.shadow == [] and under.shadow_effect is None
