"""The hot path: an allowed 2026-07-28 tools/call answered without the SDK's server machinery.

On the 2026-07-28 protocol a tools/call is one self-contained POST. The SDK's modern entry
(`mcp.server._streamable_http_modern`) answers it through a per-request task group (the
handler and a disconnect watcher), a memory stream, its middleware chain and pydantic models
both ways, behind FastAPI's route matching. Measured with benchmarks/mcp_bench.py (one run,
load 7.1): the gateway with `fast_path: false` spent 4.07 ms of CPU per call and added
+5.41 ms at p50; with this path (and `wire` behind it) 1.17 ms and +1.53 ms; a do-nothing
proxy on the SDK 3.13 ms and +4.19 ms (benchmarks/mcp.md). This path does, for the calls that
are only decided and forwarded, what that entry does, with the SDK's own checks:

1. the transport security check (Host/Origin, when configured), the Accept header (JSON and
   SSE, as `check_accept_headers` reads it), one copy of each routing header, and the envelope
   ladder `classify_inbound_request` (protocol version, client capabilities, `Mcp-Method` /
   `Mcp-Name` equal to the body);
2. the params validated as the SDK validates them (`validate_client_request`), and the
   `Mcp-Param-*` headers against the tool's input schema when it declares `x-mcp-header`
   arguments (without any, the SDK's check has nothing to compare);
3. the call decided and its decision row committed (`McpGateway.decide`, the same as on the
   SDK's path; a call its settings let go first has its row recorded as soon as the request
   is written, so the commit runs while the upstream works); allowed -> forwarded
   (`McpGateway.forward_wire`) to an upstream on the raw JSON-RPC path, and the answer
   written as `application/json`.

Anything else goes to the SDK untouched, with the body replayed: a request this path does not
take (another method, a handshake-era session, a progress token, a confirmation retry, an
upstream called through the SDK, anything odd) before it is decided; a decided call that is
not a plain forward (denied, held, its upstream down) after, with its `Prepared` in the scope
(`HANDED_OVER`) so it is decided and logged once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

import mcp_types as types
import orjson
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PROTOCOL_VERSION_HEADER,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import SERVER_INFO_META_KEY
from mcp_types import methods as _methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request

from policyengine.mcpgate.server import HANDED_OVER, McpGateway
from policyengine.types import Principal

__all__ = ["FastPath"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_PV = MCP_PROTOCOL_VERSION_HEADER.lower().encode("ascii")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastPath:
    """Answers the allowed tools/calls it can take; hands the rest to the SDK's session manager.

    A client that disconnects while its call is forwarded cancels it, as the 2026-07-28
    protocol says a disconnect on streamable HTTP does: the forward is cancelled (which closes
    the upstream request, the same signal one hop on) and the call's outcome row says
    `cancelled`; its decision row is committed all the same (recorded then if the call was
    cancelled before its request was written)."""

    def __init__(self, gateway: McpGateway, security: TransportSecuritySettings | None, max_body: int) -> None:
        self.gateway, self.max_body = gateway, max_body
        self._security = TransportSecurityMiddleware(security) if security is not None else None
        self._annotated: dict[int, tuple[types.Tool, dict[str, Any] | None]] = {}

    def _annotated_schema(self, shown: str) -> dict[str, Any] | None:
        """The tool's input schema when it declares `x-mcp-header` arguments (whose `Mcp-Param-*`
        headers must agree with the body), else None: nothing to check. Worked out once per
        listed tool."""
        hit = self.gateway.upstreams.routes().get(shown)
        if hit is None:
            return None
        tool = hit[1]
        cached = self._annotated.get(id(tool))
        if cached is None or cached[0] is not tool:
            schema = dict(tool.input_schema)
            cached = (tool, schema if x_mcp_header_map(schema) else None)
            if len(self._annotated) > 4096:
                self._annotated.clear()
            self._annotated[id(tool)] = cached
        return cached[1]

    async def handle(self, p: Principal, scope: dict[str, Any], receive: Receive, send: Send,
                     sdk: Callable[[dict[str, Any], Receive, Send], Awaitable[None]]) -> None:
        """Serve one authenticated request at /mcp: here when it is a plain forward, else by `sdk`."""
        t0 = time.perf_counter()
        if scope["method"] != "POST" or not self.gateway.settings.fast_path:
            return await sdk(scope, receive, send)
        pv = None
        for k, v in scope["headers"]:
            if k == _PV:
                pv = v.decode("latin-1")
                break
        if pv is None or pv in HANDSHAKE_PROTOCOL_VERSIONS:  # a handshake-era session: the SDK's
            return await sdk(scope, receive, send)
        body, more = await _read(receive, self.max_body)
        replay = _replayed(body, more, receive)
        if more:  # over the limit (the SDK answers 413) or a body that does not end
            return await sdk(scope, replay, send)
        req = await self._checked(scope, body)
        if req is None:
            return await sdk(scope, replay, send)
        rid, params = req
        name, args = params["name"], dict(params.get("arguments") or {})
        g = self.gateway
        route = g.upstreams.route(name)
        if route is None or not route.upstream.raw:
            return await sdk(scope, replay, send)
        try:
            pre = await g.decide(p, name, args, dict(params.get("_meta") or {}), _session_id(scope), t0,
                                 send_first=True)
            if pre.call.decision.effect != "allow" or pre.route is None or pre.call.resume_id is not None:
                await pre.confirm()  # durable before anything is refused or held
                scope[HANDED_OVER] = pre  # decided and logged: the SDK's path acts on it
                return await sdk(scope, replay, send)
            watch = _DisconnectWatch(receive)
            try:
                result, log_outcome = await g.forward_wire(pre)
            except asyncio.CancelledError:
                if not watch.cancelled_us():
                    raise
                g.cancelled(pre, "the client disconnected before the answer")
                return None
            finally:
                watch.stop()
        except MCPError as exc:  # the decision log cannot take the row: nothing is answered but this
            return await _write(send, ERROR_CODE_HTTP_STATUS.get(exc.code, 200),
                                {"jsonrpc": "2.0", "id": rid, "error": {"code": exc.code, "message": exc.message}})
        if result.get("resultType") is None:
            result["resultType"] = "complete"
        meta = result.get("_meta")
        if not isinstance(meta, dict):
            meta = result["_meta"] = {}
        if meta.get(SERVER_INFO_META_KEY) is None:
            meta[SERVER_INFO_META_KEY] = g.server.server_info_stamp
        try:
            await _write(send, 200, {"jsonrpc": "2.0", "id": rid, "result": result})
        finally:
            log_outcome()  # after the answer is on its way: off the call's latency

    async def _checked(self, scope: dict[str, Any], body: bytes) -> tuple[Any, dict[str, Any]] | None:
        """(request id, params) of a tools/call that passes every check the SDK's modern entry
        makes and that this path can finish; None for anything else (the SDK answers it)."""
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(decoded, dict) or decoded.get("method") != "tools/call" or decoded.get("jsonrpc") != "2.0":
            return None
        rid = decoded.get("id")
        if isinstance(rid, bool) or not isinstance(rid, str | int) or set(decoded) - {"jsonrpc", "id", "method",
                                                                                     "params"}:
            return None
        params = decoded.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            return None
        args = params.get("arguments")
        meta = params.get("_meta")
        if (args is not None and not isinstance(args, dict)) or not isinstance(meta, dict) \
                or "progressToken" in meta or params.get("inputResponses") is not None \
                or params.get("requestState") is not None:
            return None  # progress needs the SSE answer; a confirmation retry is the SDK path's
        if self._security is not None \
                and await self._security.validate_request(Request(scope), is_post=True) is not None:
            return None
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        accept = next((v for k, v in raw_headers if k == "accept"), "")
        if not _accepts_json_and_sse(accept) or find_duplicated_routing_header(raw_headers) is not None:
            return None
        verdict = classify_inbound_request(decoded, headers=dict(raw_headers))
        if isinstance(verdict, InboundLadderRejection):
            return None
        try:
            _methods.validate_client_request("tools/call", verdict.protocol_version, params)
        except (ValidationError, KeyError):
            return None
        schema = self._annotated_schema(params["name"])
        if schema is not None and validate_mcp_param_headers(schema, args or {}, Headers(raw=scope["headers"])) \
                is not None:
            return None
        return rid, params


@lru_cache(maxsize=256)
def _accepts_json_and_sse(accept: str) -> bool:
    """The Accept header (its first copy) names JSON and SSE (wildcards count), as the SDK's
    entry requires. A pure function of the header: cached, as clients send the same few."""
    kinds = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if "*/*" in kinds:
        return True
    return bool(kinds & {"application/json", "application/*"}) and bool(kinds & {"text/event-stream", "text/*"})


def _session_id(scope: dict[str, Any]) -> str | None:
    for k, v in scope["headers"]:
        if k == b"mcp-session-id":
            return v.decode("latin-1")[:200] or None
    return None


async def _write(send: Send, status: int, msg: dict[str, Any]) -> None:
    out = orjson.dumps(msg)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body, and whether more follows (it passed `limit`, which stops the reading)."""
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return b"".join(parts), False
        chunk = msg.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not msg.get("more_body", False):
            return b"".join(parts), False
        if size > limit:
            return b"".join(parts), True


class _DisconnectWatch:
    """Cancels the task that creates it when the client disconnects (the body has been read
    whole, so the next message `receive` gives is the disconnect). One task beside the caller,
    which awaits its own work directly; `cancelled_us()` tells that cancellation from any other
    and takes it back, `stop()` ends the watch."""

    __slots__ = ("_fired", "_task")

    def __init__(self, receive: Receive) -> None:
        self._fired = False
        owner = asyncio.current_task()
        assert owner is not None

        async def watch() -> None:
            for _ in range(64):
                if (await receive())["type"] == "http.disconnect":
                    self._fired = True
                    owner.cancel()
                    return
            await asyncio.Event().wait()  # a server that keeps sending anything else: watch no more

        self._task = asyncio.get_running_loop().create_task(watch())

    def cancelled_us(self) -> bool:
        if self._fired:
            owner = asyncio.current_task()
            if owner is not None:
                owner.uncancel()
        return self._fired

    def stop(self) -> None:
        self._task.cancel()


def _replayed(body: bytes, more: bool, receive: Receive) -> Receive:
    """A `receive` that gives the body read so far once, then what the client sends next."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
