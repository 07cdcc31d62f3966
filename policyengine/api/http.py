"""HTTP in: the service's ASGI entry, reading requests, and who is calling.

- `PolicyEngineApp`: FastAPI, plus the hot POST routes (`/v1/evaluate`,
  `/v1/chat/completions`) and hot ASGI mounts (`/mcp`, which reads and bounds its own
  bodies) served straight from the ASGI call: no middleware chain, no route
  matching over every registered route, no dependency solving. Measured with
  benchmarks/api_bench.py (benchmarks/service.md, "Second pass"): this, with two smaller
  changes, took evaluate from 0.67-0.70 to 0.44 ms of CPU per request on one core. Every
  other route (the documented twins of the hot ones included) goes through FastAPI. Either
  way an engine error becomes its response through `policyengine.api.errors.to_response`; an
  unexpected exception becomes a 500 with an OpenAI-shaped body and a logged traceback.
- `headers`, `json_object`: a request's headers once as a dict; its body as a JSON object,
  read with a running size count against `max_body_bytes`.
- `authenticate`, `require_principal`: the caller's API key (`Authorization: Bearer <token>`,
  the OpenAI SDK's `api_key`, or `X-API-Key: <token>`), looked up through the runtime's
  `KeyCache`; the Principal it stands for is the only source of the caller's tenant, roles
  and groups.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from policyengine.api.dialects import DialectError
from policyengine.api.errors import ApiError, AuthError, internal_error, to_response
from policyengine.errors import PolicyEngineError
from policyengine.types import ROLES, Principal

T = TypeVar("T")

__all__ = ["PolicyEngineApp", "authenticate", "headers", "json_object", "require_principal", "too_deep"]

log = logging.getLogger("policyengine.api")

Handler = Callable[[Request], Awaitable[Response]]

# With `auth_disabled` (development only, loopback only) the caller is trusted with everything.
DEV_ATTRIBUTES = {"trusted_signals": True, "trusted_fields": True}


# `PolicyEngineApp.quiet()`: at most this many HTTP requests in flight, the caller's own and one more
# (an MCP client's standing GET stream, a health probe). More, and a commit that blocks the loop
# for an fsync would hold the others up: the decision log's writer thread commits instead.
QUIET_IN_FLIGHT = 2


class PolicyEngineApp(FastAPI):
    """FastAPI, plus a dictionary of hot POST routes served without the middleware stack.

    `in_flight` counts the HTTP requests being served (a streamed response until its last byte)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hot_routes: dict[str, Handler] = {}
        self.hot_asgi: dict[str, Any] = {}
        self.in_flight = 0

    def quiet(self) -> bool:
        """Whether the loop serves next to nothing now (`QUIET_IN_FLIGHT` requests or fewer)."""
        return self.in_flight <= QUIET_IN_FLIGHT

    def add_hot_route(self, path: str, handler: Handler) -> None:
        """Serve POST `path` with `handler`, ahead of FastAPI's routing."""
        self.hot_routes[path] = handler

    def add_hot_asgi(self, path: str, asgi: Any) -> None:
        """Serve every HTTP request to `path` with the ASGI app `asgi`, ahead of FastAPI's routing
        and its body limit: `asgi` owns reading (and bounding) the body and every answer."""
        self.hot_asgi[path] = asgi

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        self.in_flight += 1  # (counted here, not in a wrapper coroutine: one frame less per request)
        try:
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root):]
            hot = self.hot_asgi.get(path) if self.hot_asgi else None
            if hot is not None:
                scope["app"] = self
                await hot(scope, receive, send)
                return
            if scope["method"] == "POST":
                handler = self.hot_routes.get(path)
                if handler is not None:  # reads its body with json_object (bounded)
                    scope["app"] = self
                    await self._serve(handler, scope, receive, send)
                    return
            receive = await self._bounded(scope, receive, send)
            if receive is None:
                return
            await super().__call__(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _bounded(self, scope: Any, receive: Any, send: Any) -> Any:
        """Every other route's body held to `max_body_bytes`, whether or not the route reads it: a
        declared length over the limit is refused at once; a chunked body is read here with a running
        count (refused as soon as it passes the limit) and replayed to the route. Returns the receive
        callable to use, or None when the request was answered (413) or the client went away."""
        runtime = getattr(self.state, "runtime", None)
        if runtime is None:
            return receive
        limit = runtime.settings.max_body_bytes
        chunked = False
        for k, v in scope.get("headers", ()):
            k = k.lower()
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                await self._too_large(scope, receive, send, f"request body of {int(v)} bytes exceeds the "
                                                            f"limit of {limit}")
                return None
            if k == b"transfer-encoding":
                chunked = True
        if not chunked:  # no body, or one the server holds to its declared length
            return receive
        parts: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return None
            body = msg.get("body", b"")
            size += len(body)
            if size > limit:
                await self._too_large(scope, receive, send, f"request body exceeds the limit of {limit} bytes")
                return None
            parts.append(body)
            if not msg.get("more_body", False):
                break
        replay: list[dict[str, Any]] = [{"type": "http.request", "body": b"".join(parts), "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        return replayed

    @staticmethod
    async def _too_large(scope: Any, receive: Any, send: Any, message: str) -> None:
        await to_response(ApiError(413, message, code="body_too_large"))(scope, receive, send)

    async def _serve(self, handler: Handler, scope: Any, receive: Any, send: Any) -> None:
        try:
            response = await handler(Request(scope, receive))
        except PolicyEngineError as exc:
            response = to_response(exc)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            response = internal_error()
        # An error while the body is being sent (the client went away, a stream broke) reaches
        # uvicorn, which logs it and closes the connection: there is nothing left to answer.
        await response(scope, receive, send)


# ------------------------------------------------------------------------------ reading requests


def headers(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict (lower-case names), built once per request.

    Starlette's `request.headers.get` scans the raw header list on every call; the hot paths
    read a dozen headers per request.
    """
    h = request.scope.get("pe.headers")
    if h is None:
        h = request.scope["pe.headers"] = {k.decode("latin-1").lower(): v.decode("latin-1")
                                           for k, v in request.scope.get("headers", ())}
    return h


async def read_body(request: Request) -> bytes:
    """The request body, read with a running size count against the service's `max_body_bytes`.

    Raises `ApiError` 413 as soon as the body (declared by Content-Length, or counted while
    it streams in, chunked) passes the limit, before buffering more of it.
    """
    limit = request.app.state.runtime.settings.max_body_bytes
    declared = headers(request).get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit}", code="body_too_large")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", code="body_too_large")
        parts.append(part)
    return b"".join(parts)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, read with a running size count against
    `max_body_bytes`. Raises `ApiError` 413 (too large), 415 (not JSON), 400 (empty, invalid
    JSON, not an object)."""
    hdrs = headers(request)
    ctype = hdrs.get("content-type", "")
    if ctype and "json" not in ctype:
        raise ApiError(415, f"Content-Type must be application/json, got {ctype!r}", code="unsupported_media_type")
    raw = await read_body(request)
    if not raw.strip():
        raise ApiError(400, "request body is empty: send a JSON object", code="empty_body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json")
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {_JSON_KINDS.get(type(data), 'a value')}",
                       code="invalid_body")
    depth = getattr(request.app.state.runtime.settings, "max_json_depth", 32)
    if too_deep(data, depth):
        raise ApiError(400, f"request body is nested more than {depth} levels deep", code="body_too_deep")
    return data


def translated(translate: Callable[[dict[str, Any]], T], body: dict[str, Any]) -> T:
    """`translate(body)` (a client dialect's pure translator or validator), with its
    `DialectError` raised as `ApiError` 400 `invalid_request` naming the offending field."""
    try:
        return translate(body)
    except DialectError as exc:
        raise ApiError(400, exc.message, code="invalid_request", param=exc.param) from None


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def too_deep(data: Any, limit: int) -> bool:
    """Whether `data` (parsed JSON) nests objects and arrays more than `limit` levels deep (the
    body itself is level 1). Walks the containers level by level, without recursion."""
    level, depth = [data], 1
    containers = (dict, list)
    while level:
        if depth > limit:
            return True
        below = []
        for obj in level:
            for v in (obj.values() if type(obj) is dict else obj):
                if isinstance(v, containers):
                    below.append(v)
        level, depth = below, depth + 1
    return False


# ------------------------------------------------------------------------------ who is calling


def _token(request: Request) -> str | None:
    h = headers(request)
    auth = h.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    key = h.get("x-api-key")
    return key.strip() if key else None


async def authenticate(request: Request) -> Principal:
    """The caller's Principal; raises `AuthError` 401 when the key is missing, unknown or revoked."""
    runtime = request.app.state.runtime
    settings = runtime.settings
    if settings.auth_disabled:
        return Principal(tenant=settings.dev_tenant, key_id="dev", subject="dev",
                         roles=frozenset(ROLES), groups=frozenset({"*"}), attributes=dict(DEV_ATTRIBUTES))
    token = _token(request)
    if not token:
        raise AuthError(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                        "missing_api_key")
    p = await runtime.key_cache.lookup(token)
    if p is None:
        raise AuthError(401, "invalid or revoked API key", "invalid_api_key")
    return p


def require_principal(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller's Principal, which must hold one of `roles` (admin holds all).

    With no roles, any valid key is accepted. The Principal is authenticated once per request.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; roles are {ROLES}")

    async def dep(request: Request) -> Principal:
        scope = request.scope  # a plain scope key: Starlette's `request.state` builds an object per request
        p = scope.get("pe.principal")
        if p is None:
            p = scope["pe.principal"] = await authenticate(request)
        if roles and not p.has(*roles):
            raise AuthError(403, f"this API key lacks the role for this endpoint (needs one of: "
                                 f"{', '.join(roles)}; has: {', '.join(sorted(p.roles)) or 'none'})",
                            "insufficient_role")
        return p

    return dep
