"""`policyengine dry-run` with a shadow rule: the would-be effect is reported, nothing enforced changes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from policyengine.cli import app

from .conftest import LoggedSet

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_shadow_threshold_is_reported_not_enforced(logged: LoggedSet, policy_copy: Path) -> None:
    """The v2 threshold (> 50 GBP) added to v1 as a shadow rule: replayed decisions do not change,
    and the report says which logged refunds the rule would have held."""
    p = policy_copy / "support.policy"
    line = len(p.read_text().splitlines()) + 2
    p.write_text(p.read_text() + '\nshadow require approval for refund when amount > 50 GBP {\n'
                 '  reviewers group "refunds"\n}\n')
    res = runner.invoke(app, ["dry-run", "--policy", str(policy_copy), "--against", logged.url, "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["replayed"] == 19 and data["changed"] == 0  # the enforced decisions are the logged ones
    [rule] = data["shadow_rules"]
    assert rule["rule"].startswith("require_approval: shadow require approval for refund when amount > 50 GBP")
    assert rule["rule"].endswith(f"support.policy:{line})") and rule["count"] == 7
    assert {(t["old"], t["new"]): t["count"] for t in data["shadow_effects"]} == {
        ("allow", "require_approval"): 4, ("require_approval", "require_approval"): 2, ("escalate", "escalate"): 1}
    text = runner.invoke(app, ["dry-run", "--policy", str(policy_copy), "--against", logged.url])
    assert text.exit_code == 0, text.output
    assert "shadow rules (not enforced)" in text.output and "0 of 19 decisions would change" in text.output
    md = runner.invoke(app, ["dry-run", "--policy", str(policy_copy), "--against", logged.url, "--format", "markdown"])
    assert "### Shadow rules (not enforced)" in md.output and "| allow | require_approval | 4 |" in md.output


def test_policy_tests_expect_the_shadow_effect(policy_copy: Path) -> None:
    """`expect: {shadow_effect: ...}` in a .tests.yaml, and a shadow rule counts as covered by its tests."""
    p = policy_copy / "support.policy"
    p.write_text(p.read_text() + '\nshadow require approval for refund when amount > 50 GBP {\n'
                 '  reviewers group "refunds"\n}\n')
    (policy_copy / "shadow.tests.yaml").write_text(
        "defaults:\n  tenant: acme\n  signals: {sentiment: 0.8, confidence: 0.95}\n"
        "tests:\n"
        "  - name: a 75 GBP refund runs, the shadow gate would hold it\n"
        '    given: {action: refund, fields: {amount: "75 GBP"}}\n'
        "    expect: {effect: allow, shadow_effect: require_approval}\n"
        "  - name: a 20 GBP refund is under both thresholds\n"
        '    given: {action: refund, fields: {amount: "20 GBP"}}\n'
        "    expect: {effect: allow, shadow_effect: none}\n"
        "  - name: a wrong expectation fails\n"
        '    given: {action: refund, fields: {amount: "20 GBP"}}\n'
        "    expect: {shadow_effect: deny}\n")
    res = runner.invoke(app, ["test", str(policy_copy), "--format", "json"])
    data = json.loads(res.output)
    cases = {c["name"]: c for s in data["sets"] for c in s["cases"]}
    assert cases["a 75 GBP refund runs, the shadow gate would hold it"]["status"] == "passed"
    assert cases["a 20 GBP refund is under both thresholds"]["status"] == "passed"
    wrong = cases["a wrong expectation fails"]
    assert wrong["status"] == "failed" and wrong["mismatches"][0]["check"] == "shadow effect"
    [shadow_rule] = [r for s in data["sets"] for r in s["rules"] if r["text"].startswith("shadow")]
    assert shadow_rule["tests"] == 2  # the 75 GBP case here and the 150 GBP one of support.tests.yaml


def test_shadow_limit_changes_no_replayed_decision_promoting_it_does(logged: LoggedSet, policy_copy: Path) -> None:
    """A shadow limit enforces nothing, so adding one to the replayed policy changes no decision;
    deleting `shadow` (promotion) adds a limit to every chat the log holds."""
    p = policy_copy / "support.policy"
    base = p.read_text()
    p.write_text(base + "\nshadow limit requests 10 per minute per user\n")
    res = runner.invoke(app, ["dry-run", "--policy", str(policy_copy), "--against", logged.url, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["changed"] == 0
    p.write_text(base + "\nlimit requests 10 per minute per user\n")
    res = runner.invoke(app, ["dry-run", "--policy", str(policy_copy), "--against", logged.url, "--format", "json"])
    data = json.loads(res.output)
    assert data["changed"] > 0 and "requests 10 per minute per user" in res.output
