"""`policyengine classify-error`: test classification rules from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from policyengine.cli import app

runner = CliRunner()


def test_classify_error_command(tmp_path):
    body = tmp_path / "e.json"
    body.write_text(json.dumps({"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
                                         "Given: 4000 `inputs` tokens and 512 `max_new_tokens`",
                                "error_type": "validation"}))
    r = runner.invoke(app, ["classify-error", str(body), "--status", "422", "--provider", "tgi", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert (got["error_class"], got["reason"]) == ("failover", "context_length_exceeded")
    r = runner.invoke(app, ["classify-error", str(body), "--status", "429", "-H", "Retry-After: 7"])
    assert r.exit_code == 0 and "retry_after=7s" in r.output


def test_classify_error_with_user_rules_and_bad_input(tmp_path):
    body = tmp_path / "e.json"
    body.write_text('{"error": "node draining"}')
    rules = tmp_path / "r.yaml"
    rules.write_text("- {status: [503], message: draining, class: failover, reason: draining}\n")
    r = runner.invoke(app, ["classify-error", str(body), "--status", "503", "--rules", str(rules)])
    assert r.exit_code == 0 and "failover" in r.output and "draining" in r.output
    rules.write_text("- {class: maybe, reason: x}\n")
    r = runner.invoke(app, ["classify-error", str(body), "--rules", str(rules)])
    assert r.exit_code == 2
    r = runner.invoke(app, ["classify-error", str(tmp_path / "missing.json")])
    assert r.exit_code == 2
