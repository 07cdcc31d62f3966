"""`--format github` prints valid GitHub Actions workflow commands.

The validator follows the runner's parser: `::<command> <k>=<v>,<k>=<v>::<message>`;
property values escape `%`, CR, LF, `:` and `,`; the message escapes `%`, CR, LF.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policyengine.ci.render.github import annotation
from policyengine.cli import app

from .conftest import V1

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

COMMANDS = {"error", "warning", "notice"}
PROPS = {"file", "line", "endLine", "col", "endColumn", "title"}
NUMERIC = {"line", "endLine", "col", "endColumn"}
_CMD = re.compile(r"^::(?P<cmd>[a-z-]+)(?: (?P<props>[^:]*))?::(?P<msg>.*)$")
_BAD_ESCAPE = re.compile(r"%(?!25|0D|0A|3A|2C)")


def unescape(s: str) -> str:
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


def parse_annotation(line: str) -> dict[str, str]:
    """Parse one workflow command as the runner does; AssertionError says what is invalid."""
    assert "\n" not in line and "\r" not in line, "a workflow command is one line"
    m = _CMD.match(line)
    assert m, f"not a workflow command: {line!r}"
    assert m["cmd"] in COMMANDS, f"unknown annotation command {m['cmd']!r}"
    out = {"command": m["cmd"], "message": unescape(m["msg"])}
    assert not _BAD_ESCAPE.search(m["msg"]), f"unescaped % in message: {line!r}"
    if m["props"]:
        for part in m["props"].split(","):
            assert "=" in part, f"property without a value: {part!r}"
            key, value = part.split("=", 1)
            assert key in PROPS, f"unknown property {key!r}"
            assert key not in out, f"duplicate property {key!r}"
            assert not _BAD_ESCAPE.search(value), f"unescaped % in {key}: {value!r}"
            if key in NUMERIC:
                assert value.isdigit() and int(value) >= 1, f"{key} must be a positive integer: {value!r}"
            out[key] = unescape(value)
    return out


def test_validator_rejects_malformed_commands() -> None:
    for bad in ["error file=x::m", "::error file=a,b::m", "::error line=zero::m", "::oops::m",
                "::error file=x,line=1::100% sure", "::error bogus=1::m"]:
        with pytest.raises(AssertionError):
            parse_annotation(bad)
    assert parse_annotation("::warning file=a.policy,line=3::hello")["line"] == "3"


def test_our_annotations_escape_everything() -> None:
    line = annotation("error", "50% of\nthe rules", file="dir, with: odd/p.policy", line=4, title="a: b, c")
    got = parse_annotation(line)
    assert got == {"command": "error", "file": "dir, with: odd/p.policy", "line": "4", "title": "a: b, c",
                   "message": "50% of\nthe rules"}


def test_lint_format_github_prints_valid_annotations(tmp_path: Path) -> None:
    pol = tmp_path / "bad policies"
    pol.mkdir()
    (pol / "orders.policy").write_text(
        'policy "orders"\n'
        'route default -> nomodel\n'                      # unknown model
        'authorize refund when amount > 100% GBP\n'       # syntax error with a % in the source
    )
    (pol / "models.policy").write_text('policy "orders"\nmodel m { provider openai base_url env("U") }\n'
                                       'route default -> m fallback [ghost]\n')
    res = runner.invoke(app, ["lint", "--format", "github", str(pol)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines, "lint printed nothing for a broken policy"
    parsed = [parse_annotation(ln) for ln in lines]
    assert {p["command"] for p in parsed} == {"error"}  # both planted problems are errors
    assert any(p["title"] == "E101" and Path(p["file"]).name == "orders.policy" and p["line"] == "3"
               for p in parsed), parsed  # the syntax error, at its line
    files = {Path(p["file"]).name for p in parsed}
    assert files <= {"orders.policy", "models.policy"} and files
    assert all(int(p["line"]) >= 1 for p in parsed)


def test_lint_github_for_a_clean_set_prints_nothing() -> None:
    res = runner.invoke(app, ["lint", "--format", "github", "policies/support-desk"])
    assert res.exit_code == 0
    for ln in res.output.splitlines():
        parse_annotation(ln)  # warnings, if any, are valid too


def test_policy_test_format_github(tmp_path: Path) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "support.policy").write_text((V1 / "support.policy").read_text())
    (pol / "support.tests.yaml").write_text(
        "tests:\n"
        "  - name: 'wrong, on purpose: 100%'\n"
        "    given: {action: refund, fields: {amount: \"150 GBP\"}, signals: {sentiment: 0.9, confidence: 0.9}}\n"
        "    expect: {effect: allow}\n")
    res = runner.invoke(app, ["test", "--format", "github", str(pol), "--min-coverage", "50"])
    assert res.exit_code == 1
    lines = res.output.splitlines()
    commands = [parse_annotation(ln) for ln in lines if ln.startswith("::")]
    failed = [c for c in commands if c["command"] == "error" and c.get("line") == "2"]
    assert failed and failed[0]["title"] == "policy test failed: wrong, on purpose: 100%"
    assert "effect: expected allow, actual require_approval" in failed[0]["message"]
    uncovered = [c for c in commands if c["command"] == "warning"]
    assert uncovered and all(c["file"].endswith("support.policy") for c in uncovered)
    assert any(c.get("title") == "policy coverage" for c in commands)
    assert not lines[-1].startswith("::")  # a plain summary line closes the output


def test_lint_github_with_a_comma_in_the_path(tmp_path: Path) -> None:
    pol = tmp_path / "team a, team b"
    pol.mkdir()
    (pol / "x.policy").write_text('policy "x"\nroute default -> nomodel\n')
    res = runner.invoke(app, ["lint", "--format", "github", str(pol)])
    assert res.exit_code == 1
    got = parse_annotation(res.output.strip().splitlines()[0])
    assert got["file"] == str(pol / "x.policy")
