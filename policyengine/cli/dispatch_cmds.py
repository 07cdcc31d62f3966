"""Dispatch tools on the command line.

    policyengine classify-error BODY_FILE|- --status 429 [--header 'retry-after: 3'] [--provider vllm] [--rules rules.yaml]
        how the dispatcher would treat this upstream error (test your classification rules)
    policyengine simulate --model qwen-72b=vllm --model gemma-27b=ollama:8002
        run a SIMULATED OpenAI-compatible fleet on 127.0.0.1 (see docs/failover.md)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from policyengine.cli import app

out = Console()
err = Console(stderr=True)


@app.command("classify-error")
def classify_error_cmd(
    body: Annotated[str, typer.Argument(help="file with the upstream's error body, or - for stdin")],
    status: Annotated[int | None, typer.Option("--status", help="HTTP status (omit for errors without one)")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="'name: value' (repeatable)")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="vllm, ollama, tgi, lmstudio, openai, bedrock, vertex...")] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="YAML/JSON file with extra rules (tried first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Classify an upstream error as retry / failover / fatal, exactly as the dispatcher would."""
    from policyengine.adapters import classify_error, load_rules

    try:
        raw = sys.stdin.read() if body == "-" else Path(body).read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]error:[/] cannot read {body}: {exc}")
        raise typer.Exit(2) from None
    headers: dict[str, str] = {}
    for h in header or ():
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            err.print(f"[red]error:[/] --header must look like 'name: value', got {h!r}")
            raise typer.Exit(2)
        headers[name.strip()] = value.strip()
    try:
        extra = load_rules(rules) if rules else None
    except ValueError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    c = classify_error(status, headers, raw, provider, rules=extra)
    if as_json:
        out.print_json(json.dumps(c.model_dump()))
        return
    colour = {"retry": "yellow", "failover": "cyan", "fatal": "red"}[c.error_class]
    out.print(f"[bold {colour}]{c.error_class}[/]  reason={c.reason}  rule={c.rule or '-'}"
              + (f"  retry_after={c.retry_after:g}s" if c.retry_after is not None else ""))
    if c.message:
        out.print(f"  message: {c.message}", markup=False)


@app.command("simulate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def simulate_cmd(ctx: typer.Context) -> None:
    """Run a SIMULATED model fleet (canned answers): --model NAME=FLAVOUR[:PORT] ... (see --help of the module)."""
    from policyengine.simulate.__main__ import main

    main(list(ctx.args) or ["--help"])
