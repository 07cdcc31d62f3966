"""`policyengine mcp`: the MCP gateway in front of one or more MCP servers."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from policyengine.cli import app
from policyengine.cli.service_cmds import SettingsOpt, _settings

console = Console(stderr=True)


@app.command("mcp")
def mcp(
    upstream: Annotated[list[str] | None, typer.Option(
        "--upstream", "-u", help="an MCP server behind the gateway: NAME=stdio:COMMAND ARGS... or "
                                 "NAME=http(s)://HOST/PATH (repeatable)")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML/JSON file: upstreams (name -> target) "
                                                                      "and gateway settings (hold_wait_s, ...)")] = None,
    policies: Annotated[list[str] | None, typer.Option("--policy", "-p", help="policy file or directory (repeatable)")] = None,
    transport: Annotated[str, typer.Option(help="how MCP clients reach the gateway: http (streamable HTTP at /mcp) "
                                                "or stdio (one client on stdin/stdout; the service still serves "
                                                "the review pages on --host/--port)")] = "http",
    host: Annotated[str | None, typer.Option(help="bind address of the HTTP service")] = None,
    port: Annotated[int | None, typer.Option(help="port of the HTTP service")] = None,
    hold_wait: Annotated[float | None, typer.Option("--hold-wait", help="seconds a held call waits for a reviewer "
                                                                        "before answering pending (default 30)")] = None,
    key_env: Annotated[str, typer.Option(help="stdio: the environment variable holding the API key the client "
                                              "acts as")] = "POLICYENGINE_MCP_KEY",
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="HTTP: accept only this Host (and Origin) header, against DNS rebinding "
                               "(repeatable)")] = None,
    db: Annotated[str | None, typer.Option("--db", help="database URL (default: from settings)")] = None,
    settings_file: SettingsOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Put standing orders and approvals in front of MCP servers: every tools/call is decided by the policy."""
    try:
        from policyengine.mcpgate import ConfigError, McpSettings, load_config, parse_upstream
        from policyengine.mcpgate.http import create_gateway_app
    except ImportError as exc:  # the SDK is the `mcp` extra
        console.print(f"[red]the MCP gateway needs the official SDK: pip install 'policyengine-llm[mcp]' ({exc})[/red]")
        raise typer.Exit(2)
    if transport not in ("http", "stdio"):
        console.print(f"[red]--transport must be http or stdio, not {transport!r}[/red]")
        raise typer.Exit(2)
    try:
        base = load_config(config) if config else McpSettings()
        specs = [*base.upstreams, *(parse_upstream(u) for u in upstream or [])]
        data = base.model_dump(exclude={"upstreams"})
        if hold_wait is not None:
            data["hold_wait_s"] = hold_wait
        mcp_settings = McpSettings(upstreams=specs, **data)
    except (ConfigError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    if not mcp_settings.upstreams:
        console.print("[red]no upstream: give --upstream NAME=stdio:COMMAND or NAME=http://HOST/PATH (or --config)[/red]")
        raise typer.Exit(2)
    s = _settings(settings_file, policy_path=policies or None, host=host, port=port, database_url=db)
    from policyengine.errors import PolicyEngineError
    from policyengine.settings import auth_disabled_problem

    problem = auth_disabled_problem(s)
    if problem:
        console.print(f"[red]refusing to start:[/red] {problem}")
        raise typer.Exit(2)
    try:
        gw_app = create_gateway_app(s, mcp_settings, allowed_hosts=allowed_host or None)
    except PolicyEngineError as exc:
        console.print(f"[red]upstream refused: {exc}[/red]")
        raise typer.Exit(2)
    names = ", ".join(f"{u.name} ({u.describe()})" for u in mcp_settings.upstreams)
    if transport == "http":
        import uvicorn

        console.print(f"policyengine MCP gateway on http://{s.host}:{s.port}/mcp  upstreams: {names}  "
                      f"policies={','.join(s.policy_path)}")
        uvicorn.run(gw_app, host=s.host, port=s.port, log_level=log_level, access_log=False)
        return
    from policyengine.mcpgate.stdio import run_stdio

    console.print(f"policyengine MCP gateway on stdio (review pages on http://{s.host}:{s.port})  upstreams: {names}")
    try:
        asyncio.run(run_stdio(gw_app, host=s.host, port=s.port, key_env=key_env))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
