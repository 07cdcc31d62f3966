"""The gateway over stdio: one MCP client (a desktop agent) talking on stdin/stdout.

Run by `policyengine mcp --transport stdio`, beside the service on HTTP (which serves the
review pages the reviewers' notifications link to). Nothing else may write to stdout: logs go
to stderr.
"""

from __future__ import annotations

from typing import Any

from mcp.server.stdio import stdio_server

from policyengine.mcpgate.server import McpGateway

__all__ = ["serve_stdio"]


async def serve_stdio(gateway: McpGateway, stdin: Any = None, stdout: Any = None) -> None:
    """Serve one MCP connection on stdin/stdout (or the given anyio streams) until the client closes it."""
    async with stdio_server(stdin, stdout) as (read, write):
        await gateway.server.run(read, write, gateway.server.create_initialization_options())


async def run_stdio(app: Any, *, host: str, port: int, key_env: str) -> None:
    """Run the service `app` (made by `create_gateway_app`) on HTTP at host:port, for the review
    pages and the API, and its gateway on stdin/stdout as the key whose token is in the
    environment variable `key_env`; returns when the stdio client closes the connection.
    Raises RuntimeError when the key is missing or unknown."""
    import asyncio
    import os

    import uvicorn

    from policyengine.types import ROLES, Principal

    gateway: McpGateway = app.state.mcp_gateway
    rt = gateway.rt
    # access logs would go to stdout, which carries the MCP messages
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the service stopped while starting")
            await asyncio.sleep(0.02)
        if rt.settings.auth_disabled:
            gateway.stdio_principal = Principal(tenant=rt.settings.dev_tenant, key_id="dev", subject="dev",
                                                roles=frozenset(ROLES), groups=frozenset({"*"}), attributes={})
        else:
            token = os.environ.get(key_env, "").strip()
            p = await rt.key_cache.lookup(token) if token else None
            if p is None or not p.has("app"):
                raise RuntimeError(f"the stdio client acts as the API key in ${key_env}: it is "
                                   + ("not set" if not token else "unknown, revoked or without the app role"))
            gateway.stdio_principal = p
        await serve_stdio(gateway)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
