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
    t.add_column("model", no_wrap=True)
    t.add_column("imitates", no_wrap=True)
    t.add_column("stands for")
    t.add_column("endpoint", no_wrap=True)
    for m in MODELS:
        t.add_row(m.name, f"SIMULATED {m.flavour}", m.role, fleet[m.name].url)
    embedded = db_url.startswith("sqlite")
    where = ("default (SQLite decision log, in-memory state)" if embedded
             else "default state (in-memory), with the decision log in the database you gave")
    console.print(Panel(
        "[bold]policyengine demo[/]: the control layer between your apps and a fleet of models. "
        "Everything below is real HTTP to the real service ([bold]policyengine serve[/]) on the embedded "
        f"{where}. The models are [bold yellow]SIMULATED[/]: no GPU, "
        "no weights, canned answers, failures scripted by the demo the way real servers fail.",
        border_style="cyan"))
    console.print(t)
    console.print(f"policy:       {policy_dir}")
    console.print(f"decision log: {shown_url(db_url)}")


def shown_url(url: str) -> str:
    """A database URL safe to print (password masked)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unprintable database URL)"


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
    shown = list(res.decisions.items())
    for label, did in shown[:8]:
        console.print(f"   decision [cyan]{did}[/]  {label}", highlight=False)
    if len(shown) > 8:
        console.print(f"   ... and {len(shown) - 8} more decisions (GET /v1/decisions)", highlight=False)
    for label, aid in res.approvals.items():
        console.print(f"   approval [magenta]{aid}[/]  {label}", highlight=False)
    for note in res.notes:
        console.print(f"   → {note}", highlight=False)
    console.print()


def stay(console: Console, url: str, tokens: dict[str, str], fleet: DemoFleet) -> None:
    """Everything is still running: how to try it by hand (demo-only keys, valid until Ctrl-C)."""
    console.rule("still running: try it yourself (Ctrl-C stops everything)", align="left")
    console.print(f"service  {url}   (OpenAPI: {url}/docs)", highlight=False)
    for who, tok in tokens.items():
        console.print(f"  {who:<10} API key  {tok}", highlight=False)
    console.print(f"\ncurl -s {url}/v1/chat/completions -H 'Authorization: Bearer {tokens['app']}' \\\n"
                  f"  -H 'content-type: application/json' -H 'X-PolicyEngine-Use-Case: summarisation' \\\n"
                  """  -d '{"model": "auto", "messages": [{"role": "user", "content": "Summarise this ticket"}]}' -i""",
                  highlight=False, soft_wrap=True)
    console.print(f"curl -s {url}/v1/evaluate -H 'Authorization: Bearer {tokens['app']}' "
                  """-d '{"action": "refund", "fields": {"amount": "250 GBP"}}'""", highlight=False, soft_wrap=True)
    console.print(f"curl -s '{url}/v1/approvals?state=pending' -H 'Authorization: Bearer {tokens['reviewer']}'",
                  highlight=False, soft_wrap=True)
    console.print("the SIMULATED fleet: " + ", ".join(f"{n} {s.url}" for n, s in fleet.servers.items()),
                  highlight=False, soft_wrap=True)


def summary(console: Console, results: list[Any], ok: bool, kept_db: str | None, elapsed: float) -> None:
    t = Table(title="demo summary", expand=False)
    t.add_column("step")
    t.add_column("result")
    t.add_column("decisions")
    for r in results:
        t.add_row(r.title, "[green]PASS[/]" if r.ok else "[red]FAIL[/]", str(len(r.decisions)))
    console.print(t)
    if kept_db:
        console.print(f"decision log kept: {shown_url(kept_db)}\n"
                      f"  verify its hash chain:  policyengine verify-log '{shown_url(kept_db)}'")
    else:
        console.print("the decision log was in a temporary directory and is gone; keep it with "
                      "[bold]policyengine demo --keep-db demo.db[/]")
    console.print("everything the demo started is stopped (service, simulated fleet, webhook inbox).")
    verdict = "[bold green]all steps behaved as the policy says[/]" if ok else \
        "[bold red]some steps did not behave as expected[/]"
    console.print(f"{verdict}  ({elapsed:.1f}s)")
