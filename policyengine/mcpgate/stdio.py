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
