"""The MCP gateway: standing orders and approvals on every tool an agent calls through MCP.

`policyengine mcp` puts the gateway in front of one or more MCP servers (stdio subprocesses or
streamable HTTP URLs) and speaks MCP to clients over streamable HTTP (`/mcp` on the service,
authenticated with tenant-scoped API keys) or stdio. Built on the official `mcp` SDK: its
client for the upstreams, its low-level `Server` in front.

- `config`: the upstreams (`NAME=stdio:CMD`, `NAME=https://...`) and the gateway's settings;
- `upstreams`: the supervised connections, reconnecting after a server dies;
- `decide`: a tools/call as an Action (tool name -> action, arguments -> fields, `mcp.server`);
- `server`: tools/list filtered by the policy, tools/call decided, logged, forwarded, refused,
  held for a reviewer or confirmed by the user;
- `results`: the error results of calls not forwarded;
- `http`: `/mcp` on the service with key authentication; `stdio`: one client on stdin/stdout;
- `fast`, `wire`: the hot path, an allowed 2026-07-28 tools/call to a 2026-07-28 HTTP upstream
  answered without the SDK's server and client machinery (the SDK's checks kept).
"""

from policyengine.mcpgate.config import (
           ConfigError,
           McpSettings,
           UpstreamSpec,
           load_config,
           parse_upstream,
)
from policyengine.mcpgate.server import KIND, OUTCOME_KIND, McpGateway

__all__ = ["KIND", "OUTCOME_KIND", "ConfigError", "McpGateway", "McpSettings", "UpstreamSpec", "load_config",
           "parse_upstream"]
