"""Shadow rules: parsed, formatted, compiled apart from the enforced rules, reported by `eval`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from policyengine.cli import app
from policyengine.dsl import compile_sources
from policyengine.dsl.formatter import format_source
from policyengine.dsl.parser import parse
from policyengine.types import Action

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

ENFORCED = """model a {
  provider openai
  base_url "http://127.0.0.1:9/v1"
}
route default -> a
authorize refund when amount <= 500 GBP
"""
SHADOWS = """shadow require approval for refund when amount > 50 GBP {
  reviewers group "ops"
}
shadow deny delete_user
shadow authorize export when tier == "gold"
shadow escalate when sentiment < 0.2
"""


def test_parse_and_format_round_trip() -> None:
    text = ENFORCED + SHADOWS
    assert format_source(text) == text
    items = parse(text).items
    assert [getattr(i, "shadow", None) for i in items[2:]] == [False, True, True, True, True]
    # promoting a shadow rule is deleting the word: the same rule, enforced
    promoted = parse(text.replace("shadow deny", "deny")).items[4]
    assert promoted == items[4].__class__(**{**items[4].__dict__, "shadow": False})


def test_shadow_rules_never_change_the_decision() -> None:
    p = compile_sources({"t.policy": ENFORCED + SHADOWS})
    base = compile_sources({"t.policy": ENFORCED})
    cases = [
        (Action(action="refund", fields={"amount": "100 GBP"}), "allow", "require_approval", ["t.policy:7"]),
        (Action(action="refund", fields={"amount": "10 GBP"}), "allow", None, []),
        (Action(action="delete_user"), "deny", "deny", ["t.policy:10"]),
        (Action(action="export", fields={"tier": "gold"}), "deny", "allow", ["t.policy:11"]),
        (Action(action="export", fields={"tier": "free"}), "deny", None, []),
        (Action(action="chat", text="hi", signals={"sentiment": 0.1}), "allow", "escalate", ["t.policy:12"]),
    ]
    for a, effect, would, ids in cases:
        d, b = p.evaluate(a), base.evaluate(a)
        assert (d.effect, d.shadow_effect, [h.rule_id for h in d.shadow]) == (effect, would, ids), a
        assert d.effect == b.effect and d.rules == b.rules and d.obligations == b.obligations
        assert d.default_applied == b.default_applied  # a shadow rule does not make its action named
    d = p.evaluate(cases[0][0])
    assert d.shadow[0].because == ["amount 100 GBP > 50 GBP"] and d.shadow[0].span.line == 7
    assert "sentiment" in p.signals_needed("refund")  # shadow conditions' signals are precomputed too


def test_eval_shows_the_would_be_effect(tmp_path) -> None:
    pol = tmp_path / "t.policy"
    pol.write_text(ENFORCED + SHADOWS)
    act = tmp_path / "a.json"
    act.write_text(json.dumps({"action": "refund", "fields": {"amount": "100 GBP"}}))
    r = runner.invoke(app, ["eval", str(pol), "--input", str(act), "--no-signals"])
    assert r.exit_code == 0, r.output
    assert "Decision: ALLOW" in r.output
    assert "Shadow rules (not enforced):" in r.output and "shadow require_approval -> would require_approval" in r.output
    assert "With shadow rules enforced: REQUIRE_APPROVAL" in r.output
    r = runner.invoke(app, ["eval", str(pol), "--input", str(act), "--no-signals", "--format", "json"])
    doc = json.loads(r.output)
    assert doc["effect"] == "allow" and doc["shadow_effect"] == "require_approval"
    assert doc["shadow"][0]["span"]["line"] == 7
    assert any("(not enforced)" in line for line in doc["explanation"])


def test_a_shadow_rule_conflicts_with_nothing_enforced() -> None:
    """`shadow deny refund` next to `authorize refund` is the point of shadow mode: no E230 / W238."""
    from policyengine.dsl import check_sources

    text = ENFORCED + 'require approval for refund when amount > 400 GBP { reviewers group "ops" }\n' \
        + "shadow deny refund\n"
    codes = {d.code for d in check_sources({"t.policy": text})}
    assert not codes & {"E230", "W238", "W231"}, codes
    assert compile_sources({"t.policy": text}).evaluate(Action(action="refund", fields={"amount": "10 GBP"})).effect \
        == "allow"
    promoted = {d.code for d in check_sources({"t.policy": text.replace("shadow deny", "deny")})}
    assert "E230" in promoted  # once enforced, the checker sees the conflict
