"""A lean HTTP/1.1 client for the gateway's upstream calls (OpenAI-compatible servers).

The gateway controls the request (a POST with a small JSON body) and needs little from the
answer (status, a few headers, the body whole or as it arrives), so this client does only
that, on `asyncio.Protocol` with llhttp (`httptools`) parsing the responses. It costs about
a third of the CPU per call of aiohttp's client (benchmarks/dispatch.md).

    pool = H1Pool()
    resp = await pool.request("POST", url, {"content-type": "application/json"}, body, connect_timeout=3.0)
    data = await resp.read()              # or: async for chunk in resp.iter_bytes(): ...
    await pool.aclose()

* Keep-alive connections pooled per (scheme, host, port); a total connection limit with
  FIFO waiting; idle connections expire after `keepalive_expiry` seconds.
* http and https (certificates verified, SNI); IPv6 literal hosts.
* Bodies framed by Content-Length, chunked, or ending at EOF; gzip/deflate decoded.
* A reused keep-alive connection that the server closed before answering (the stale
  keep-alive race) is retried once on a new connection.
* Failures are `TransportError`s with the reasons the dispatcher knows: connection_refused,
  connect_error, connect_timeout, connection_reset (no response), stream_cut (the body ended
  early), protocol_error (unparseable response).
* Cancellation at any point closes the connection in use; nothing is left pending.

No timeouts besides the connect timeout: callers bound the whole call (the dispatcher does).
No redirects, cookies, proxies or request bodies other than bytes.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from functools import lru_cache
from typing import NamedTuple

import httptools
import httpx

from .base import TransportError

__all__ = ["H1Pool", "H1Response", "PoolClosedError"]

HIGH_WATER = 1 << 20  # pause reading when this much body is buffered unread (resumed once read)

Key = tuple[str, str, int]  # (scheme, host, port)


class PoolClosedError(RuntimeError):
    """The pool was closed (`H1Pool.aclose`); it takes no more requests."""


class _StaleConnection(TransportError):
    """A reused keep-alive connection closed by the server before any byte of the answer."""


# ---------------------------------------------------------------------------- request


class _Target(NamedTuple):
    key: Key
    host: str  # to connect to, and for SNI: IDNA-encoded, IPv6 without brackets
    port: int
    tls: bool
    path: str  # the request target: path and query, percent-encoded
    host_header: str
    basic_auth: str | None  # credentials from the URL's userinfo, base64


@lru_cache(maxsize=1024)
def parse_target(url: str) -> _Target:
    """Where a URL is and what to send for it, parsed once per URL string."""
    u = httpx.URL(url)
    if u.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {u.scheme!r} in {url!r} (http or https)")
    if not u.raw_host:
        raise ValueError(f"URL {url!r} has no host")
    tls = u.scheme == "https"
    host = u.raw_host.decode("ascii")
    port = u.port or (443 if tls else 80)
    auth = base64.b64encode(u.userinfo).decode("ascii") if u.userinfo else None
    return _Target((u.scheme, host, port), host, port, tls, u.raw_path.decode("ascii") or "/",
                   u.netloc.decode("ascii"), auth)


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_PLAIN, _HOST, _AUTH = 0, 1, 2


@lru_cache(maxsize=512)
def _header_kind(name: str) -> int:
    """Checks a header name (a token) once per distinct name and says how to treat it."""
    if not _TOKEN.match(name):
        raise ValueError(f"invalid header name {name!r}")
    low = name.lower()
    if low in ("content-length", "transfer-encoding"):
        raise ValueError(f"header {name!r} is set by the client (the body is sent whole, with Content-Length)")
    return _HOST if low == "host" else _AUTH if low == "authorization" else _PLAIN


@lru_cache(maxsize=16)
def _check_method(method: str) -> str:
    if not _TOKEN.match(method):
        raise ValueError(f"invalid HTTP method {method!r}")
    return method


def encode_request(method: str, t: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """Request line, Host, Content-Length, the given headers, and the body, as one buffer.
    A header value with CR, LF or NUL raises ValueError (header injection)."""
    lines = [f"{_check_method(method)} {t.path} HTTP/1.1\r\n", "", f"Content-Length: {len(body)}\r\n"]
    host, auth = t.host_header, t.basic_auth
    for k, v in headers.items():
        kind = _header_kind(k)
        if "\r" in v or "\n" in v or "\0" in v:
            raise ValueError(f"header {k!r}: CR, LF or NUL in the value")
        if kind == _HOST:
            host = v
            continue
        if kind == _AUTH:
            auth = None
        lines.append(f"{k}: {v}\r\n")
    lines[1] = f"Host: {host}\r\n"
    if auth is not None:
        lines.append(f"Authorization: Basic {auth}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode() + body


# ---------------------------------------------------------------------------- response


@lru_cache(maxsize=64)
def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset":
            return v.strip().strip("\"'") or None
    return None


class _Inflate:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it) decoding."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self._first = True

    def feed(self, data: bytes) -> bytes:
        try:
            try:
                out = self._d.decompress(data)
            except zlib.error:
                if self._gzip or not self._first:
                    raise
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                out = self._d.decompress(data)
            self._first = False
            return out
        except zlib.error as exc:
            raise TransportError("protocol_error", f"undecodable {'gzip' if self._gzip else 'deflate'} body: {exc}") from None

    def flush(self) -> bytes:
        return self._d.flush()


class H1Response:
    """An answer whose status line and headers are in; the body follows (`read`, `iter_bytes`).

    The connection goes back to the pool as soon as the whole message is in (its body is
    then held here) if keep-alive holds; a response closed (`aclose`) or abandoned (its
    reader cancelled) before the end closes its connection.
    """

    __slots__ = ("_body", "_buf", "_buffered", "_conn", "_done", "_encoding", "_error", "_framed",
                 "_got_bytes", "_head_done", "_head_only", "_headers", "_interim", "_keep_alive",
                 "_loop", "_waiter", "content_type", "raw_headers", "status")

    def __init__(self, conn: _Conn, loop: asyncio.AbstractEventLoop, head_only: bool = False) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_type = ""  # the Content-Type header as sent ("" when absent)
        self._headers: httpx.Headers | None = None
        self._conn: _Conn | None = conn  # while the message is incomplete
        self._loop = loop
        self._head_only = head_only
        self._buf: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: TransportError | None = None
        self._body: bytes | None = None
        self._encoding = b""
        self._head_done = self._done = self._framed = self._got_bytes = self._interim = False
        self._keep_alive = False

    @property
    def headers(self) -> httpx.Headers:
        """The headers as `httpx.Headers` (built on first use)."""
        if self._headers is None:
            self._headers = httpx.Headers(self.raw_headers)
        return self._headers

    @property
    def charset(self) -> str | None:
        """The charset parameter of the content type, if any."""
        return _charset(self.content_type) if self.content_type else None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        fut = self._waiter = self._loop.create_future()
        try:
            await fut
        except BaseException:  # cancelled (a timeout): the exchange is unfinished, drop its connection
            self._abort()
            raise
        finally:
            self._waiter = None

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not self._done:
            conn.close(TransportError("stream_cut", "response closed before its end"))

    async def _take(self) -> bytes | None:
        """Body bytes received and not yet taken (waiting for some), or None at the end."""
        while True:
            buf = self._buf
            if buf:
                data = buf[0] if len(buf) == 1 else b"".join(buf)
                buf.clear()
                self._buffered = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return None
            await self._wait()

    def _decoder(self) -> _Inflate | None:
        enc = self._encoding
        if not enc:
            return None
        enc = enc.strip().lower()
        if enc in (b"gzip", b"x-gzip"):
            return _Inflate(True)
        if enc == b"deflate":
            return _Inflate(False)
        return None  # identity, or a coding we never asked for: passed through as is

    async def read(self) -> bytes:
        """The whole body (decoded if gzip/deflate)."""
        if self._body is not None:
            return self._body
        if self._done and self._error is None:
            raw = b"".join(self._buf)
            self._buf.clear()
        else:
            parts: list[bytes] = []
            while (data := await self._take()) is not None:
                parts.append(data)
            raw = b"".join(parts)
        dec = self._decoder()
        if dec is not None:
            raw = dec.feed(raw) + dec.flush()
        self._body = raw
        return raw

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive (decoded if gzip/deflate)."""
        dec = self._decoder()
        try:
            while (data := await self._take()) is not None:
                if dec is not None:
                    data = dec.feed(data)
                if data:
                    yield data
            if dec is not None and (tail := dec.flush()):
                yield tail
        finally:
            if not self._done:  # the consumer left early
                self._abort()

    async def aclose(self) -> None:
        """Done with the response: an unfinished one closes its connection. Idempotent."""
        self._abort()
        self._buf.clear()
        self._buffered = 0


# ---------------------------------------------------------------------------- connection


class _Conn(asyncio.Protocol):
    """One connection: parses the answers (llhttp) into the response in flight."""

    def __init__(self, pool: H1Pool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: H1Response | None = None
        self.idle = False
        self.idle_since = 0.0
        self.closed = False
        self.paused = False
        self.uses = 0
        self._junk = False  # bytes after the end of the answer
        self._upgrade = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        r = self.resp
        if r is None:  # nothing was asked: an idle connection cannot be trusted after this
            self.close()
            return
        r._got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close(TransportError("protocol_error", "the server switched protocols"))
            return
        except httptools.HttpParserError as exc:
            if r._head_done:  # the head was fine, the body's framing broke (as aiohttp reports it)
                self.close(TransportError("stream_cut", f"malformed response body: {exc}"))
            else:
                self.close(TransportError("protocol_error", f"unparseable response: {exc}"))
            return
        if self._upgrade:
            self.close(TransportError("protocol_error", "the server switched protocols"))
        elif r._done:
            r._conn = None
            if self._junk or not r._keep_alive or r._head_only:
                self.close()
            else:
                self.pool._release(self)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        r, self.resp = self.resp, None
        if r is not None and not r._done and r._error is None:
            r._conn = None
            if r._head_done:
                if exc is None and not r._framed:
                    r._done = True  # a body delimited by the end of the connection
                else:
                    r._error = TransportError("stream_cut", f"connection lost mid-body ({exc or 'closed'})")
            elif not r._got_bytes and self.uses > 1:
                r._error = _StaleConnection("connection_reset", "keep-alive connection closed by the server")
            else:
                r._error = TransportError("connection_reset", f"connection closed before a response ({exc or 'closed'})")
            r._wake()
        if not self.closed:
            self.closed = True
            self.pool._forget(self)

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self.resp is None:
            self._junk = True

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.resp
        if r is None:
            return
        r.raw_headers.append((name, value))
        low = name.lower()
        if low == b"content-type":
            if not r.content_type:
                r.content_type = value.decode("latin-1")
        elif low == b"content-length":
            r._framed = True
        elif low == b"transfer-encoding":
            if b"chunked" in value.lower():
                r._framed = True
        elif low == b"content-encoding":
            r._encoding = value

    def on_headers_complete(self) -> None:
        r = self.resp
        if r is None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: an interim answer (100 Continue, 103 Early Hints); the real one follows
            if status == 101:
                self._upgrade = True
            r._interim = True
            r.raw_headers = []
            r.content_type = ""
            r._encoding = b""
            r._framed = False
            return
        r.status = status
        r._keep_alive = self.parser.should_keep_alive()
        r._head_done = True
        if r._head_only:  # HEAD: no body whatever the headers say; the connection is not reused
            r._done = True
            self.resp = None
        r._wake()

    def on_body(self, body: bytes) -> None:
        r = self.resp
        if r is None:
            return
        r._buf.append(body)
        r._buffered += len(body)
        if r._buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        r._wake()

    def on_message_complete(self) -> None:
        r = self.resp
        if r is None:
            return
        if r._interim:
            r._interim = False
            return
        r._done = True
        r._conn = None
        self.resp = None
        r._wake()

    # -- for the pool and the response
    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()

    def close(self, error: TransportError | None = None) -> None:
        """Close now; a response still in flight fails with `error`."""
        if self.closed:
            return
        self.closed = True
        r, self.resp = self.resp, None
        if r is not None:
            r._conn = None
            if not r._done and r._error is None:
                r._error = error or (TransportError("stream_cut", "connection closed mid-body") if r._head_done
                                     else TransportError("connection_reset", "connection closed before a response"))
                r._wake()
        self.pool._forget(self)
        if self.transport is not None:
            self.transport.abort()


# ---------------------------------------------------------------------------- pool


_ERRNO = re.compile(r"\[Errno (\d+)\]")


def _connect_error(exc: BaseException, t: _Target) -> TransportError:
    where = f"{t.host}:{t.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError("connect_error", f"TLS certificate verification failed for {where}: "
                                               f"{exc.verify_message or exc}")
    if isinstance(exc, ssl.SSLError):
        return TransportError("connect_error", f"TLS handshake with {where} failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return TransportError("connection_refused", f"connection refused by {where}")
    if isinstance(exc, socket.gaierror):
        return TransportError("connect_error", f"cannot resolve {t.host}: {exc}")
    if isinstance(exc, OSError) and exc.errno is None:
        # several addresses tried (e.g. ::1 and 127.0.0.1): refused if every one refused
        codes = set(_ERRNO.findall(str(exc)))
        if codes == {str(111)}:
            return TransportError("connection_refused", f"connection refused by {where}")
    return TransportError("connect_error", f"{where}: {exc}"[:200])


class H1Pool:
    """Keep-alive HTTP/1.1 connections per origin, at most `max_connections` open in total
    (callers beyond that wait their turn, first come first served), at most `keepalive` idle,
    none reused after `keepalive_expiry` seconds idle. Single event loop; not thread-safe."""

    def __init__(self, max_connections: int = 512, keepalive: int = 128, keepalive_expiry: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if max_connections < 1 or keepalive < 0 or keepalive_expiry <= 0:
            raise ValueError("max_connections >= 1, keepalive >= 0 and keepalive_expiry > 0 are required")
        self.max_connections = max_connections
        self.keepalive = keepalive
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Conn] = set()
        self._count = 0  # open connections and connections being opened
        self._idle: dict[Key, deque[_Conn]] = {}
        self._n_idle = 0
        self._waiters: deque[tuple[object, asyncio.Future[_Conn | None]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        return {"open": len(self._conns), "idle": self._n_idle, "waiting": len(self._waiters)}

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes = b"",
                      connect_timeout: float = 5.0, on_sent: Callable[[], None] | None = None) -> H1Response:
        """Send a request; returns once the status line and headers are in.

        `on_sent`, when given, runs once, right after the request is handed to the socket and
        before this waits for the answer (work to overlap with the server's); it must not raise.
        It does not run when no connection could be had (nothing was sent)."""
        if self._closed:
            raise PoolClosedError("H1Pool is closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        t = parse_target(url)
        data = encode_request(method, t, headers, body)
        head_only = method == "HEAD"
        conn = await self._acquire(t, connect_timeout, fresh=False)
        try:
            return await self._exchange(conn, loop, data, head_only, on_sent)
        except _StaleConnection:
            pass  # the server closed the idle connection as we sent: once more on a new one
        conn = await self._acquire(t, connect_timeout, fresh=True)
        try:
            return await self._exchange(conn, loop, data, head_only, None)  # on_sent ran at the first try
        except _StaleConnection as exc:
            raise TransportError("connection_reset", exc.detail) from None

    async def _exchange(self, conn: _Conn, loop: asyncio.AbstractEventLoop, data: bytes,
                        head_only: bool, on_sent: Callable[[], None] | None) -> H1Response:
        r = H1Response(conn, loop, head_only)
        conn.resp = r
        conn.uses += 1
        try:
            conn.transport.write(data)  # type: ignore[union-attr]
        except BaseException:
            conn.close()
            raise
        if on_sent is not None:
            on_sent()
        while not r._head_done and r._error is None:
            await r._wait()  # cancelled: _wait closes the connection
        if r._error is not None:
            raise r._error
        return r

    # -- connections
    async def _acquire(self, t: _Target, timeout: float, fresh: bool) -> _Conn:
        while True:
            if self._closed:
                raise PoolClosedError("H1Pool is closed")
            if not fresh and (idle := self._idle.get(t.key)):
                now = self._loop.time()  # type: ignore[union-attr]
                while idle:
                    c = idle.pop()
                    self._n_idle -= 1
                    c.idle = False
                    if now - c.idle_since < self.keepalive_expiry and not c.transport.is_closing():  # type: ignore[union-attr]
                        return c
                    c.close()
            if self._count >= self.max_connections and not self._waiters:
                self._evict_idle()
            if self._count < self.max_connections and not self._waiters:
                self._count += 1
                return await self._connect(t, timeout)
            got = await self._wait_turn(("fresh", t.key) if fresh else t.key)
            if got is None:  # a free slot, counted for us
                if self._closed:
                    raise PoolClosedError("H1Pool is closed")
                return await self._connect(t, timeout)
            if not got.closed:
                return got

    def _evict_idle(self) -> None:
        """Close the longest-idle connection (of any origin) to make room."""
        oldest: deque[_Conn] | None = None
        for dq in self._idle.values():
            if dq and (oldest is None or dq[0].idle_since < oldest[0].idle_since):
                oldest = dq
        if oldest is not None:
            c = oldest.popleft()
            self._n_idle -= 1
            c.idle = False
            c.close()

    async def _wait_turn(self, key: object) -> _Conn | None:
        fut: asyncio.Future[_Conn | None] = self._loop.create_future()  # type: ignore[union-attr]
        entry = (key, fut)
        self._waiters.append(entry)
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled():  # granted, but we are leaving: pass it on
                got = fut.result()
                if got is not None:
                    self._release(got)
                else:
                    self._count -= 1
                    self._grant_slot()
            else:
                try:
                    self._waiters.remove(entry)
                except ValueError:
                    pass
            raise

    async def _connect(self, t: _Target, timeout: float) -> _Conn:
        """A new connection; one slot was counted for it by the caller."""
        loop = self._loop
        assert loop is not None
        try:
            try:
                async with asyncio.timeout(timeout):
                    if t.tls:
                        ctx = self._ssl
                        if ctx is None:
                            ctx = self._ssl = ssl.create_default_context()
                        _, conn = await loop.create_connection(lambda: _Conn(self, t.key), t.host, t.port,
                                                               ssl=ctx, server_hostname=t.host)
                    else:
                        _, conn = await loop.create_connection(lambda: _Conn(self, t.key), t.host, t.port)
            except TimeoutError:
                raise TransportError("connect_timeout", f"no connection to {t.host}:{t.port} within {timeout:g}s") from None
            except OSError as exc:  # ssl.SSLError and socket.gaierror included
                raise _connect_error(exc, t) from None
        except BaseException:
            self._count -= 1
            self._grant_slot()
            raise
        if self._closed or conn.closed:
            conn.closed = True
            self._count -= 1
            self._grant_slot()
            conn.transport.abort()  # type: ignore[union-attr]
            if self._closed:
                raise PoolClosedError("H1Pool is closed")
            raise TransportError("connection_reset", f"{t.host}:{t.port} closed the connection at once")
        self._conns.add(conn)
        return conn

    def _grant_slot(self) -> None:
        """A slot came free: it goes to the first caller waiting, if any."""
        while self._waiters and not self._closed:
            _, fut = self._waiters.popleft()
            if not fut.done():
                self._count += 1
                fut.set_result(None)
                return

    def _forget(self, conn: _Conn) -> None:
        """`conn` is closed: its slot goes to the next caller waiting."""
        if conn not in self._conns:
            return  # not counted yet (closed while connecting: _connect settles it)
        self._conns.discard(conn)
        self._count -= 1
        if conn.idle:
            conn.idle = False
            dq = self._idle.get(conn.key)
            if dq is not None:
                try:
                    dq.remove(conn)
                    self._n_idle -= 1
                except ValueError:
                    pass
        self._grant_slot()

    def _release(self, conn: _Conn) -> None:
        """`conn` finished an exchange cleanly and stays open: to the next caller, or idle."""
        if conn.paused:
            conn.resume()
        if self._closed or conn.closed:
            conn.close()
            return
        waiters = self._waiters
        while waiters:
            key, fut = waiters[0]
            if fut.done():
                waiters.popleft()
                continue
            if key == conn.key:
                waiters.popleft()
                fut.set_result(conn)
            else:
                conn.close()  # makes room for a caller waiting for another origin (_forget grants it)
            return
        if self._n_idle >= self.keepalive:
            conn.close()
            return
        conn.idle = True
        conn.idle_since = self._loop.time()  # type: ignore[union-attr]
        dq = self._idle.get(conn.key)
        if dq is None:
            dq = self._idle[conn.key] = deque()
        dq.append(conn)
        self._n_idle += 1
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.keepalive_expiry, self._sweep)  # type: ignore[union-attr]

    def _sweep(self) -> None:
        """Close connections idle for longer than keepalive_expiry (they would not be reused)."""
        self._sweeper = None
        loop = self._loop
        assert loop is not None
        limit = loop.time() - self.keepalive_expiry
        next_due: float | None = None
        for key, dq in list(self._idle.items()):
            while dq and dq[0].idle_since <= limit:
                c = dq.popleft()
                self._n_idle -= 1
                c.idle = False
                c.close()
            if dq:
                due = dq[0].idle_since + self.keepalive_expiry
                next_due = due if next_due is None else min(next_due, due)
            else:
                del self._idle[key]
        if next_due is not None and not self._closed:
            self._sweeper = loop.call_at(next_due, self._sweep)

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail, waiting callers get PoolClosedError."""
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._conns):
            conn.close()
        self._idle.clear()
        self._n_idle = 0
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # wakes the caller, which sees the pool closed
        await asyncio.sleep(0)  # let the transports finish closing
