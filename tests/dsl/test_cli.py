"""`policyengine lint`, `fmt`, `eval` as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyengine.cli import app

from .helpers import POLICIES

runner = CliRunner()

BROKEN = """policy "mine" version 1
model qwen-72b { provider vllm base_url env("QWEN_URL") cost 0 }
model gemma-27b { provider vllm base_url env("GEMMA_URL") cost 0 }
route default -> qwen-72b fallback [gema-27b]
authorize classify_ticket
"""


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    p = tmp_path / "mine.policy"
    p.write_text(BROKEN)
    return p


def test_lint_ok_on_every_example() -> None:
    r = runner.invoke(app, ["lint", str(POLICIES)])
    assert r.exit_code == 0, r.output
    assert "ok: 14 file(s), 0 warning(s)" in r.output


def test_lint_error_text(broken: Path) -> None:
    r = runner.invoke(app, ["lint", str(broken)])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[0] == f"{broken}:4:37: E210 unknown model `gema-27b`"
    assert lines[1] == "  route default -> qwen-72b fallback [gema-27b]"
    assert lines[2] == "  " + " " * 36 + "^" * 8
    assert lines[3] == "  hint: did you mean `gemma-27b`?"
    assert "1 error(s)" in r.output


def test_lint_json_and_github(broken: Path) -> None:
    r = runner.invoke(app, ["lint", "--format", "json", str(broken)])
    assert r.exit_code == 1
    [d] = json.loads(r.output)
    assert (d["code"], d["line"], d["col"], d["severity"]) == ("E210", 4, 37, "error")
    r = runner.invoke(app, ["lint", "--format", "github", str(broken)])
    assert r.exit_code == 1
    assert r.output.startswith(f"::error file={broken},line=4,col=37,endLine=4,endColumn=45,title=E210::")


def test_lint_warnings_exit_zero(tmp_path: Path) -> None:
    p = tmp_path / "w.policy"
    p.write_text("authorize a\n")
    r = runner.invoke(app, ["lint", str(p)])
    assert r.exit_code == 0 and "W110" in r.output
    assert runner.invoke(app, ["lint", "--strict", str(p)]).exit_code == 1


def test_lint_missing_path(tmp_path: Path) -> None:
    r = runner.invoke(app, ["lint", str(tmp_path / "nope.policy")])
    assert r.exit_code == 1 and "E001" in r.output


def test_newcomer_loop_fix_then_evaluate(broken: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["lint", str(broken)]).exit_code == 1
    broken.write_text(BROKEN.replace("gema-27b", "gemma-27b"))
    assert runner.invoke(app, ["lint", str(broken)]).exit_code == 0
    action = tmp_path / "action.json"
    action.write_text(json.dumps({"action": "classify_ticket", "text": "Where is my parcel?"}))
    r = runner.invoke(app, ["eval", str(broken), "--input", str(action), "--no-signals"])
    assert r.exit_code == 0, r.output
    assert "Decision: ALLOW" in r.output and "mine.policy:5" in r.output


def test_fmt_check_and_write(tmp_path: Path) -> None:
    p = tmp_path / "x.policy"
    p.write_text('policy "x"   version 1\nauthorize   a,b  # keep me\n')
    r = runner.invoke(app, ["fmt", "--check", str(p)])
    assert r.exit_code == 1 and "would reformat" in r.output
    assert runner.invoke(app, ["fmt", str(p)]).exit_code == 0
    assert p.read_text() == 'policy "x" version 1\nauthorize a, b  # keep me\n'
    r = runner.invoke(app, ["fmt", "--check", str(p)])
    assert r.exit_code == 0 and "already formatted" in r.output


def test_fmt_reports_syntax_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.policy"
    p.write_text("authorize a when\n")
    r = runner.invoke(app, ["fmt", str(p)])
    assert r.exit_code == 1 and "E103" in r.output
    assert p.read_text() == "authorize a when\n"  # untouched


def test_fmt_directory(tmp_path: Path) -> None:
    shutil.copytree(POLICIES / "support-desk", tmp_path / "sd")
    r = runner.invoke(app, ["fmt", "--check", str(tmp_path / "sd")])
    assert r.exit_code == 0, r.output


def test_eval_text_explains(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"action": "refund", "fields": {"amount": "150 GBP"},
                             "signals": {"sentiment": 0.8, "confidence": 0.9, "mentions:litigation": None}}))
    r = runner.invoke(app, ["eval", str(POLICIES / "support-desk"), "--input", str(a), "--no-signals"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "Decision: REQUIRE_APPROVAL" in out
    assert "10-orders.policy:5" in out and "because amount 150 GBP > 100 GBP" in out
    assert "reviewers refunds; notify slack #refunds, email refunds@example.com; remind every 1h; timeout 8h -> deny" in out
    assert "Policy 'support-desk' version 3" in out


def test_eval_json_chat(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"action": "chat", "use_case": "code", "signals": {"sentiment": 0.8, "confidence": 0.9}}))
    r = runner.invoke(app, ["eval", str(POLICIES / "support-desk"), "--input", str(a), "--format", "json", "--no-signals"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["effect"] == "allow"
    assert doc["routing"]["chain"] == ["qwen-72b", "gemma-27b", "kimi-large", "bedrock-llama"]
    assert doc["explanation"][0] == "ALLOW: chat"
    assert len(doc["policy_hash"]) == 64


def test_eval_stdin_and_bad_input(tmp_path: Path) -> None:
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", "-", "--no-signals"],
                      input='{"action": "send_email"}')
    assert r.exit_code == 0 and "REQUIRE_APPROVAL" in r.output
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", "-"], input='{"action": ""}')
    assert r.exit_code == 2 and "not a valid action" in r.output and "action:" in r.output
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", "-"], input='{"actoin": "x"}')
    assert r.exit_code == 2 and "actoin" in r.output
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "cannot read" in r.output


def test_eval_on_broken_policy_shows_diagnostics(broken: Path, tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text('{"action": "x"}')
    r = runner.invoke(app, ["eval", str(broken), "--input", str(a)])
    assert r.exit_code == 1 and "E210" in r.output


def test_eval_without_signal_provider_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import policyengine.signals as sig

    monkeypatch.delattr(sig, "DefaultSignalProvider", raising=False)
    a = tmp_path / "a.json"
    a.write_text('{"action": "classify_ticket", "text": "hello"}')
    r = runner.invoke(app, ["eval", str(POLICIES / "support-desk"), "--input", str(a)])
    assert r.exit_code == 0, r.output
    assert "no default signal provider installed" in r.output
    assert "signal sentiment not supplied" in r.output


def test_eval_a_list_of_actions(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"action": "send_email"}, {"action": "drop_database"}]))
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", str(a), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert [d["effect"] for d in json.loads(r.output)] == ["require_approval", "deny"]
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", str(a), "--no-signals"])
    assert r.output.count("Decision:") == 2
    a.write_text("{not json")
    r = runner.invoke(app, ["eval", str(POLICIES / "approval-gates"), "--input", str(a)])
    assert r.exit_code == 2 and "not JSON" in r.output


def test_bom_and_tabs(tmp_path: Path) -> None:
    p = tmp_path / "bom.policy"
    p.write_bytes("\ufeffpolicy \"b\" version 1\nroute default ->\tnope\n".encode())
    r = runner.invoke(app, ["lint", str(p)])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines[0].startswith(f"{p}:2:18: E210")
    assert lines[1] == "  route default -> nope"
    assert lines[2].index("^") == lines[1].index("nope")


def test_fmt_stdin_to_stdout() -> None:
    r = runner.invoke(app, ["fmt", "-"], input="authorize   a ,b\n")
    assert r.exit_code == 0 and r.output == "authorize a, b\n"
    assert runner.invoke(app, ["fmt", "--check", "-"], input="authorize   a\n").exit_code == 1
    r = runner.invoke(app, ["fmt", "-"], input="authorize\n")
    assert r.exit_code == 1 and "<stdin>:1:10: E103" in r.output
