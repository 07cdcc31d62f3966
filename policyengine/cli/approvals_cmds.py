"""`policyengine approvals ...`: inspect approvals and the delivery outbox, run sweeps.

    policyengine approvals list [--state pending] [--tenant acme]
    policyengine approvals show APPROVAL_ID          (with its audit trail)
    policyengine approvals outbox [--state dead]
    policyengine approvals redeliver [OUTBOX_ID ...] (all dead ones without ids)
    policyengine approvals sweep                     (one round: timeouts, reminders, outbox)
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console

from policyengine.cli import app
from policyengine.cli.tables import console, table

approvals_app = typer.Typer(help="Inspect approvals and notification deliveries; run the timer sweeps.",
                            no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
out = console()
err = Console(stderr=True)

DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default: from settings)")]
SettingsOpt = Annotated[str | None, typer.Option("--settings", "-s", help="settings file", envvar="POLICYENGINE_SETTINGS_FILE")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _url(db: str | None, settings_file: str | None) -> str:
    from policyengine.cli.service_cmds import _db_url

    return _db_url(db, settings_file)


async def _with_service(url: str, fn: Any, *, deliver: bool = False) -> Any:
    import httpx

    from policyengine.approvals.plugin import build_dispatcher, load_settings
    from policyengine.approvals.service import ApprovalService
    from policyengine.store import Database

    db = Database.open(url)
    settings = load_settings()
    http = httpx.AsyncClient(timeout=settings.delivery_timeout_s) if deliver else None
    try:
        svc = ApprovalService(db.engine, settings, dispatcher=build_dispatcher(settings, http) if http else None)
        result = await fn(svc)
        await svc.drain()
        return result
    finally:
        if http is not None:
            await http.aclose()
        await db.aclose()


@approvals_app.command("list")
def list_cmd(
    state: Annotated[str, typer.Option(help="pending, approved, rejected, expired, cancelled or all")] = "pending",
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    db: DbOpt = None, settings_file: SettingsOpt = None, as_json: JsonOpt = False,
) -> None:
    """List approvals (newest first)."""
    import sqlalchemy as sa

    from policyengine.approvals.states import State
    from policyengine.approvals.tables import approvals_table
    from policyengine.approvals.views import to_view

    if state != "all" and state not in State.__members__:
        err.print(f"[red]--state must be one of {', '.join(State.__members__)} or all[/red]")
        raise typer.Exit(2)

    async def run(svc: Any) -> list[Any]:
        q = sa.select(approvals_table).order_by(approvals_table.c.created_at.desc()).limit(limit)
        if state != "all":
            q = q.where(approvals_table.c.state == state)
        if tenant is not None:
            q = q.where(approvals_table.c.tenant == tenant)
        async with svc.engine.connect() as conn:
            return [to_view(r) for r in (await conn.execute(q)).all()]

    views = asyncio.run(_with_service(_url(db, settings_file), run))
    if as_json:
        out.print_json(json.dumps([v.model_dump(mode="json") for v in views]))
        return
    t = table(("id", "state", "tenant", "action", "groups", "created", "deadline", "decided by", "decision"),
              [(v.id, v.state.value, v.tenant, v.action_name, ",".join(v.groups), f"{v.created_at:%Y-%m-%d %H:%M:%S}",
                f"{v.timeout_at:%Y-%m-%d %H:%M:%S} -> {v.on_timeout}" if v.timeout_at else "", v.decided_by,
                v.decision_id) for v in views], ids=("id", "decision"))
    out.print(t)


@approvals_app.command("show")
def show_cmd(approval_id: str, db: DbOpt = None, settings_file: SettingsOpt = None, as_json: JsonOpt = False) -> None:
    """One approval with its audit trail."""
    from policyengine.approvals.errors import ApprovalNotFound

    async def run(svc: Any) -> tuple[Any, Any]:
        return await svc.get(approval_id), await svc.audit_trail(approval_id)

    try:
        view, trail = asyncio.run(_with_service(_url(db, settings_file), run))
    except ApprovalNotFound as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1)
    if as_json:
        out.print_json(json.dumps({"approval": view.model_dump(mode="json"), "audit": [e.model_dump(mode="json") for e in trail]}))
        return
    out.print(f"[bold]{view.id}[/bold] {view.action_name} [bold]{view.state.value}[/bold] tenant={view.tenant} groups={view.groups}")
    out.print_json(json.dumps(view.action))
    for r in view.reasons:
        out.print(f"  held by {r.source or r.rule_id} {r.where or ''} {'; '.join(r.because)}")
    out.print(table(("at", "event", "from", "to", "actor", "via", "ip", "reason"),
                    [(f"{e.at:%Y-%m-%d %H:%M:%S}", e.kind, e.from_state, e.to_state, e.actor, e.via, e.ip, e.reason)
                     for e in trail]))


@approvals_app.command("outbox")
def outbox_cmd(
    state: Annotated[str | None, typer.Option(help="pending, delivered or dead (default: all)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    db: DbOpt = None, settings_file: SettingsOpt = None, as_json: JsonOpt = False,
) -> None:
    """Notification and callback deliveries (what was sent, attempts, last error)."""
    import sqlalchemy as sa

    from policyengine.approvals.tables import outbox_table

    async def run(svc: Any) -> list[Any]:
        q = sa.select(outbox_table).order_by(outbox_table.c.created_at.desc()).limit(limit)
        if state:
            q = q.where(outbox_table.c.state == state)
        async with svc.engine.connect() as conn:
            return list((await conn.execute(q)).all())

    rows = asyncio.run(_with_service(_url(db, settings_file), run))
    if as_json:  # the payloads are left out: they hold the rendered messages (and their review links)
        out.print_json(json.dumps([{"id": r.id, "approval_id": r.approval_id, "kind": r.kind, "purpose": r.purpose,
                                    "target": r.target, "state": r.state, "attempts": r.attempts,
                                    "last_error": r.last_error} for r in rows], default=str))
        return
    out.print(table(("id", "approval", "kind", "purpose", "target", "state", "attempts", "last error"),
                    [(r.id, r.approval_id, r.kind, r.purpose, r.target, r.state, r.attempts, r.last_error)
                     for r in rows], ids=("id", "approval")))


@approvals_app.command("redeliver")
def redeliver_cmd(
    outbox_ids: Annotated[list[str] | None, typer.Argument(help="outbox ids (default: every dead delivery)")] = None,
    db: DbOpt = None, settings_file: SettingsOpt = None,
) -> None:
    """Queue dead deliveries again (after fixing the SMTP / Slack / webhook settings)."""
    n = asyncio.run(_with_service(_url(db, settings_file), lambda svc: svc.redeliver(outbox_ids or None)))
    out.print(f"{n} deliveries queued again; the service's sweep sends them")


@approvals_app.command("sweep")
def sweep_cmd(db: DbOpt = None, settings_file: SettingsOpt = None) -> None:
    """Run one round of the sweeps (timeouts, reminders, outbox) — safe next to running services."""
    res = asyncio.run(_with_service(_url(db, settings_file), lambda svc: svc.run_sweeps(), deliver=True))
    out.print(f"timed out / escalated: {res['timeouts']}  reminders: {res['reminders']}  delivered: {res['delivered']}")
