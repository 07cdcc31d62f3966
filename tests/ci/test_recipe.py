"""The CI recipe in examples/ci: the workflow and hook are well-formed and the script really checks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from policyengine.cli import app

ROOT = Path(__file__).parents[2]
CI = ROOT / "examples" / "ci"
PE = str(Path(sys.executable).with_name("policyengine"))


def _options(command: str) -> set[str]:
    cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}


def _policyengine_calls(text: str) -> list[list[str]]:
    calls = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith(("policyengine ", "$pe ")):
            calls.append(shlex.split(line.replace('"${args[@]}"', ""), comments=True)[1:])
    return calls


def test_workflow_is_valid_and_uses_real_commands() -> None:
    wf = yaml.safe_load((CI / "policy-checks.yml").read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert on["pull_request"]["paths"][0] == "policies/**"
    steps = wf["jobs"]["policies"]["steps"]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "examples/ci/check-policies.sh" in runs
    calls = _policyengine_calls(runs) + _policyengine_calls((CI / "check-policies.sh").read_text())
    assert {c[0] for c in calls} >= {"diff", "lint", "test", "dry-run"}
    for call in calls:
        opts = _options(call[0])
        for word in call[1:]:
            if word.startswith("--"):
                assert word.split("=")[0] in opts, f"`policyengine {call[0]}` has no option {word}"
    # secrets only by reference
    assert re.search(r"PE_DECISIONS_URL: \$\{\{ secrets\.", (CI / "policy-checks.yml").read_text())


def test_pre_commit_config_is_valid() -> None:
    cfg = yaml.safe_load((CI / "pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for r in cfg["repos"] for h in r["hooks"]}
    assert set(hooks) == {"policyengine-fmt", "policyengine-checks"}
    assert all(h["language"] == "system" for h in hooks.values())
    assert re.search(hooks["policyengine-checks"]["files"], "policies/x/support-desk.tests.yaml")
    assert re.search(hooks["policyengine-fmt"]["files"], "policies/x/10-orders.policy")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_check_script_passes_then_catches_a_risky_change(tmp_path: Path) -> None:
    """The script lints, tests and dry-runs; moving the refund threshold fails the dry-run gate."""
    root = tmp_path / "policies"
    shutil.copytree(ROOT / "policies" / "support-desk", root / "support-desk")
    env = {**os.environ, "POLICYENGINE": PE, "PE_FORMAT": "github", "PE_MIN_COVERAGE": "100",
           "PE_MAX_CHANGE_SHARE": "0.02", "PE_REPORT_DIR": str(tmp_path / "report")}
    script = str(CI / "check-policies.sh")
    ok = subprocess.run(["bash", script, str(root)], env=env, capture_output=True, text=True, timeout=240)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 of 300 logged decisions would change" in ok.stdout
    orders = root / "support-desk" / "10-orders.policy"
    orders.write_text(orders.read_text().replace("amount > 100 GBP", "amount > 50 GBP"))
    bad = subprocess.run(["bash", script, str(root)], env=env, capture_output=True, text=True, timeout=240)
    assert bad.returncode == 1
    # "exactly 100 GBP is not over the threshold" now fails: an error annotation at the test's line
    assert "::error file=" in bad.stdout and "support-desk.tests.yaml" in bad.stdout
    report = next((tmp_path / "report").glob("*.md")).read_text()
    assert "| allow | require_approval |" in report and "> **Fails:**" in report
