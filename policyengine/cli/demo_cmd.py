"""`policyengine demo`: run the whole control layer against a simulated fleet, then stop it all."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from policyengine.cli import app


@app.command("demo")
def demo(
    keep_db: Annotated[Path | None, typer.Option(
        "--keep-db", help="keep the SQLite decision log at this (new) path instead of a temp dir")] = None,
    db_url: Annotated[str | None, typer.Option(
        "--db-url", help="use this database for the decision log instead (e.g. postgresql+psycopg://...)")] = None,
    summary: Annotated[Path | None, typer.Option(
        "--summary", help="write a JSON summary: each step, its checks and decision ids")] = None,
    stay: Annotated[bool, typer.Option(
        "--stay", help="after the walkthrough, keep the service and fleet running to try by hand (Ctrl-C stops)")] = False,
    startup_timeout: Annotated[float, typer.Option(help="seconds to wait for the service to be ready")] = 120.0,
) -> None:
    """Run the whole control layer against a SIMULATED model fleet, then stop everything.

    Starts the service (SQLite, in-memory state), a simulated fleet and a reviewers' inbox on 127.0.0.1.

    Walks through routing, failover, cooldowns, sessions, approvals and escalations with real requests.

    Exits 0 only if every step behaved as the policy says it must.
    """
    from policyengine.demo import DemoError, DemoOptions, run_demo

    console = Console()
    try:
        code = asyncio.run(run_demo(DemoOptions(keep_db=keep_db, db_url=db_url, summary=summary,
                                                stay=stay, startup_timeout=startup_timeout), console))
    except DemoError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")  # the message may hold brackets: pip install '...[embeddings]'
        raise typer.Exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything the demo started has been stopped[/yellow]")
        raise typer.Exit(130)
    raise typer.Exit(code)
