"""Pooled async HTTP clients on the httpx API, and mapping of transport failures.

httpx's own async transport (httpcore) slows down badly under concurrency
(encode/httpx#3215); `benchmarks/transport_bench.py` measures it against the
aiohttp transport from `httpx-aiohttp` side by side, and both against the lean
HTTP/1.1 client of `adapters/h1.py` (see benchmarks/dispatch.md).

* `"native"` (the default): the httpx client runs on the aiohttp transport (Bedrock and
  Vertex use it) and carries an `H1Pool` (`native_pool`) that the OpenAI-compatible
  adapter calls directly; `client.aclose()` closes both.
* `"aiohttp"`: the same httpx client without the pool; the OpenAI-compatible adapter calls
  the aiohttp session under it (`aiohttp_session`).
* `"httpx"`: httpx's stock transport, for comparison.
"""

from __future__ import annotations

import asyncio
import errno
from functools import lru_cache
from typing import Any, Literal

import aiohttp
import httpx

from .base import TransportError
from .h1 import H1Pool

TransportName = Literal["native", "aiohttp", "httpx"]


class _NoCookies(httpx.Cookies):
    """Model APIs do not use cookies; skipping the cookie jar saves ~10% CPU per call."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


class PEClient(httpx.AsyncClient):
    """The httpx client `make_client` returns: it may carry a native `H1Pool` (closed with it)
    and records its aiohttp transport for the adapters' fast paths."""

    _pe_pool: H1Pool | None = None
    _pe_aiohttp: Any = None

    async def aclose(self) -> None:
        try:
            if self._pe_pool is not None:
                await self._pe_pool.aclose()
        finally:
            await super().aclose()

    async def __aexit__(self, exc_type: Any = None, exc_value: Any = None, traceback: Any = None) -> None:
        try:  # httpx's __aexit__ does not call aclose
            if self._pe_pool is not None:
                await self._pe_pool.aclose()
        finally:
            await super().__aexit__(exc_type, exc_value, traceback)


def make_client(transport: TransportName = "native", *, max_connections: int = 512,
                keepalive: int = 128, keepalive_expiry: float = 30.0) -> httpx.AsyncClient:
    """An httpx.AsyncClient with pooled keep-alive connections on the chosen transport
    (with "native", plus an `H1Pool` with the same limits: see `native_pool`)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive,
                          keepalive_expiry=keepalive_expiry)
    timeout = httpx.Timeout(connect=5.0, read=None, write=None, pool=None)
    if transport in ("native", "aiohttp"):
        from httpx_aiohttp import AiohttpTransport

        # trust_env=False: proxies come from explicit configuration, not stray env vars.
        client = PEClient(transport=AiohttpTransport(limits=limits, trust_env=False),
                          timeout=timeout, trust_env=False)
    elif transport == "httpx":
        client = PEClient(limits=limits, timeout=timeout, trust_env=False)
    else:
        raise ValueError(f"unknown transport {transport!r} (expected 'native', 'aiohttp' or 'httpx')")
    client._cookies = _NoCookies()
    # recorded so the OpenAI-compatible adapter can take its fast path (native_pool, aiohttp_session)
    if transport == "native":
        client._pe_pool = H1Pool(max_connections=max_connections, keepalive=keepalive,
                                 keepalive_expiry=keepalive_expiry)
    elif transport == "aiohttp":
        client._pe_aiohttp = client._transport
    return client


def native_pool(client: httpx.AsyncClient) -> H1Pool | None:
    """The `H1Pool` of a client from `make_client(transport="native")` (open), else None."""
    pool: H1Pool | None = getattr(client, "_pe_pool", None)
    return None if pool is None or pool.closed else pool


def aiohttp_session(client: httpx.AsyncClient) -> aiohttp.ClientSession | None:
    """The aiohttp session under a client from `make_client(transport="aiohttp")`, else None.

    The non-streaming chat call goes straight to it: the httpx Request/Response wrapping costs
    more CPU than the aiohttp call itself (benchmarks/service.md). Same session, so the same
    connection pool, limits and lifetime (`client.aclose()` closes it) as the httpx API.
    """
    t = getattr(client, "_pe_aiohttp", None)
    if t is None or client.is_closed:
        return None
    session = t.client
    if not isinstance(session, aiohttp.ClientSession):
        session = t.client = t.get_client()  # what the transport does on its first request
    return None if session.closed else session


@lru_cache(maxsize=64)
def aiohttp_timeout(connect: float) -> aiohttp.ClientTimeout:
    """The timeouts the httpx-aiohttp transport derives from httpx.Timeout(connect=c, rest None)."""
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=None, connect=None)


def _chain(exc: BaseException):
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def map_transport_error(exc: BaseException, *, streaming_started: bool = False) -> TransportError:
    """Name what went wrong below HTTP, looking through httpx-aiohttp's exception wrapping
    (which reports e.g. a server disconnect as ConnectTimeout)."""
    detail = type(exc).__name__
    for e in _chain(exc):
        if isinstance(e, TransportError):
            return e
        if isinstance(e, aiohttp.ClientPayloadError):
            return TransportError("stream_cut", "response body ended early")
        if isinstance(e, aiohttp.ServerDisconnectedError):
            return TransportError("stream_cut" if streaming_started else "connection_reset",
                                  "server disconnected")
        if isinstance(e, aiohttp.ClientConnectorError):
            os_err = getattr(e, "os_error", None)
            if isinstance(os_err, ConnectionRefusedError) or getattr(os_err, "errno", None) == errno.ECONNREFUSED:
                return TransportError("connection_refused", "connection refused")
            return TransportError("connect_error", str(os_err or e)[:200])
        if isinstance(e, aiohttp.ConnectionTimeoutError | aiohttp.ServerTimeoutError):
            return TransportError("connect_timeout" if isinstance(e, aiohttp.ConnectionTimeoutError) else "timeout", detail)
        if isinstance(e, ConnectionRefusedError):
            return TransportError("connection_refused", "connection refused")
        if isinstance(e, ConnectionResetError | BrokenPipeError):
            return TransportError("stream_cut" if streaming_started else "connection_reset", "connection reset by peer")
        if isinstance(e, aiohttp.ClientOSError):
            if getattr(e, "errno", None) in (errno.ECONNRESET, errno.EPIPE):
                return TransportError("stream_cut" if streaming_started else "connection_reset", "connection reset by peer")
            if getattr(e, "errno", None) == errno.ECONNREFUSED:
                return TransportError("connection_refused", "connection refused")
    if isinstance(exc, httpx.ConnectTimeout):
        return TransportError("connect_timeout", detail)
    if isinstance(exc, httpx.ConnectError):
        return TransportError("connection_refused" if "refused" in str(exc).lower() else "connect_error", str(exc)[:200])
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return TransportError("stream_cut" if streaming_started else "connection_reset", str(exc)[:200])
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return TransportError("timeout", detail)
    return TransportError("protocol_error", f"{detail}: {str(exc)[:200]}")
