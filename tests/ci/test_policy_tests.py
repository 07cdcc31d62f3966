"""`policyengine test`: expected vs actual side by side, rule coverage, --min-coverage, formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyengine.ci.runner import run_tests
from policyengine.ci.spec import SpecError, load_test_file
from policyengine.cli import app

from .conftest import V1

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_example_tests_pass_and_coverage_names_the_unexercised_rule() -> None:
    report = run_tests(V1)
    assert report.count("failed") == 0 and report.count("error") == 0
    assert report.count("passed") == 14
    uncovered = [r for s in report.sets for r in s.rules if not r.covered]
    # exactly one rule has no test: the approval gate for email / database / legal / press
    assert [r.text for r in uncovered] == [
        "require approval for send_email, modify_database, escalate_legal, respond_press"]
    assert uncovered[0].location.endswith("support.policy:19")
    assert report.covered_rules == 12 and report.total_rules == 13


def test_cli_names_uncovered_rule_and_min_coverage_fails() -> None:
    ok = runner.invoke(app, ["test", str(V1)])
    assert ok.exit_code == 0, ok.output
    assert "support.policy:19" in ok.output
    assert "require approval for send_email, modify_database, escalate_legal, respond_press" in ok.output
    assert "12/13 rules (92.3%)" in ok.output
    low = runner.invoke(app, ["test", str(V1), "--min-coverage", "95"])
    assert low.exit_code == 1
    assert "below --min-coverage 95%" in low.output
    assert runner.invoke(app, ["test", str(V1), "--min-coverage", "90"]).exit_code == 0


def _copy_with_tests(tmp_path: Path, tests_yaml: str) -> Path:
    dest = tmp_path / "policies"
    dest.mkdir()
    shutil.copy(V1 / "support.policy", dest / "support.policy")
    (dest / "support.tests.yaml").write_text(tests_yaml)
    return dest


FAILING = """
tests:
  - name: refund of 150 GBP (wrongly) expected to run alone
    given: {action: refund, fields: {amount: "150 GBP"}, signals: {sentiment: 0.9, confidence: 0.9}}
    expect:
      effect: allow
      obligations: []
  - name: code (wrongly) expected on gemma
    given: {action: chat, use_case: code, text: "x", signals: {sentiment: 0.9, confidence: 0.9}}
    expect: {chain: [gemma-27b, qwen-72b], rules: ["route when use_case == \\"summarisation\\""]}
"""


def test_failures_show_expected_and_actual_side_by_side(tmp_path: Path) -> None:
    pol = _copy_with_tests(tmp_path, FAILING)
    res = runner.invoke(app, ["test", str(pol)])
    assert res.exit_code == 1
    out = res.output
    assert "check" in out and "expected" in out and "actual" in out  # the table header
    lines = out.splitlines()
    # each mismatch is one row: check | expected | actual
    effect_row = next(ln for ln in lines if ln.strip().startswith("effect "))
    assert effect_row.split() == ["effect", "allow", "require_approval"]
    chain_row = next(ln for ln in lines if ln.strip().startswith("chain "))
    assert "gemma-27b > qwen-72b" in chain_row and "qwen-72b > gemma-27b > kimi-large > bedrock-llama" in chain_row
    assert chain_row.index("gemma-27b > qwen-72b") < chain_row.index("qwen-72b > gemma-27b > kimi")
    ob_row = next(ln for ln in lines if ln.strip().startswith("obligations "))
    assert "(none)" in ob_row and "group=refunds" in ob_row
    assert any(ln.strip().startswith("rule fired ") for ln in lines)
    assert "0 passed, 2 failed" in out


def test_json_format_carries_the_mismatches(tmp_path: Path) -> None:
    pol = _copy_with_tests(tmp_path, FAILING)
    res = runner.invoke(app, ["test", str(pol), "--format", "json"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    case = data["sets"][0]["cases"][0]
    assert case["status"] == "failed"
    assert {"check": "effect", "expected": "allow", "actual": "require_approval"} in case["mismatches"]
    assert data["summary"]["failed"] == 2 and data["summary"]["ok"] is False
    assert any(not r["covered"] for r in data["sets"][0]["rules"])


def test_bad_test_file_is_a_located_error(tmp_path: Path) -> None:
    pol = _copy_with_tests(tmp_path, """
tests:
  - name: ok
    given: {action: refund}
    expect: {effect: allow}
  - name: typo in the action
    given: {action: refund, feilds: {amount: "1 GBP"}}
    expect: {effect: allow}
""")
    with pytest.raises(SpecError) as e:
        load_test_file(pol / "support.tests.yaml")
    assert e.value.line == 7 and "feilds" in e.value.message
    res = runner.invoke(app, ["test", str(pol)])
    assert res.exit_code == 2
    assert "support.tests.yaml:7" in res.output and "feilds" in res.output


def test_unknown_expectation_key_and_bad_duration(tmp_path: Path) -> None:
    p = tmp_path / "x.tests.yaml"
    p.write_text("tests:\n  - name: a\n    given: {action: refund}\n    expect: {efect: allow}\n")
    with pytest.raises(SpecError, match="efect"):
        load_test_file(p)
    p.write_text("tests:\n  - name: a\n    given: {action: refund}\n"
                 "    expect: {obligations: [{timeout: soon}]}\n")
    with pytest.raises(SpecError, match="not a duration"):
        load_test_file(p)


def test_policy_that_does_not_load_is_reported(tmp_path: Path) -> None:
    pol = _copy_with_tests(tmp_path, "tests:\n  - name: a\n    given: {action: refund}\n    expect: {effect: allow}\n")
    (pol / "support.policy").write_text('policy "x"\nauthorize refund when\n')
    res = runner.invoke(app, ["test", str(pol)])
    assert res.exit_code == 2
    assert "support.policy:" in res.output


def test_no_test_files_is_an_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["test", str(tmp_path)])
    assert res.exit_code == 2 and "no policy test files" in res.output


def test_verify_rule_is_partial_until_both_outcomes_are_tested(tmp_path: Path) -> None:
    pol = _copy_with_tests(tmp_path, """
tests:
  - name: aligned legal answer
    given: {action: chat, use_case: legal, text: "q", signals: {divergence: 0.1, sentiment: 0.9, confidence: 0.9}}
    expect: {tags: [high-confidence]}
""")
    report = run_tests(pol)
    verify = next(r for s in report.sets for r in s.rules if r.kind == "verify")
    assert verify.covered and verify.partial == "no test with divergence above the threshold"


def test_match_and_junit_xml(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    pol = _copy_with_tests(tmp_path, FAILING)
    out = tmp_path / "junit.xml"
    res = runner.invoke(app, ["test", str(pol), "--junit-xml", str(out)])
    assert res.exit_code == 1
    root = ET.parse(out).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "2"
    failure = suite.find("testcase/failure")
    assert failure is not None and "expected allow | actual require_approval" in (failure.text or "")
    assert any(p.get("name") == "uncovered_rule" for p in suite.iter("property"))
    only = runner.invoke(app, ["test", str(pol), "-k", "GEMMA", "--format", "json"])
    data = json.loads(only.output)
    assert [c["name"] for c in data["sets"][0]["cases"]] == ["code (wrongly) expected on gemma"]


def test_every_example_policy_set_is_fully_tested() -> None:
    """The tests beside policies/ pass and exercise every rule (a guard for policy edits)."""
    report = run_tests(Path(__file__).parents[2] / "policies", min_coverage=100)
    assert not report.file_errors and all(s.error is None for s in report.sets)
    failed = [(c.file, c.name, [m.model_dump() for m in c.mismatches]) for s in report.sets for c in s.cases
              if c.status != "passed"]
    assert failed == []
    assert len(report.sets) >= 8 and report.coverage == 100.0


def test_hedge_expectations(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "policies" / "fleet-deployments"
    assert run_tests(src).count("passed") == 4
    dest = tmp_path / "fleet"
    shutil.copytree(src, dest)
    (dest / "fleet-deployments.tests.yaml").write_text(
        "tests:\n  - name: wrong hedge\n    given: {action: chat}\n"
        "    expect: {hedge_after: 1s, hedge_budget: 20%}\n")
    res = runner.invoke(app, ["test", str(dest)])
    assert res.exit_code == 1
    assert "hedge after" in res.output and "0.4s" in res.output and "hedge budget" in res.output
