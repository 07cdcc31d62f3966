"""`policyengine fleet`: the running service's models and deployments; clear a cooldown or a breaker.

    policyengine fleet [status] [--json]                 models, deployments, cooldowns, breakers, latency
    policyengine fleet clear-cooldown model:qwen-72b     (or key:qwen-72b/QWEN_KEY_1)
    policyengine fleet reset-breaker qwen-72b@eu-1

Talks to the service (`--url`, default $POLICYENGINE_URL or http://127.0.0.1:8000) with an
admin key read from the environment variable `--key-env` names (default
POLICYENGINE_API_KEY): never a key on the command line. Exit 0: done; 1: the service refused
or failed (the message says why); 2: usage (no key, bad URL).
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from policyengine.cli import app, tables
from policyengine.cli.tables import id_column

fleet_app = typer.Typer(help="The running service's fleet: status; clear a cooldown or breaker (admin).",
                        invoke_without_command=True)
app.add_typer(fleet_app, name="fleet")
out = tables.console()
err = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="POLICYENGINE_URL", help="the service's base URL")]
KeyEnvOpt = Annotated[str, typer.Option("--key-env", help="environment variable holding an admin API key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
DEFAULT_URL = "http://127.0.0.1:8000"


def call_service(url: str, key_env: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """`method path` on the service with the key in `$key_env`: the JSON answer, or exit 1 (refused,
    unreachable) / 2 (no key) with the reason on stderr."""
    import httpx

    key = os.environ.get(key_env)
    if not key:
        err.print(f"[red]error:[/] set {key_env} to an admin API key (keys are never passed as arguments)")
        raise typer.Exit(2)
    if not url.startswith(("http://", "https://")):
        err.print(f"[red]error:[/] --url must start with http:// or https://, got {url!r}")
        raise typer.Exit(2)
    try:
        r = httpx.request(method, url.rstrip("/") + path, json=body, timeout=15,
                          headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/] cannot reach {url}: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    try:
        data = r.json()
    except ValueError:
        data = {"error": {"message": r.text[:500]}}
    if r.status_code >= 400:
        msg = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
        err.print(f"error: HTTP {r.status_code}: {msg or r.text[:500]}", markup=False, style="red")
        raise typer.Exit(1)
    return data


def _remaining(cds: list[dict[str, Any]]) -> str:
    """Each cooldown of a deployment: `model` (the whole deployment) or `key NAME`, why, and for how long."""
    parts = []
    for c in cds:
        scope = c["scope"]
        what = f"key {scope.split('/', 1)[1]}" if scope.startswith("key:") else "model"
        parts.append(f"{what}: {c['reason']} ({c['remaining_s']:.0f}s)")
    return "\n".join(parts) or "-"


def render_fleet(data: dict[str, Any], console: Console) -> None:
    """The fleet status as tables: one row per deployment, then endpoints and attempt counts. Id
    columns are as wide as their longest id (folded only when the terminal cannot fit them)."""
    p = data.get("policy") or {}
    console.print(f"policy {p.get('name')} v{p.get('version')} ({str(p.get('hash'))[:12]})", markup=False)
    models = data.get("models") or []
    rows = [(m, d) for m in models for d in m.get("deployments") or []]
    t = Table(title="deployments", title_justify="left")
    id_column(t, "model", (m["name"] for m, _ in rows))
    id_column(t, "deployment", (d.get("deployment") or "-" for _, d in rows))
    t.add_column("status", overflow="fold")
    t.add_column("breaker", overflow="fold")
    t.add_column("cooldowns", overflow="fold")
    t.add_column("in flight", justify="right")
    t.add_column("latency", justify="right")
    for m, d in rows:
        lat = m.get("latency") or {}
        b = d.get("breaker") or {}
        colour = {"available": "green", "unhealthy": "red", "breaker_open": "red"}.get(d["status"], "yellow")
        ewma = d.get("ewma_ms")
        latency = f"{ewma:.0f} ms" if ewma is not None else (f"{lat['mean_ms']:.0f} ms" if lat else "-")
        t.add_row(m["name"], d.get("deployment") or "-", f"[{colour}]{d['status']}[/]",
                  f"{b.get('state', 'closed')} ({b.get('failures', 0)})", _remaining(d.get("cooldowns") or []),
                  str(d.get("outstanding", 0)), latency)
    console.print(t)
    e = Table(title="endpoints", title_justify="left")
    id_column(e, "model", (m["name"] for m, _ in rows))
    id_column(e, "deployment", (d.get("deployment") or "-" for _, d in rows))
    e.add_column("endpoint", overflow="fold")
    e.add_column("keys", overflow="fold")
    e.add_column("attempts", overflow="fold")
    for m, d in rows:
        att = ", ".join(f"{k}={int(v)}" for k, v in sorted((m.get("attempts") or {}).items())) or "-"
        e.add_row(m["name"], d.get("deployment") or "-", d.get("base_url") or "-", ", ".join(d.get("keys") or []) or "-",
                  att)
    console.print(e)


@fleet_app.callback()
def fleet_main(ctx: typer.Context, url: UrlOpt = DEFAULT_URL, key_env: KeyEnvOpt = "POLICYENGINE_API_KEY",
               as_json: JsonOpt = False) -> None:
    """Without a subcommand: the fleet's status (as `fleet status`)."""
    ctx.obj = {"url": url, "key_env": key_env, "json": as_json}
    if ctx.invoked_subcommand is None:
        _status(url, key_env, as_json)


def _status(url: str, key_env: str, as_json: bool) -> None:
    data = call_service(url, key_env, "GET", "/v1/fleet")
    if as_json:
        out.print_json(json.dumps(data))
    else:
        render_fleet(data, out)


def _opts(ctx: typer.Context, url: str | None, key_env: str | None, as_json: bool) -> tuple[str, str, bool]:
    o = ctx.obj or {}
    return url or o.get("url", DEFAULT_URL), key_env or o.get("key_env", "POLICYENGINE_API_KEY"), \
        as_json or bool(o.get("json"))


@fleet_app.command("status")
def status_cmd(ctx: typer.Context, url: Annotated[str | None, typer.Option("--url")] = None,
               key_env: Annotated[str | None, typer.Option("--key-env")] = None, as_json: JsonOpt = False) -> None:
    """Models and deployments: status, endpoint, breaker, cooldowns, requests in flight, latency."""
    _status(*_opts(ctx, url, key_env, as_json))


@fleet_app.command("clear-cooldown")
def clear_cmd(ctx: typer.Context,
              scope: Annotated[str, typer.Argument(help="model:<model[@deployment]> or key:<model[@deployment]>/<KEY_ENV>")],
              url: Annotated[str | None, typer.Option("--url")] = None,
              key_env: Annotated[str | None, typer.Option("--key-env")] = None, as_json: JsonOpt = False) -> None:
    """Clear one cooldown now (admin), e.g. after fixing a key or restarting a server."""
    u, k, j = _opts(ctx, url, key_env, as_json)
    data = call_service(u, k, "POST", "/v1/fleet/cooldowns/clear", {"scope": scope})
    if j:
        out.print_json(json.dumps(data))
    else:
        out.print(f"{data['scope']}: " + (f"cleared (was {data['reason']})" if data["cleared"] else "was not cooling down"),
                  markup=False)


@fleet_app.command("reset-breaker")
def reset_cmd(ctx: typer.Context,
              state_id: Annotated[str, typer.Argument(help="a model, or model@deployment")],
              url: Annotated[str | None, typer.Option("--url")] = None,
              key_env: Annotated[str | None, typer.Option("--key-env")] = None, as_json: JsonOpt = False) -> None:
    """Close one circuit breaker now (admin): the next request goes through."""
    u, k, j = _opts(ctx, url, key_env, as_json)
    data = call_service(u, k, "POST", "/v1/fleet/breakers/reset", {"state_id": state_id})
    if j:
        out.print_json(json.dumps(data))
    else:
        out.print(f"{data['state_id']}: breaker closed (was {data['was']}, {data['failures']} failures)", markup=False)
