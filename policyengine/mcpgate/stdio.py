"""The gateway over stdio: one MCP client (a desktop agent) talking on stdin/stdout.

Run by `policyengine mcp --transport stdio`, beside the service on HTTP (which serves the
review pages the reviewers' notifications link to). Nothing else may write to stdout: logs go
to stderr.

The SDK's stdio transport drops a line that is not a JSON-RPC message without a word; here
such a line is answered with a JSON-RPC error (-32700 parse error, or -32600 invalid request
with the request's id when one can be read) and the connection goes on. Every line written to
stdout is written whole (one lock for the SDK's answers and these errors).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import mcp_types as types
import orjson
from mcp.server.stdio import stdio_server

from policyengine.mcpgate.server import McpGateway

__all__ = ["serve_stdio"]


class _Out:
    """stdout as the SDK's transport uses it (`write`, `flush`), one whole line at a time."""

    def __init__(self, out: Any) -> None:
        self._out, self._lock = out, anyio.Lock()

    async def write(self, text: str) -> None:
        async with self._lock:
            await self._out.write(text)
            await self._out.flush()

    async def flush(self) -> None:
        """Every write is flushed already."""


class _CheckedIn:
    """stdin lines for the SDK's transport: a line that is not a JSON-RPC message is answered
    with a JSON-RPC error on `out` and not passed on."""

    def __init__(self, lines: Any, out: _Out) -> None:
        self._lines, self._out = lines, out

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[str]:
        async for line in self._lines:
            if not line.strip():
                continue
            error = _malformed(line)
            if error is None:
                yield line
            else:
                await self._out.write(orjson.dumps(error).decode() + "\n")


def _malformed(line: str) -> dict[str, Any] | None:
    """The JSON-RPC error answering `line`, or None when it is a JSON-RPC message."""
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        return None
    except Exception:  # any failure to read it: the client's malformed message
        pass
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {"jsonrpc": "2.0", "id": None, "error": {"code": types.PARSE_ERROR, "message": "Parse error"}}
    rid = data.get("id") if isinstance(data, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        rid = None
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": types.INVALID_REQUEST,
                                                   "message": "Invalid request: not a JSON-RPC 2.0 message"}}


@contextlib.contextmanager
def _claimed() -> Iterator[tuple[Any, Any]]:
    """The process's stdin/stdout as the wire (anyio text files on private copies of fds 0 and 1),
    with fd 0 on the null device and fd 1 on stderr meanwhile, so a stray print or a child
    process cannot write into the MCP stream (what the SDK's transport does when it owns them)."""
    sys.stdout.flush()
    wire_in, wire_out = os.dup(0), os.dup(1)
    saved_in, saved_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    try:
        yield (anyio.wrap_file(open(wire_in, encoding="utf-8", errors="replace", closefd=True)),  # noqa: SIM115
               anyio.wrap_file(open(wire_out, "w", encoding="utf-8", closefd=True)))  # noqa: SIM115
    finally:
        sys.stdout.flush()
        os.dup2(saved_in, 0)
        os.dup2(saved_out, 1)
        os.close(saved_in)
        os.close(saved_out)


async def serve_stdio(gateway: McpGateway, stdin: Any = None, stdout: Any = None) -> None:
    """Serve one MCP connection on stdin/stdout (or the given anyio text streams) until the client closes it."""
    with contextlib.ExitStack() as stack:
        if stdin is None or stdout is None:
            stdin, stdout = stack.enter_context(_claimed())
        out = _Out(stdout)
        async with stdio_server(_CheckedIn(stdin, out), out) as (read, write):  # type: ignore[arg-type]
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
    # the stdio client's calls are not HTTP requests, so the app's in-flight count cannot tell
    # whether the loop is quiet: under FULL every commit goes to the writer thread (never blocks it),
    # and the checkpoint passes come as under load
    rt.log.quiet = None
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
