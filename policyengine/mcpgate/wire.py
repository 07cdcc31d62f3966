"""tools/call to a 2026-07-28 streamable HTTP upstream as one raw JSON-RPC POST.

On the 2026-07-28 protocol a request is a self-contained POST (no session, the protocol
version, client info and capabilities in `params._meta`), so once the SDK's `Client` has
connected and found the server speaks it, a tools/call needs no SDK machinery: the body is
written with orjson and sent on a kept-alive connection of the lean HTTP/1.1 client the
gateway's model calls use (`policyengine.adapters.h1`), and the answer is read as JSON (or as
an SSE stream when the server sends notifications first). Measured with
benchmarks/mcp_profile.py (same run, load 5.8): the SDK client's call cost 1.99 ms of CPU per
call and 3.47 ms p50, this path 0.16 ms and 1.02 ms. The SDK's cost is its dispatcher (about
14 anyio cancel scopes and a task per call), httpcore writing the headers and the body in two
socket sends (two wake-ups of the server), pydantic models both ways, and its check of the
result against the tool's output schema, which the calling client repeats anyway
(benchmarks/mcp.md).

The request is what the SDK's client sends: the same headers (`MCP-Protocol-Version`,
`Mcp-Method`, `Mcp-Name`, the `Mcp-Param-*` headers the tool's input schema asks for via
`x-mcp-header`) and the same `_meta` envelope.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from mcp.shared.inbound import (
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY

from policyengine.adapters.base import TransportError
from policyengine.adapters.h1 import H1Pool

__all__ = ["RawRefused", "RawToolCaller", "WireBroken"]

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
_MAX_SSE_BYTES = 16 << 20  # one answer's stream; a server that sends more is broken


class WireBroken(Exception):
    """No usable answer: the connection failed, or the server answered what is not JSON-RPC."""


class RawRefused(Exception):
    """The server answered the call with a JSON-RPC error (`code`, `message`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RawToolCaller:
    """tools/call on one upstream URL over `pool`'s kept-alive connections.

    `headers` are the upstream's own (resolved `env:` values); `protocol_version` is what the
    SDK's client negotiated; `schemas` maps a tool name to its input schema (for the
    `Mcp-Param-*` headers), refreshed with each listing."""

    def __init__(self, pool: H1Pool, url: str, headers: Mapping[str, str], protocol_version: str,
                 client_info: dict[str, Any], timeout_s: float) -> None:
        self.pool, self.url, self.timeout_s = pool, url, timeout_s
        self._headers = {**headers, "accept": "application/json, text/event-stream",
                         "content-type": "application/json", "mcp-protocol-version": protocol_version,
                         "mcp-method": "tools/call"}
        self._meta = {PROTOCOL_VERSION_META_KEY: protocol_version, CLIENT_INFO_META_KEY: client_info,
                      CLIENT_CAPABILITIES_META_KEY: {}}
        self._ids = itertools.count(1)
        self._param_maps: dict[str, dict[tuple[str, ...], str]] = {}

    def set_schemas(self, schemas: Mapping[str, Any]) -> None:
        """The tools' input schemas as last listed (which arguments travel as `Mcp-Param-*` headers)."""
        maps = {}
        for name, schema in schemas.items():
            ok = isinstance(schema, dict) and find_invalid_x_mcp_header(schema) is None
            m = x_mcp_header_map(schema) if ok else {}
            if m:
                maps[name] = m
        self._param_maps = maps

    async def call(self, tool: str, arguments: Mapping[str, Any], *, progress: Progress | None = None,
                   progress_token: str | int | None = None, on_sent: Callable[[], None] | None = None,
                   ) -> dict[str, Any]:
        """The call's result object as the server sent it. Raises `RawRefused` for a JSON-RPC
        error, `WireBroken` when there is no usable answer, TimeoutError after `timeout_s`.
        `on_sent` runs once when the request has been written, before the answer is awaited
        (`H1Pool.request`)."""
        rid = next(self._ids)
        meta = self._meta if progress_token is None else {**self._meta, "progressToken": progress_token}
        body = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                             "params": {"name": tool, "arguments": arguments, "_meta": meta}})
        headers = {**self._headers, "mcp-name": encode_header_value(tool)}
        pmap = self._param_maps.get(tool)
        if pmap:
            headers.update(mcp_param_headers(pmap, arguments))
        async with asyncio.timeout(self.timeout_s):
            try:
                resp = await self.pool.request("POST", self.url, headers, body, connect_timeout=10.0, on_sent=on_sent)
                try:
                    if resp.content_type.startswith("text/event-stream"):
                        msg = await _from_sse(resp, rid, progress)
                    else:
                        raw = await resp.read()
                        msg = _parse(raw, resp.status)
                finally:
                    await resp.aclose()
            except TransportError as exc:
                raise WireBroken(str(exc)) from None
        return _result(msg, rid, resp.status)


def _parse(raw: bytes, status: int) -> dict[str, Any]:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WireBroken(f"HTTP {status} with a body that is not JSON ({len(raw)} bytes)") from None
    if not isinstance(msg, dict):
        raise WireBroken(f"HTTP {status} with JSON that is not a JSON-RPC message")
    return msg


def _result(msg: dict[str, Any], rid: int, status: int) -> dict[str, Any]:
    err = msg.get("error")
    if isinstance(err, dict):
        code = err.get("code")
        raise RawRefused(code if isinstance(code, int) else -32603, str(err.get("message") or "error"))
    result = msg.get("result")
    if msg.get("id") != rid or not isinstance(result, dict):
        raise WireBroken(f"HTTP {status}: not the JSON-RPC response to request {rid}")
    content = result.get("content")
    if content is not None and not isinstance(content, list):
        raise WireBroken("the result's content is not a list")
    return result


async def _from_sse(resp: Any, rid: int, progress: Progress | None) -> dict[str, Any]:
    """The response to `rid` from an SSE stream; progress notifications before it go to `progress`."""
    buf = b""
    seen = 0
    async for chunk in resp.iter_bytes():
        seen += len(chunk)
        if seen > _MAX_SSE_BYTES:
            raise WireBroken(f"the answer's event stream passed {_MAX_SSE_BYTES} bytes")
        buf = (buf + chunk).replace(b"\r\n", b"\n")  # a CRLF split between two chunks too
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
            if not data:
                continue  # a comment (keepalive ping) or an event without data
            msg = _parse(data, resp.status)
            if "method" in msg:
                params = msg.get("params") or {}
                if msg["method"] == "notifications/progress" and progress is not None and isinstance(params, dict):
                    p = params.get("progress")
                    if isinstance(p, int | float):
                        total = params.get("total")
                        message = params.get("message")
                        await progress(p, total if isinstance(total, int | float) else None,
                                       message if isinstance(message, str) else None)
                continue
            return msg
    raise WireBroken("the event stream ended without the response")
