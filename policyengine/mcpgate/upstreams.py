"""Connections to the MCP servers behind the gateway, through the official SDK's client.

Each `Upstream` is supervised by one task that owns its `mcp.Client` (the SDK's contexts must
be entered and left in one task): it connects, lists the server's tools, and serves calls until
the connection breaks; then it reconnects with a growing pause (0.2 s doubling to 5 s), so a
server that died comes back when it can be started again. While an upstream is down its calls
fail at once with `UpstreamUnavailable`; the others are not affected.

A streamable HTTP upstream that the SDK's client found speaking the 2026-07-28 protocol (one
self-contained POST per request) gets its tools/call as raw JSON-RPC on kept-alive connections
(`policyengine.mcpgate.wire`); the SDK's client still connects, lists the tools and serves
everything else. A stdio upstream, or one on a handshake-era version, is called through the SDK.

`Upstreams` is the set: which upstream serves each tool name the gateway shows. A tool name
served by one upstream is shown as it is; a name two upstreams serve is shown as
`SERVER.TOOL` for each of them (the action the policy sees is still the tool's own name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from policyengine.adapters.h1 import H1Pool
from policyengine.mcpgate.config import UpstreamSpec
from policyengine.mcpgate.wire import Progress, RawRefused, RawToolCaller, WireBroken

__all__ = ["Route", "Upstream", "UpstreamUnavailable", "Upstreams"]

log = logging.getLogger("policyengine.mcp")

_PAGES = 50  # tools/list pages read per listing (a paginator that never ends cannot hang it)
CLIENT_INFO = types.Implementation(name="policyengine-mcp-gateway", version="0.1.0")


class UpstreamUnavailable(Exception):
    """The upstream is not connected (it died, or cannot be reached); the message says which and why."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a shown tool name goes: the upstream and the tool's own name there.

    `read_only`: the server lists the tool as read-only (`readOnlyHint: true` and not
    `destructiveHint: true`) and its hints are trusted (`UpstreamSpec.trust_read_only_hints`)."""

    upstream: Upstream
    tool: str
    read_only: bool = False


def _read_only(u: Upstream, t: types.Tool) -> bool:
    a = t.annotations
    return bool(u.spec.trust_read_only_hints and a is not None and a.read_only_hint is True
                and a.destructive_hint is not True)


class Upstream:
    """One MCP server behind the gateway, kept connected by its supervisor task."""

    def __init__(self, spec: UpstreamSpec, *, timeout_s: float = 120.0, pool: H1Pool | None = None,
                 raw: bool = True) -> None:
        self.spec, self.name, self.timeout_s = spec, spec.name, timeout_s
        self._pool = pool
        self._raw_allowed = raw and pool is not None
        self._raw: RawToolCaller | None = None  # set while connected to a 2026-07-28 HTTP server
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

    @property
    def raw(self) -> bool:
        """tools/call goes as raw JSON-RPC (a 2026-07-28 HTTP upstream), not through the SDK's client."""
        return self._raw is not None

    def _client_for(self) -> tuple[Client, httpx2.AsyncClient | None]:
        s = self.spec
        if s.kind == "stdio":
            params = StdioServerParameters(command=s.command[0], args=s.command[1:], env=s.env or None)
            return Client(params, cache=None, read_timeout_seconds=self.timeout_s, client_info=CLIENT_INFO), None
        http = httpx2.AsyncClient(headers=s.resolved_headers(), timeout=httpx2.Timeout(self.timeout_s, connect=10))
        assert s.url is not None
        return Client(streamable_http_client(s.url, http_client=http), cache=None,
                      read_timeout_seconds=self.timeout_s, client_info=CLIENT_INFO), http

    def _raw_for(self, client: Client) -> RawToolCaller | None:
        s = self.spec
        if not self._raw_allowed or s.kind != "http" or client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return None
        assert s.url is not None and self._pool is not None
        return RawToolCaller(self._pool, s.url, s.resolved_headers(), client.protocol_version,
                             CLIENT_INFO.model_dump(mode="json", exclude_none=True), self.timeout_s)

    def _listed(self, tools: list[types.Tool]) -> None:
        self.tools = tools
        self.version += 1
        if self._raw is not None:
            self._raw.set_schemas({t.name: t.input_schema for t in tools})

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
                    tools = await _list_all(client)
                    self._raw = self._raw_for(client)
                    self._listed(tools)
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
                self._client = self._raw = None
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
            self._listed(await _list_all(c))
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                raise self._down(exc)
            raise UpstreamUnavailable(f"upstream MCP server {self.name!r} could not list its tools: {exc.message}")
        except Exception as exc:
            raise self._down(exc)
        return self.tools

    async def call(self, tool: str, arguments: dict[str, Any], *, progress: Progress | None = None,
                   ) -> types.CallToolResult:
        """Call `tool` upstream; `progress(progress, total, message)` receives the server's progress
        notifications. A JSON-RPC error the server answers comes back as an error result
        (`is_error`); a broken connection raises `UpstreamUnavailable` (and starts a reconnect)."""
        if self._raw is not None:
            try:
                return types.CallToolResult.model_validate(await self.call_raw(tool, arguments, progress=progress))
            except ValueError as exc:  # pydantic: a result that is not a CallToolResult
                return _refused(self.name, f"its result is not a tool result: {_describe(exc)}")
        c = self._need()
        try:
            return await c.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                raise self._down(exc)
            return _refused(self.name, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._down(exc)

    async def call_raw(self, tool: str, arguments: dict[str, Any], *, progress: Progress | None = None,
                       on_sent: Callable[[], None] | None = None) -> dict[str, Any]:
        """`call` as the result object on the wire (camelCase keys), for a raw JSON-RPC answer:
        the server's own result, unparsed, from a 2026-07-28 HTTP upstream; the SDK client's
        result dumped otherwise. The same errors as `call`. `on_sent` runs once on the raw path,
        when the request has been written and before the answer is awaited; never through the
        SDK's client, nor when nothing could be sent."""
        raw = self._raw
        if raw is None:
            r = await self.call(tool, arguments, progress=progress)
            return r.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            return await raw.call(tool, arguments, progress=progress,
                                  progress_token=f"pe-{id(raw)}" if progress is not None else None,
                                  on_sent=on_sent)
        except RawRefused as exc:
            return _refused(self.name, exc.message).model_dump(mode="json", by_alias=True, exclude_none=True)
        except TimeoutError:
            return _refused(self.name, f"no answer within {self.timeout_s:g} s").model_dump(
                mode="json", by_alias=True, exclude_none=True)
        except asyncio.CancelledError:
            raise
        except (WireBroken, OSError) as exc:
            raise self._down(exc)


def _refused(name: str, message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(
        type="text", text=f"upstream {name!r} refused the call: {message}")], is_error=True)


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

    def __init__(self, specs: list[UpstreamSpec], *, timeout_s: float = 120.0, raw: bool = True) -> None:
        # one pool of kept-alive connections for the raw tools/call of every HTTP upstream
        self.pool = H1Pool(max_connections=256, keepalive=64, keepalive_expiry=30.0)
        self.by_name = {s.name: Upstream(s, timeout_s=timeout_s, pool=self.pool, raw=raw) for s in specs}
        self._routes: dict[str, tuple[Route, types.Tool]] = {}
        self._routes_key: tuple[tuple[bool, int], ...] | None = None

    async def start(self) -> None:
        """Connect every upstream (in parallel); one that cannot connect is retried in the background."""
        await asyncio.gather(*(u.start() for u in self.by_name.values()))

    async def aclose(self) -> None:
        """Disconnect every upstream."""
        await asyncio.gather(*(u.aclose() for u in self.by_name.values()), return_exceptions=True)
        await self.pool.aclose()

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
                out[shown] = (Route(u, t.name, _read_only(u, t)), t)
        return out

    def route(self, shown: str) -> Route | None:
        """Where the shown tool name goes, or None when no connected upstream serves it."""
        hit = self.routes().get(shown)
        if hit is not None:
            return hit[0]
        server, dot, tool = shown.partition(".")
        u = self.by_name.get(server) if dot else None
        if u is not None and u.up:
            for t in u.tools:
                if t.name == tool:
                    return Route(u, tool, _read_only(u, t))
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
