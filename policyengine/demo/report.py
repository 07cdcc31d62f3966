"""What the demo prints: Rich panels and tables, nothing the checks depend on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from .fleet import MODELS, DemoFleet


def banner(console: Console, fleet: DemoFleet, db_url: str, policy_dir: Path) -> None:
    t = Table(title="[bold yellow]SIMULATED model fleet[/] (canned answers, real HTTP, real error bodies)",
              show_lines=False, expand=False)
    t.add_column("model (policy name)")
    t.add_column("imitates")
    t.add_column("stands for")
    t.add_column("endpoint")
    for m in MODELS:
        t.add_row(m.name, f"SIMULATED {m.flavour}", m.role, fleet[m.name].url)
    console.print(Panel.fit(
        "[bold]policyengine demo[/]: the control layer between your apps and a fleet of models.\n"
        "Everything below is real HTTP to the real service ([bold]policyengine serve[/]) on the embedded\n"
        "default (SQLite decision log, in-memory state). The models are [bold yellow]SIMULATED[/]: no GPU,\n"
        "no weights, canned answers, failures scripted by the demo the way real servers fail.",
        border_style="cyan"))
    console.print(t)
    console.print(f"policy:       {policy_dir}")
    console.print(f"decision log: {db_url}")


def started(console: Console, service: Any, elapsed: float) -> None:
    console.print(f"[green]service ready[/] at {service.url} (pid {service.pid}) after {elapsed:.1f}s\n")


def step(console: Console, n: int, res: Any, elapsed: float) -> None:
    mark = "[green]PASS[/]" if res.ok else "[red]FAIL[/]"
    console.rule(f"{n}. {res.title}  {mark}  [dim]{elapsed:.1f}s[/]", align="left")
    if res.article:
        console.print(f"[dim]{res.article}[/]")
    for c in res.checks:
        sym = "[green]✓[/]" if c.ok else "[red]✗[/]"
        console.print(f" {sym} {c.what}\n     [dim]{c.observed}[/]", highlight=False)
    if res.error:
        console.print(f" [red]✗ step failed: {res.error}[/]")
    for label, did in res.decisions.items():
        console.print(f"   decision [cyan]{did}[/]  {label}", highlight=False)
    for label, aid in res.approvals.items():
        console.print(f"   approval [magenta]{aid}[/]  {label}", highlight=False)
    for note in res.notes:
        console.print(f"   → {note}", highlight=False)
    console.print()


def summary(console: Console, results: list[Any], ok: bool, kept_db: str | None, elapsed: float,
            log_path: Path | None) -> None:
    t = Table(title="demo summary", expand=False)
    t.add_column("step")
    t.add_column("result")
    t.add_column("decisions")
    for r in results:
        t.add_row(r.title, "[green]PASS[/]" if r.ok else "[red]FAIL[/]", str(len(r.decisions)))
    console.print(t)
    if kept_db:
        console.print(f"decision log kept: {kept_db}\n"
                      f"  verify its hash chain:  policyengine verify-log {kept_db}")
    else:
        console.print("the decision log was in a temporary directory and is gone; keep it with "
                      "[bold]policyengine demo --keep-db demo.db[/]")
    console.print("everything the demo started is stopped (service, simulated fleet, webhook inbox).")
    verdict = "[bold green]all steps behaved as the policy says[/]" if ok else \
        "[bold red]some steps did not behave as expected[/]"
    console.print(f"{verdict}  ({elapsed:.1f}s)")
