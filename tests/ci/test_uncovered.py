"""W245: a test whose action no rule of the policy set names (decided by the default deny)."""

from __future__ import annotations

from pathlib import Path

from policyengine.ci.render.tests_report import render_github
from policyengine.ci.runner import run_tests

POLICY = """policy "shop" version 1
authorize refund when amount < 100 GBP
deny delete_account
"""

TESTS = """tests:
  - name: small refund
    given: {action: refund, fields: {amount: 5 GBP}}
    expect: {effect: allow}
  - name: typo in the action
    given:
      action: refnud
      fields: {amount: 5 GBP}
    expect: {effect: deny}
  - name: unknown actions are refused
    given: {action: launch_rockets}
    expect: {effect: deny, default_applied: true}
  - name: not yet
    given: {action: export}
    expect: {effect: allow}
    skip: export is next sprint
"""


def test_uncovered_action_is_reported_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "shop.policy").write_text(POLICY)
    tests = tmp_path / "shop.tests.yaml"
    tests.write_text(TESTS)
    report = run_tests(tmp_path)
    [s] = report.sets
    [w] = s.warnings
    assert (w.code, w.severity, w.file, w.line, w.col, w.end_col) == ("W245", "warning", str(tests), 7, 15, 21)
    assert "test 'typo in the action' names action `refnud`" in w.message
    assert w.hint.startswith("did you mean `refund`?")
    assert w.source_line == "      action: refnud"
    assert report.ok  # a finding about the tests, not a failure: the case passes (default deny)
    gh = render_github(report)
    assert f"::warning file={tests},line=7,title=W245::test 'typo in the action'" in gh


def test_every_example_test_names_a_ruled_action() -> None:
    report = run_tests(Path(__file__).parents[2] / "policies")
    assert [w.format() for s in report.sets for w in s.warnings] == []
