"""Service commands: serve, migrate, verify-log, keys create/list/revoke."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from policyengine.cli import app, tables
from policyengine.cli.tables import table

console = Console(stderr=True)
out = tables.console()

keys_app = typer.Typer(help="Manage API keys (only a hash of each token is stored).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _settings(settings_file: str | None = None, **overrides: object):
    from pydantic import ValidationError

    from policyengine.settings import Settings

    kw = {k: v for k, v in overrides.items() if v is not None}
    if settings_file:
        kw["settings_file"] = settings_file
    try:
        return Settings(**kw)
    except (ValidationError, ValueError) as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2)


def _db_url(db_url: str | None, settings_file: str | None) -> str:
    if db_url:
        from policyengine.store.db import DatabaseURLError, backend

        try:
            backend(db_url)
        except DatabaseURLError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2)
        return db_url
    return _settings(settings_file).database_url


SettingsOpt = Annotated[str | None, typer.Option("--settings", "-s", help="settings file (.toml/.yaml/.json)",
                                                 envvar="POLICYENGINE_SETTINGS_FILE")]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (default: from settings)")]


@app.command("serve")
def serve(
    policies: Annotated[list[str] | None, typer.Option("--policies", "-p", help="policy directory or file (repeatable)")] = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    db: DbOpt = None,
    redis: Annotated[str | None, typer.Option("--redis", help="Redis URL for shared state")] = None,
    settings_file: SettingsOpt = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (use PostgreSQL when > 1)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
) -> None:
    """Start the API service (evaluate, OpenAI-compatible gateway, decisions, admin)."""
    import uvicorn

    s = _settings(settings_file, policy_path=policies or None, host=host, port=port, database_url=db,
                  redis_url=redis, workers=workers)
    from policyengine.settings import auth_disabled_problem

    problem = auth_disabled_problem(s)
    if problem:
        console.print(f"[red]refusing to start:[/red] {problem}")
        raise typer.Exit(2)
    if s.auth_disabled:
        console.print(f"[bold yellow]WARNING: auth_disabled=true: no API key is checked; every request is tenant "
                      f"{s.dev_tenant!r} with every role (development on loopback only)[/bold yellow]")
    if s.workers > 1 and s.database_url.startswith("sqlite"):
        console.print("[yellow]several workers on SQLite serialise on one writer; use PostgreSQL to scale out[/yellow]")
    # the app factory re-reads settings from the environment in each worker
    os.environ["POLICYENGINE_SETTINGS_JSON"] = s.model_dump_json()
    console.print(f"policyengine serving on http://{s.host}:{s.port}  policies={','.join(s.policy_path)}  "
                  f"db={s.public_dict()['database_url']}  state={'redis' if s.redis_url else 'memory'}")
    uvicorn.run("policyengine.api.factory:app_from_env", factory=True, host=s.host, port=s.port,
                workers=s.workers, log_level=log_level, access_log=access_log, loop="auto", http="auto",
                timeout_graceful_shutdown=10)


@app.command("migrate")
def migrate(db: DbOpt = None, settings_file: SettingsOpt = None) -> None:
    """Apply every database migration (the service also does this on start)."""
    from policyengine.store import current, heads, upgrade

    url = _db_url(db, settings_file)
    before = current(url)
    after = upgrade(url)
    out.print(f"database at {after} (was {before or 'empty'}; code heads {heads()})")


def _keys_repo(url: str):
    from policyengine.store import ApiKeyRepo, Database, upgrade

    upgrade(url)
    db = Database.open(url)
    return db, ApiKeyRepo(db.sessionmaker)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="tenant the key is bound to")],
    role: Annotated[list[str], typer.Option("--role", help="app, reviewer or admin (repeatable)")],
    subject: Annotated[str | None, typer.Option(help="person or application identity")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="reviewer group (repeatable)")] = None,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="key=value fed to the policy, e.g. tier=enterprise")] = None,
    description: Annotated[str | None, typer.Option(help="free text")] = None,
    db: DbOpt = None,
    settings_file: SettingsOpt = None,
) -> None:
    """Create an API key and print its token ONCE (only its sha256 is stored)."""
    url = _db_url(db, settings_file)
    attributes = {}
    for a in attr or []:
        k, sep, v = a.partition("=")
        if not sep or not k:
            console.print(f"[red]--attr must be key=value, got {a!r}[/red]")
            raise typer.Exit(2)
        attributes[k.strip()] = v.strip()

    async def run():
        dbh, repo = _keys_repo(url)
        try:
            return await repo.create(tenant=tenant, roles=set(role), subject=subject or f"{tenant}-{role[0]}",
                                     groups=set(group or ()), attributes=attributes, description=description)
        finally:
            await dbh.aclose()

    try:
        info, token = asyncio.run(run())
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    console.print(f"created key {info.key_id} tenant={info.tenant} roles={','.join(sorted(info.roles))} "
                  f"subject={info.subject}; the token is shown once:")
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None, db: DbOpt = None,
              settings_file: SettingsOpt = None,
              as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List API keys (never the tokens)."""
    url = _db_url(db, settings_file)

    async def run():
        dbh, repo = _keys_repo(url)
        try:
            return await repo.list(tenant)
        finally:
            await dbh.aclose()

    keys = asyncio.run(run())
    if as_json:
        out.print_json(json.dumps([{"key_id": k.key_id, "tenant": k.tenant, "subject": k.subject,
                                    "roles": sorted(k.roles), "groups": sorted(k.groups), "attributes": k.attributes,
                                    "state": "revoked" if k.revoked_at else "active", "revoked_at": k.revoked_at}
                                   for k in keys]))
        return
    out.print(table(("key_id", "tenant", "subject", "roles", "groups", "attributes", "state"),
                    [(k.key_id, k.tenant, k.subject, ",".join(sorted(k.roles)), ",".join(sorted(k.groups)),
                      json.dumps(k.attributes) if k.attributes else "", "revoked" if k.revoked_at else "active")
                     for k in keys], ids=("key_id",)))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key_id to revoke")], db: DbOpt = None,
                settings_file: SettingsOpt = None) -> None:
    """Revoke an API key (running services stop accepting it within key_revocation_poll_s, 1 s by default)."""
    url = _db_url(db, settings_file)

    async def run():
        dbh, repo = _keys_repo(url)
        try:
            return await repo.revoke(key_id)
        finally:
            await dbh.aclose()

    if not asyncio.run(run()):
        console.print(f"[red]no active key {key_id!r}[/red]")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")
