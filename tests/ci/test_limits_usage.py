"""`policyengine test` with `usage:`: a case sets how far limits are used; bad references are errors."""

from __future__ import annotations

from pathlib import Path

from policyengine.ci.runner import run_tests

POLICY = '''policy "u" version 1
model paid { provider openai base_url env("P") cost 1 GBP per 1k tokens }
model free { provider vllm base_url env("F") cost 0 }
route default -> paid fallback [free]
authorize chat
budget 5 GBP per day per tenant { at 100% prefer self_hosted }
limit requests 10 per minute per user
'''


def _run(tmp_path: Path, cases: str):
    (tmp_path / "u.policy").write_text(POLICY)
    (tmp_path / "u.tests.yaml").write_text("defaults: {tenant: acme, action: chat}\ntests:\n" + cases)
    return run_tests(tmp_path).sets[0].cases


def test_usage_reroutes_refuses_and_reports_bad_references(tmp_path: Path) -> None:
    cases = _run(tmp_path, '''
  - name: at the budget
    given: {prompt_tokens: 100}
    usage: {"budget 5 GBP": "5 GBP"}
    expect: {chain: [free]}
  - name: by line, at the rate limit
    given: {}
    usage: {"7": 10}
    expect: {effect: deny, rules: ["limit requests 10"]}
  - name: unknown limit
    given: {}
    usage: {"budget 9 EUR": "1 EUR"}
    expect: {effect: allow}
  - name: wrong currency
    given: {}
    usage: {"u.policy:6": "1 EUR"}
    expect: {effect: allow}
''')
    assert [c.status for c in cases] == ["passed", "passed", "error", "error"], [c.error for c in cases]
    assert "no single limit matches" in (cases[2].error or "")
    assert "in EUR, the budget in GBP" in (cases[3].error or "")
