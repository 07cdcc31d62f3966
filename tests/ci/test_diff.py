"""`policyengine diff OLD NEW`: rules added / removed / changed and whose treatment may change."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyengine.ci.diff import diff_sets
from policyengine.ci.sources import read_sources
from policyengine.cli import app

from .conftest import V1, V2

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
BASE = (V1 / "support.policy").read_text()


def _diff(new_text: str, old_text: str = BASE):
    return diff_sets("old", {"support.policy": old_text}, "new", {"support.policy": new_text})


def test_threshold_change_is_one_changed_rule_affecting_refunds() -> None:
    r = diff_sets(str(V1), read_sources(str(V1)), str(V2), read_sources(str(V2)))
    assert [(c.kind, c.status) for c in r.rules] == [("require_approval", "changed")]
    assert r.rules[0].details == ["when: amount > 100 GBP → amount > 50 GBP"]
    assert r.unchanged == 12 and r.moved == 0
    assert [(i.target, i.change) for i in r.impacts] == [
        ("action refund", "require approval rule changed: when: amount > 100 GBP → amount > 50 GBP")]


def test_identical_sets_and_moved_rules() -> None:
    assert not _diff(BASE).changed
    lines = BASE.splitlines()
    moved = "\n".join([lines[0], "deny delete_account", *[ln for ln in lines[1:] if ln != "deny delete_account"]])
    r = _diff(moved)
    # every rule keeps its text; deny delete_account and the 8 rules it now precedes changed line
    assert not r.rules and r.unchanged == 13 and r.moved == 9


def test_added_removed_and_route_changes() -> None:
    new = (BASE.replace("deny delete_account\n", "")
           .replace('route when use_case == "code"             -> qwen-72b',
                    'route when use_case == "code"             -> kimi-large fallback [qwen-72b]')
           + 'deny send_email when fields.to_domain == "press.example.com"\n')
    r = _diff(new)
    by = {(c.kind, c.status): c for c in r.rules}
    assert by[("deny", "removed")].old == "deny delete_account"
    assert by[("deny", "added")].new == 'deny send_email when fields.to_domain == "press.example.com"'
    route = by[("route", "changed")]
    assert route.details == ["chain: qwen-72b > gemma-27b > kimi-large > bedrock-llama → kimi-large > qwen-72b"]
    targets = {i.target for i in r.impacts}
    assert {"action delete_account", "action send_email", 'model calls when use_case == "code"'} <= targets


def test_default_fallback_change_reaches_inheriting_routes() -> None:
    new = BASE.replace("fallback [gemma-27b, kimi-large, bedrock-llama]", "fallback [gemma-27b, bedrock-llama]")
    r = _diff(new)
    assert [(c.kind, c.status) for c in r.rules] == [("route", "changed")]
    impacted = {i.target for i in r.impacts}
    # routes without their own fallback inherit the default's: their chains change too
    assert 'model calls when use_case == "code"' in impacted
    assert 'model calls when tenant.tier == "enterprise"' in impacted


def test_model_and_lexicon_changes_name_the_rules_that_use_them() -> None:
    new = (BASE.replace('base_url env("GEMMA_URL") cost 0', 'base_url env("GEMMA2_URL") cost 0')
           .replace('"court"]', '"court", "tribunal"]'))
    r = _diff(new)
    assert [(m.name, m.status) for m in r.models] == [("gemma-27b", "changed")]
    assert r.models[0].details == ['base_url: env("GEMMA_URL") → env("GEMMA2_URL")']
    assert [(x.name, x.details) for x in r.lexicons] == [("litigation", ['+ "tribunal"'])]
    changes = [(i.target, i.change) for i in r.impacts]
    assert any(t == "model calls (default route)" and "gemma-27b" in c for t, c in changes)
    assert any("verify" not in t and "mentions lexicon litigation" in c for t, c in changes)
    assert not r.rules


def test_escalation_threshold_pairs_by_shape() -> None:
    r = _diff(BASE.replace("sentiment < 0.3", "sentiment < 0.25"))
    assert [(c.kind, c.status, c.details) for c in r.rules] == [
        ("escalate", "changed", ["when: sentiment < 0.3 → sentiment < 0.25"])]
    assert r.impacts[0].target.startswith("every action")


def test_cli_formats_and_exit_code(tmp_path: Path) -> None:
    res = runner.invoke(app, ["diff", str(V1), str(V2)])
    assert res.exit_code == 0, res.output
    assert "1 changed" in res.output and "amount > 100 GBP → amount > 50 GBP" in res.output
    assert "action refund" in res.output
    assert runner.invoke(app, ["diff", str(V1), str(V2), "--exit-code"]).exit_code == 1
    assert runner.invoke(app, ["diff", str(V1), str(V1), "--exit-code"]).exit_code == 0
    data = json.loads(runner.invoke(app, ["diff", str(V1), str(V2), "--format", "json"]).output)
    assert data["changed"] is True and data["rules"][0]["status"] == "changed"
    md = runner.invoke(app, ["diff", str(V1), str(V2), "--format", "markdown"]).output
    assert "```diff" in md and "- require approval for refund when amount > 100 GBP" in md
    assert "| action refund |" in md
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.policy").write_text("authorize refund when\n")
    res = runner.invoke(app, ["diff", str(V1), str(bad)])
    assert res.exit_code == 2 and "x.policy:" in res.output
    assert runner.invoke(app, ["diff", str(V1), str(tmp_path / "missing")]).exit_code == 2


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_diff_against_a_git_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    shutil.copy(V1 / "support.policy", repo / "policies" / "support.policy")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo,
                       check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "v1")
    shutil.copy(V2 / "support.policy", repo / "policies" / "support.policy")
    monkeypatch.chdir(repo)
    res = runner.invoke(app, ["diff", "HEAD:policies", "policies", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["old"]["files"] == ["HEAD:policies/support.policy"]
    assert [c["details"] for c in data["rules"]] == [["when: amount > 100 GBP → amount > 50 GBP"]]
    # dry-run can take the baseline from git too
    res = runner.invoke(app, ["dry-run", "--policy", "policies", "--baseline", "HEAD:policies",
                              "--actions", str(_one_refund(tmp_path)), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["changed"] == 1


def _one_refund(tmp: Path) -> Path:
    f = tmp / "one.jsonl"
    f.write_text('{"id": "r75", "action": "refund", "fields": {"amount": "75 GBP"}, '
                 '"signals": {"sentiment": 0.9, "confidence": 0.9}}\n')
    return f


def test_adding_a_judge_is_a_changed_verify_rule() -> None:
    old_head = 'verify when use_case in ["legal", "medical"] with qwen-72b, gemma-27b {'
    assert old_head in BASE
    r = _diff(BASE.replace(old_head, old_head[:-2] + " judge kimi-large timeout 20s {"))
    [c] = r.rules
    assert (c.kind, c.status) == ("verify", "changed")
    assert c.details == ["judge: (none) → kimi-large timeout 20s"]
