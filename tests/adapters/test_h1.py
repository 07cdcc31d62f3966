"""The native HTTP/1.1 client (adapters/h1.py) against real servers on 127.0.0.1: aiohttp.web for
well-behaved ones, raw asyncio servers for misbehaving ones. No mocks."""

from __future__ import annotations

import asyncio
import datetime
import gc
import gzip
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers.net import free_port
from policyengine.adapters.base import TransportError
from policyengine.adapters.h1 import HIGH_WATER, H1Pool, PoolClosedError

# Both loops for every test (a pytest_asyncio_loop_factories hook would need a conftest.py).
pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\" fixture is deprecated")


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on both loops: the service runs on uvloop, the tests elsewhere on asyncio's."""
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


# ---------------------------------------------------------------------------- servers


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes] | None:
    """One request (head and Content-Length body) or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return lines[0], headers, body


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """An asyncio server running `handler(reader, writer, connection_number)` per connection,
    counting connections (opened in total, open now, most open at once)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.opened = 0
        self.open = 0
        self.max_open = 0
        self.port = 0
        self._tasks: set[asyncio.Task] = set()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer, self.opened)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


async def keepalive_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int) -> None:
    """Answers every request on the connection with `conn=<n> req=<k>`."""
    n = 0
    while (await read_request(reader)) is not None:
        n += 1
        writer.write(ok(b"conn=%d req=%d" % (conn, n)))
        await writer.drain()


@pytest.fixture
async def web_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        netloc = f"[{host}]" if ":" in host else host
        return f"{'https' if ssl_context else 'http'}://{netloc}:{port}"

    yield start
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., H1Pool]]:
    """H1Pools closed at the end; also fails the test on any error the loop reported
    (e.g. 'Task exception was never retrieved', 'Future exception was never retrieved')."""
    made: list[H1Pool] = []
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))

    def make(**kw) -> H1Pool:
        p = H1Pool(**kw)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.aclose()
    gc.collect()
    await asyncio.sleep(0.01)
    loop.set_exception_handler(None)
    # (asyncio.start_server's own report about the test servers' handler tasks cancelled at exit is not ours)
    assert [c.get("message") for c in reported if "StreamReaderProtocol" not in str(c.get("message"))] == []


async def fetch(pool: H1Pool, url: str, **kw) -> tuple[int, bytes]:
    r = await pool.request("POST", url, {"content-type": "application/json"}, b"{}", kw.pop("timeout", 2.0))
    return r.status, await r.read()


# ---------------------------------------------------------------------------- keep-alive


async def test_keepalive_reuses_the_connection(pools):
    pool = pools()
    async with RawServer(keepalive_handler) as srv:
        got = [await fetch(pool, srv.url) for _ in range(3)]
        assert got == [(200, b"conn=1 req=1"), (200, b"conn=1 req=2"), (200, b"conn=1 req=3")]
        assert srv.opened == 1 and pool.stats() == {"open": 1, "idle": 1, "waiting": 0}


async def test_request_line_host_and_headers(pools):
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    async def handler(reader, writer, conn):
        while (req := await read_request(reader)) is not None:
            seen.append(req)
            writer.write(ok(b"{}"))

    pool = pools()
    async with RawServer(handler) as srv:
        r = await pool.request("POST", f"http://127.0.0.1:{srv.port}/v1/chat/completions?api-version=1",
                               {"content-type": "application/json", "authorization": "Bearer k"}, b'{"a":1}', 1.0)
        assert await r.read() == b"{}"
        r = await pool.request("POST", f"http://u:p@127.0.0.1:{srv.port}/x", {}, b"", 1.0)
        await r.read()
    line, headers, body = seen[0]
    assert line == b"POST /v1/chat/completions?api-version=1 HTTP/1.1" and body == b'{"a":1}'
    assert headers == {b"host": b"127.0.0.1:%d" % srv.port, b"content-length": b"7",
                       b"content-type": b"application/json", b"authorization": b"Bearer k"}
    assert seen[1][2] == b"" and seen[1][1][b"authorization"] == b"Basic dTpw"  # credentials from the URL


async def test_stale_keepalive_connection_is_retried_once_on_a_new_one(pools):
    """The server closes a kept-alive connection as the next request arrives (its idle
    timeout racing our request): the request goes again on a new connection."""

    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(ok(b"conn=%d" % conn))
        await writer.drain()
        await read_request(reader)  # the second request on this connection: closed unanswered

    pool = pools()
    async with RawServer(handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"conn=1")
        assert await fetch(pool, srv.url) == (200, b"conn=2")
        assert srv.opened == 2


async def test_a_new_connection_closed_unanswered_is_not_retried(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)

    pool = pools()
    async with RawServer(handler) as srv:
        with pytest.raises(TransportError) as ei:
            await fetch(pool, srv.url)
        assert ei.value.reason == "connection_reset" and srv.opened == 1


async def test_stale_retry_happens_once(pools):
    """The retry's new connection failing the same way is reported, not retried again."""

    async def handler(reader, writer, conn):
        await read_request(reader)
        if conn == 1:
            writer.write(ok(b"first"))
            await writer.drain()
            await read_request(reader)

    pool = pools()
    async with RawServer(handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"first")
        with pytest.raises(TransportError) as ei:
            await fetch(pool, srv.url)
        assert ei.value.reason == "connection_reset" and srv.opened == 2


async def test_idle_connection_closed_by_the_server_is_not_reused(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(ok(b"conn=%d" % conn))
        await writer.drain()  # then close (idle timeout)

    pool = pools()
    async with RawServer(handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"conn=1")
        await asyncio.sleep(0.05)
        assert pool.stats()["open"] == 0
        assert await fetch(pool, srv.url) == (200, b"conn=2")


async def test_connection_close_is_not_reused(pools, web_server):
    async def h(request: web.Request) -> web.Response:
        resp = web.Response(text=str(request.transport.get_extra_info("peername")[1]))
        resp.force_close()
        return resp

    app = web.Application()
    app.router.add_post("/", h)
    base = await web_server(app)
    pool = pools()
    (s1, p1), (s2, p2) = await fetch(pool, base + "/"), await fetch(pool, base + "/")
    assert s1 == s2 == 200 and p1 != p2
    assert pool.stats()["open"] == 0


async def test_http10_answer_is_not_reused(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    pool = pools()
    async with RawServer(handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"ok")
        assert await fetch(pool, srv.url) == (200, b"ok")
        assert srv.opened == 2


async def test_idle_connections_expire(pools):
    pool = pools(keepalive_expiry=0.1)
    async with RawServer(keepalive_handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"conn=1 req=1")
        assert await fetch(pool, srv.url) == (200, b"conn=1 req=2")
        await asyncio.sleep(0.3)
        assert pool.stats() == {"open": 0, "idle": 0, "waiting": 0}  # closed by the sweep
        assert await fetch(pool, srv.url) == (200, b"conn=2 req=1")


async def test_at_most_keepalive_idle_connections(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            await asyncio.sleep(0.05)
            writer.write(ok(b"x"))

    pool = pools(keepalive=1)
    async with RawServer(handler) as srv:
        await asyncio.gather(*(fetch(pool, srv.url) for _ in range(3)))
        assert srv.opened == 3 and pool.stats()["idle"] == 1
        await asyncio.sleep(0.05)
        assert srv.open == 1


# ---------------------------------------------------------------------------- bodies


async def test_content_length_and_chunked_bodies(pools, web_server):
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=iso-8859-1"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(b"data: %d\n\n" % i)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"echo": (await request.read()).decode()})

    app = web.Application()
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/plain", plain)
    base = await web_server(app)
    pool = pools()
    r = await pool.request("POST", base + "/plain", {}, b"hello", 1.0)
    assert r.status == 200 and r.content_type == "application/json; charset=utf-8" and r.charset == "utf-8"
    assert await r.read() == b'{"echo": "hello"}'
    assert await r.read() == b'{"echo": "hello"}'  # cached
    r = await pool.request("POST", base + "/chunked", {}, b"", 1.0)
    assert r.headers["transfer-encoding"] == "chunked" and r.charset == "iso-8859-1"
    chunks = [c async for c in r.iter_bytes()]
    assert len(chunks) >= 2  # arrived over time, given as they came
    assert b"".join(chunks) == b"".join(b"data: %d\n\n" % i for i in range(5))
    r = await pool.request("POST", base + "/chunked", {}, b"", 1.0)
    assert (await r.read()).count(b"data:") == 5
    assert pool.stats()["open"] == 1  # one connection served all three


async def test_body_until_close(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"part two")
        await writer.drain()

    pool = pools()
    async with RawServer(handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"part one, part two")
        r = await pool.request("POST", srv.url, {}, b"", 1.0)
        assert [c async for c in r.iter_bytes()] == [b"part one, ", b"part two"]
        assert srv.opened == 2 and pool.stats()["open"] == 0


async def test_no_body_statuses(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")

    pool = pools()
    async with RawServer(handler) as srv:
        for _ in range(2):
            r = await pool.request("POST", srv.url, {}, b"", 1.0)
            assert r.status == 204 and r.raw_headers == [(b"X-A", b"1")] and await r.read() == b""
        assert srv.opened == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_bodies_are_decoded(pools, web_server, encoding):
    text = b'{"choices": [' + b'{"text": "words words words"}, ' * 500 + b"{}]}"
    if encoding == "gzip":
        data = gzip.compress(text)
    elif encoding == "deflate":
        data = zlib.compress(text)
    else:
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = c.compress(text) + c.flush()
    header = encoding.removeprefix("raw-")

    async def h(request: web.Request) -> web.Response:
        return web.Response(body=data, headers={"content-encoding": header, "content-type": "application/json"})

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-encoding": header})
        await resp.prepare(request)
        for i in range(0, len(data), 100):
            await resp.write(data[i:i + 100])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/", h)
    app.router.add_post("/s", streamed)
    base = await web_server(app)
    pool = pools()
    assert await fetch(pool, base + "/") == (200, text)
    r = await pool.request("POST", base + "/s", {}, b"", 1.0)
    assert b"".join([c async for c in r.iter_bytes()]) == text


async def test_undecodable_gzip_body(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(ok(b"not gzip at all", b"Content-Encoding: gzip\r\n"))

    pool = pools()
    async with RawServer(handler) as srv:
        with pytest.raises(TransportError) as ei:
            await fetch(pool, srv.url)
        assert ei.value.reason == "protocol_error"


async def test_error_statuses_keep_body_and_headers(pools, web_server):
    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"})

    async def crash(request: web.Request) -> web.Response:
        return web.Response(status=500, text="EngineCore died", headers={"X-Trace": "a", "x-trace": "b"})

    app = web.Application()
    app.router.add_post("/429", limited)
    app.router.add_post("/500", crash)
    base = await web_server(app)
    pool = pools()
    r = await pool.request("POST", base + "/429", {}, b"{}", 1.0)
    assert r.status == 429 and r.headers["retry-after"] == "7"
    assert await r.read() == b'{"error": {"message": "slow down"}}'
    r = await pool.request("POST", base + "/500", {}, b"{}", 1.0)
    assert r.status == 500 and await r.read() == b"EngineCore died"
    assert r.headers.get_list("x-trace") == ["a", "b"] and (b"X-Trace", b"a") in r.raw_headers
    assert pool.stats()["open"] == 1  # error answers do not cost the connection


async def test_flow_control_pauses_reading_until_drained(pools):
    size = 8 * HIGH_WATER

    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()

    pool = pools()
    async with RawServer(handler) as srv:
        r = await pool.request("POST", srv.url, {}, b"", 2.0)
        await asyncio.sleep(0.3)  # not reading: the client stops reading from the socket
        assert r._conn is not None and r._conn.paused
        assert r._buffered < 2 * HIGH_WATER
        total = 0
        async for chunk in r.iter_bytes():
            total += len(chunk)
        assert total == size


async def test_large_body_with_read(pools):
    size = 5 * HIGH_WATER

    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size)
        await writer.drain()

    pool = pools()
    async with RawServer(handler) as srv:
        status, body = await fetch(pool, srv.url)
        assert status == 200 and len(body) == size


# ---------------------------------------------------------------------------- failures


async def test_connection_refused(pools):
    pool = pools()
    with pytest.raises(TransportError) as ei:
        await fetch(pool, f"http://127.0.0.1:{free_port()}/v1")
    assert ei.value.reason == "connection_refused"
    assert pool.stats() == {"open": 0, "idle": 0, "waiting": 0}


async def test_unresolvable_host(pools):
    pool = pools()
    with pytest.raises(TransportError) as ei:
        await fetch(pool, "http://no-such-host.invalid/v1")
    assert ei.value.reason == "connect_error"


def _full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket that accepts nothing, its backlog filled: new connections hang in SYN."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fillers: list[socket.socket] = []
    for _ in range(16):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(srv.getsockname())
        fillers.append(c)
    time.sleep(0.05)
    return srv, fillers


async def test_connect_timeout(pools):
    srv, fillers = _full_backlog_listener()
    pool = pools()
    try:
        t0 = time.monotonic()
        with pytest.raises(TransportError) as ei:
            await fetch(pool, f"http://127.0.0.1:{srv.getsockname()[1]}/v1", timeout=0.2)
        assert ei.value.reason == "connect_timeout"
        assert time.monotonic() - t0 < 2.0
        assert pool.stats()["open"] == 0
    finally:
        for s in [srv, *fillers]:
            s.close()


async def test_server_dies_mid_body(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        if conn == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()

    pool = pools()
    async with RawServer(handler) as srv:
        with pytest.raises(TransportError) as ei:
            await fetch(pool, srv.url)
        assert ei.value.reason == "stream_cut"
        r = await pool.request("POST", srv.url, {}, b"", 1.0)
        got = []
        with pytest.raises(TransportError) as ei:
            async for c in r.iter_bytes():
                got.append(c)
        assert ei.value.reason == "stream_cut" and got == [b"hello"]
        assert pool.stats()["open"] == 0


async def test_connection_reset_before_the_answer(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")  # part of a head, then gone
        await writer.drain()

    pool = pools()
    async with RawServer(handler) as srv:
        with pytest.raises(TransportError) as ei:
            await fetch(pool, srv.url)
        assert ei.value.reason == "connection_reset"


@pytest.mark.parametrize("garbage", [b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"])
async def test_garbage_answer_is_a_protocol_error(pools, garbage):
    async def handler(reader, writer, conn):
        await read_request(reader)
        writer.write(garbage)
        await writer.drain()
        await reader.read()

    pool = pools()
    async with RawServer(handler) as srv:
        with pytest.raises(TransportError) as ei:
            await fetch(pool, srv.url)
        assert ei.value.reason == "protocol_error"
        assert pool.stats()["open"] == 0


async def test_bytes_after_the_answer_close_the_connection(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            writer.write(ok(b"a") + b"surprise")

    pool = pools()
    async with RawServer(handler) as srv:
        assert await fetch(pool, srv.url) == (200, b"a")
        assert await fetch(pool, srv.url) == (200, b"a")
        assert srv.opened == 2


async def test_cancelled_mid_body_closes_the_connection(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            if conn == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart")
                await writer.drain()
                await reader.read()  # stalls until the client goes away
                return
            writer.write(ok(b"conn=%d" % conn))

    pool = pools()
    async with RawServer(handler) as srv:
        r = await pool.request("POST", srv.url, {}, b"", 1.0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.read(), 0.1)
        assert pool.stats()["open"] == 0
        assert await fetch(pool, srv.url) == (200, b"conn=2")
        await asyncio.sleep(0.05)
        assert srv.open == 1  # the abandoned connection is gone on the server side too


async def test_cancelled_while_waiting_for_the_head(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            if conn == 1:
                await asyncio.sleep(30)
            writer.write(ok(b"conn=%d" % conn))

    pool = pools()
    async with RawServer(handler) as srv:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fetch(pool, srv.url), 0.1)
        assert pool.stats()["open"] == 0
        assert await fetch(pool, srv.url) == (200, b"conn=2")


async def test_aclose_before_the_end_closes_the_connection(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    pool = pools()
    async with RawServer(handler) as srv:
        r = await pool.request("POST", srv.url, {}, b"", 1.0)
        async for chunk in r.iter_bytes():
            assert chunk == b"first"
            break
        await r.aclose()
        await r.aclose()  # idempotent
        assert pool.stats()["open"] == 0
        r = await pool.request("POST", srv.url, {}, b"", 1.0)
        assert await r.read() == b"firstsecond"
        await r.aclose()  # after the end: nothing to close, the connection stays pooled
        assert srv.opened == 2 and pool.stats() == {"open": 1, "idle": 1, "waiting": 0}


async def test_header_injection_is_refused(pools):
    pool = pools()
    for headers in ({"x-a": "1\r\nX-Evil: 1"}, {"x-a": "1\nb"}, {"bad name": "1"}, {"content-length": "3"}):
        with pytest.raises(ValueError):
            await pool.request("POST", "http://127.0.0.1:9/", headers, b"", 1.0)
    with pytest.raises(ValueError):
        await pool.request("GET /x HTTP/1.1\r\n", "http://127.0.0.1:9/", {}, b"", 1.0)
    with pytest.raises(ValueError):
        await pool.request("POST", "ftp://127.0.0.1/", {}, b"", 1.0)
    assert pool.stats()["open"] == 0


async def test_closed_pool_refuses_requests(pools):
    pool = pools()
    await pool.aclose()
    with pytest.raises(PoolClosedError, match="closed"):
        await pool.request("POST", "http://127.0.0.1:9/", {}, b"", 1.0)


async def test_aclose_fails_requests_in_flight(pools):
    async def handler(reader, writer, conn):
        await read_request(reader)
        await asyncio.sleep(30)

    pool = pools()
    async with RawServer(handler) as srv:
        task = asyncio.create_task(fetch(pool, srv.url))
        await asyncio.sleep(0.05)
        await pool.aclose()
        with pytest.raises(TransportError):
            await task


# ---------------------------------------------------------------------------- limits


async def test_connection_limit(pools):
    async def handler(reader, writer, conn):
        while (await read_request(reader)) is not None:
            await asyncio.sleep(0.03)
            writer.write(ok(b"conn=%d" % conn))

    pool = pools(max_connections=2)
    async with RawServer(handler) as srv:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, pool.stats()["open"])
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        got = await asyncio.gather(*(fetch(pool, srv.url) for _ in range(5)))
        watcher.cancel()
        assert all(s == 200 for s, _ in got)
        assert srv.opened == 2 and srv.max_open == 2 and most <= 2
        assert pool.stats() == {"open": 2, "idle": 2, "waiting": 0}


async def test_connection_limit_across_origins_and_cancelled_waiters(pools):
    async def slow(reader, writer, conn):
        while (await read_request(reader)) is not None:
            await asyncio.sleep(0.1)
            writer.write(ok(b"slow"))

    pool = pools(max_connections=1)
    async with RawServer(slow) as a, RawServer(keepalive_handler) as b:
        first = asyncio.create_task(fetch(pool, a.url))
        await asyncio.sleep(0.02)
        cancelled = asyncio.create_task(fetch(pool, b.url))
        other = asyncio.create_task(fetch(pool, b.url))
        await asyncio.sleep(0.02)
        assert pool.stats()["waiting"] == 2
        cancelled.cancel()
        assert await first == (200, b"slow")
        assert await other == (200, b"conn=1 req=1")  # a's idle connection made room for b
        assert a.max_open + b.max_open <= 2 and pool.stats()["open"] == 1
        assert cancelled.cancelled()


# ---------------------------------------------------------------------------- TLS, IPv6


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_tls(pools, web_server, tmp_path):
    cert_pem, key_pem = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda _obj, name, _ctx: sni.append(name)  # type: ignore[assignment,misc]

    async def h(request: web.Request) -> web.Response:
        return web.Response(text=f"tls={request.secure}")

    app = web.Application()
    app.router.add_post("/", h)
    base = await web_server(app, ssl_context=server_ctx)
    trusting = pools(ssl_context=ssl.create_default_context(cadata=cert_pem.decode()))
    assert await fetch(trusting, base + "/") == (200, b"tls=True")
    assert await fetch(trusting, base.replace("127.0.0.1", "localhost") + "/") == (200, b"tls=True")
    assert await fetch(trusting, base + "/") == (200, b"tls=True")
    assert sni == [None, "localhost"]  # SNI for a name (none for an IP); the third call reused a connection
    assert trusting.stats()["open"] == 2

    default = pools()
    with pytest.raises(TransportError) as ei:
        await fetch(default, base + "/")
    assert ei.value.reason == "connect_error" and "certificate verification failed" in ei.value.detail
    assert default.stats()["open"] == 0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_ipv6_literal_host(pools, web_server):
    async def h(request: web.Request) -> web.Response:
        return web.Response(text=request.headers["host"])

    app = web.Application()
    app.router.add_post("/", h)
    base = await web_server(app, host="::1")
    pool = pools()
    status, body = await fetch(pool, base + "/")
    assert status == 200 and body == base.removeprefix("http://").encode()


# ---------------------------------------------------------------------------- make_client


async def test_the_native_client_carries_a_pool_closed_with_it():
    from policyengine.adapters.http import aiohttp_session, make_client, native_pool

    client = make_client()  # "native" is the default
    pool = native_pool(client)
    assert pool is not None and aiohttp_session(client) is None
    await client.aclose()
    assert pool.closed and native_pool(client) is None
    async with make_client("native") as client:
        pool = native_pool(client)
    assert pool is not None and pool.closed
    for other in ("aiohttp", "httpx"):
        client = make_client(other)  # type: ignore[arg-type]
        assert native_pool(client) is None
        await client.aclose()
