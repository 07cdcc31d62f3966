"""Connections to the MCP servers behind the gateway, through the official SDK's client.

Each `Upstream` is supervised by one task that owns its `mcp.Client` (the SDK's contexts must
be entered and left in one task): it connects, lists the server's tools, and serves calls until
the connection breaks; then it reconnects with a growing pause (0.2 s doubling to 5 s), so a
server that died comes back when it can be started again. While an upstream is down its calls
fail at once with `UpstreamUnavailable`; the others are not affected.

`Upstreams` is the set: which upstream serves each tool name the gateway shows. A tool name
served by one upstream is shown as it is; a name two upstreams serve is shown as
`SERVER.TOOL` for each of them (the action the policy sees is still the tool's own name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from policyengine.mcpgate.config import UpstreamSpec

__all__ = ["Route", "Upstream", "UpstreamUnavailable", "Upstreams"]

log = logging.getLogger("policyengine.mcp")

_PAGES = 50  # tools/list pages read per listing (a paginator that never ends cannot hang it)


class UpstreamUnavailable(Exception):
    """The upstream is not connected (it died, or cannot be reached); the message says which and why."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a shown tool name goes: the upstream and the tool's own name there."""

    upstream: Upstream
    tool: str


class Upstream:
    """One MCP server behind the gateway, kept connected by its supervisor task."""

    def __init__(self, spec: UpstreamSpec, *, timeout_s: float = 120.0) -> None:
        self.spec, self.name, self.timeout_s = spec, spec.name, timeout_s
        self.tools: list[types.Tool] = []
        self.version = 0  # counts tool listings (what the shown names are made from)
        self.last_error: str | None = None
        self._client: Client | None = None
        self._broken = asyncio.Event()
        self._connected = asyncio.Event()  # set once the first attempt ended (connected or not)
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Connected now."""
        return self._client is not None

    def _client_for(self) -> tuple[Client, httpx2.AsyncClient | None]:
        s = self.spec
        if s.kind == "stdio":
            params = StdioServerParameters(command=s.command[0], args=s.command[1:], env=s.env or None)
            return Client(params, cache=None, read_timeout_seconds=self.timeout_s), None
        http = httpx2.AsyncClient(headers=s.resolved_headers(), timeout=httpx2.Timeout(self.timeout_s, connect=10))
        assert s.url is not None
        return Client(streamable_http_client(s.url, http_client=http), cache=None,
                      read_timeout_seconds=self.timeout_s), http

    async def start(self, wait_s: float = 15.0) -> None:
        """Start the supervisor; returns once the first connection attempt ended (or after `wait_s`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp-upstream-{self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait_s)

    async def aclose(self) -> None:
        """Disconnect and stop reconnecting (a stdio server's process is ended)."""
        self._closing = True
        self._broken.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _supervise(self) -> None:
        pause = 0.2
        while not self._closing:
            http = None
            try:
                client, http = self._client_for()
                async with client:
                    self.tools = await _list_all(client)
                    self.version += 1
                    self._client, self.last_error, pause = client, None, 0.2
                    log.info("upstream %s connected (%s): %d tools", self.name, self.spec.describe(), len(self.tools))
                    self._connected.set()
                    await self._broken.wait()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # anyio's exception groups included: the loop must go on
                self.last_error = _describe(exc)
                log.warning("upstream %s (%s) is down: %s", self.name, self.spec.describe(), self.last_error)
            finally:
                self._client = None
                self._broken.clear()
                self._connected.set()
                if http is not None:
                    with contextlib.suppress(Exception):
                        await http.aclose()
            if self._closing:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _down(self, exc: BaseException) -> UpstreamUnavailable:
        self.last_error = _describe(exc)
        self._broken.set()  # the supervisor reconnects
        return UpstreamUnavailable(f"upstream MCP server {self.name!r} is unavailable: {self.last_error}")

    def _need(self) -> Client:
        c = self._client
        if c is None:
            raise UpstreamUnavailable(f"upstream MCP server {self.name!r} is unavailable"
                                      + (f": {self.last_error}" if self.last_error else ""))
        return c

    async def refresh(self) -> list[types.Tool]:
        """The server's tools, listed again now."""
        c = self._need()
        try:
            self.tools = await _list_all(c)
            self.version += 1
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                raise self._down(exc)
            raise UpstreamUnavailable(f"upstream MCP server {self.name!r} could not list its tools: {exc.message}")
        except Exception as exc:
            raise self._down(exc)
        return self.tools

    async def call(self, tool: str, arguments: dict[str, Any], *, progress: Any = None) -> types.CallToolResult:
        """Call `tool` upstream; `progress(progress, total, message)` receives the server's progress
        notifications. A JSON-RPC error the server answers comes back as an error result
        (`is_error`); a broken connection raises `UpstreamUnavailable` (and starts a reconnect)."""
        c = self._need()
        try:
            return await c.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                raise self._down(exc)
            return types.CallToolResult(content=[types.TextContent(
                type="text", text=f"upstream {self.name!r} refused the call: {exc.message}")], is_error=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._down(exc)


async def _list_all(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(_PAGES):
        page = await client.list_tools(cursor=cursor) if cursor else await client.list_tools()
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _describe(exc: BaseException) -> str:
    """One line for an exception, unwrapping exception groups to their first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class Upstreams:
    """The upstream servers by name, and the shown tool names routed to them."""

    def __init__(self, specs: list[UpstreamSpec], *, timeout_s: float = 120.0) -> None:
        self.by_name = {s.name: Upstream(s, timeout_s=timeout_s) for s in specs}
        self._routes: dict[str, tuple[Route, types.Tool]] = {}
        self._routes_key: tuple[tuple[bool, int], ...] | None = None

    async def start(self) -> None:
        """Connect every upstream (in parallel); one that cannot connect is retried in the background."""
        await asyncio.gather(*(u.start() for u in self.by_name.values()))

    async def aclose(self) -> None:
        """Disconnect every upstream."""
        await asyncio.gather(*(u.aclose() for u in self.by_name.values()), return_exceptions=True)

    def routes(self) -> dict[str, tuple[Route, types.Tool]]:
        """Shown name -> (route, the tool as its server describes it), over the upstreams that are up.
        Made again only when an upstream's tools or state changed since the last call."""
        key = tuple((u.up, u.version) for u in self.by_name.values())
        if key != self._routes_key:
            self._routes, self._routes_key = self._make_routes(), key
        return self._routes

    def _make_routes(self) -> dict[str, tuple[Route, types.Tool]]:
        count: dict[str, int] = {}
        for u in self.by_name.values():
            for t in u.tools if u.up else ():
                count[t.name] = count.get(t.name, 0) + 1
        out: dict[str, tuple[Route, types.Tool]] = {}
        for u in self.by_name.values():
            for t in u.tools if u.up else ():
                shown = t.name if count[t.name] == 1 else f"{u.name}.{t.name}"
                out[shown] = (Route(u, t.name), t)
        return out

    def route(self, shown: str) -> Route | None:
        """Where the shown tool name goes, or None when no connected upstream serves it."""
        hit = self.routes().get(shown)
        if hit is not None:
            return hit[0]
        server, dot, tool = shown.partition(".")
        u = self.by_name.get(server) if dot else None
        if u is not None and u.up and any(t.name == tool for t in u.tools):
            return Route(u, tool)
        return None

    def owner_of(self, shown: str) -> Upstream | None:
        """The upstream a shown name belongs to even while it is down (its last known tools)."""
        server, dot, _tool = shown.partition(".")
        if dot and server in self.by_name:
            return self.by_name[server]
        for u in self.by_name.values():
            if any(t.name == shown for t in u.tools):
                return u
        return None
