"""`policyengine usage`: the running service's limit and budget counters (`GET /v1/usage`).

    policyengine usage [--tenant acme] [--window current|previous|all] [--json]

Talks to the service (`--url`, default $POLICYENGINE_URL or http://127.0.0.1:8000) with the API
key in the environment variable `--key-env` names (default POLICYENGINE_API_KEY). A key sees its
own tenant's counters; an admin key every tenant's and the service-wide ones. Exit 0: shown; 1:
the service refused or failed; 2: usage (no key, bad URL).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from policyengine.cli import app
from policyengine.cli.fleet_cmds import DEFAULT_URL, JsonOpt, KeyEnvOpt, UrlOpt, call_service

out = Console()


@app.command("usage")
def usage(tenant: Annotated[str | None, typer.Option("--tenant", help="one tenant (admin keys)")] = None,
          window: Annotated[str, typer.Option("--window", help="current, previous (the window before) or all")]
          = "current",
          url: UrlOpt = DEFAULT_URL, key_env: KeyEnvOpt = "POLICYENGINE_API_KEY", as_json: JsonOpt = False) -> None:
    """Limit and budget counters: used, reserved, remaining and when each window resets (the
    current windows; `--window previous` the ones before them)."""
    from urllib.parse import urlencode

    query = {k: v for k, v in (("tenant", tenant), ("window", window if window != "current" else None)) if v}
    path = "/v1/usage" + (f"?{urlencode(query)}" if query else "")
    data = call_service(url, key_env, "GET", path)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = data.get("counters") or []
    if not rows:
        out.print("no live counters (no limited request in the current windows)")
        return
    t = Table("tenant", "limit", "scope", "used", "reserved", "remaining", "%", "resets (UTC)")
    for u in rows:
        resets = datetime.fromtimestamp(u["resets_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        if u.get("window_state") == "previous":
            resets += " (ended)"
        t.add_row(u.get("tenant") or "(all)", f"{u['kind']} {u['limit']} per {u['window']}\n{u['rule_id']}",
                  u["scope"] or "-", u["used"], u["reserved"], u["remaining"], f"{u['percent']:g}", resets)
    out.print(t)
