"""`policyengine doctor`: check a deployment's configuration before traffic does (exit codes for CI).

    policyengine doctor [--policy FILE_OR_DIR]... [--probe/--no-probe] [--chat] [--json] [--settings FILE]

Exit 0: every check passed; 1: warnings only; 2: at least one error (see `policyengine.doctor`).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from policyengine.cli import app
from policyengine.cli.service_cmds import SettingsOpt, _settings

STYLE = {"error": "bold red", "warning": "yellow", "ok": "green"}


@app.command("doctor")
def doctor(
    policy: Annotated[list[Path] | None, typer.Option("--policy", "-p", help="policy file or directory "
                                                      "(repeatable; default: the settings' policy_path)")] = None,
    probe: Annotated[bool, typer.Option("--probe/--no-probe", help="probe each endpoint (GET /models), SMTP")] = True,
    chat: Annotated[bool, typer.Option("--chat", help="also send a one-token chat to each model (costs a call)")] = False,
    timeout: Annotated[float, typer.Option(help="seconds per probe")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the findings as JSON")] = False,
    show_ok: Annotated[bool, typer.Option("--all", help="list the checks that passed too")] = False,
    settings_file: SettingsOpt = None,
) -> None:
    """Report what would fail before traffic does: unset env(...), wrong base URLs (an Ollama URL without
    /v1), endpoints that do not answer or do not list their model, channels and reviewer groups that do
    not resolve. Exit 0 ok, 1 warnings, 2 errors."""
    from policyengine.doctor import diagnose

    settings = _settings(settings_file)
    report = asyncio.run(diagnose(settings, policy_paths=policy or None, probe=probe, chat=chat, timeout=timeout))
    if as_json:
        sys.stdout.write(json.dumps({"exit_code": report.exit_code, "errors": len(report.errors),
                                     "warnings": len(report.warnings),
                                     "findings": [f.as_dict() for f in report.findings]}, indent=2) + "\n")
        raise typer.Exit(report.exit_code)
    out = Console(width=None if sys.stdout.isatty() else 200)
    shown = [f for f in report.findings if show_ok or f.severity != "ok"]
    if shown:
        table = Table(show_lines=False)
        for col, kw in (("", {}), ("check", {"no_wrap": True}), ("subject", {"overflow": "fold"}),
                        ("what", {"overflow": "fold", "ratio": 3}), ("where", {"overflow": "fold"})):
            table.add_column(col, **kw)
        for f in shown:
            what = Text(f.message)  # plain text: a message may hold [brackets]
            if f.hint:
                what.append(f"\nhint: {f.hint}", style="dim")
            table.add_row(Text(f.severity, style=STYLE[f.severity]), f.code, Text(f.subject), what, Text(f.where or ""))
        out.print(table)
    passed = sum(f.severity == "ok" for f in report.findings)
    summary = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s), {passed} check(s) passed"
    out.print(f"[{STYLE['error' if report.errors else 'warning' if report.warnings else 'ok']}]{summary}[/]")
    raise typer.Exit(report.exit_code)
