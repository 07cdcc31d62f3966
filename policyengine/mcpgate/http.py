"""The gateway over streamable HTTP, inside the policyengine service.

`mount(app, gateway)` adds `POST/GET/DELETE /mcp` to a service made by
`policyengine.api.create_app` (served ahead of FastAPI's route matching, as the service's hot
routes are) and runs the gateway (upstream connections, the SDK's session
manager) inside the service's lifespan, after the decision log, the policy set and the
approvals service are up. The service keeps serving everything else: the review pages that
notifications link to, `/v1/approvals`, `/v1/decisions`.

Every request must carry an API key (`Authorization: Bearer <key>` or `X-API-Key`), looked up
in the keys store through the runtime's key cache; the key's tenant scopes the decisions and
approvals its calls make. A missing or unknown key is a 401 with a JSON-RPC error body (and
`WWW-Authenticate: Bearer`); a key without the `app` role is a 403. A session belongs to the
key that opened it: the SDK's session manager answers another key's request for it with 404,
as if it did not exist.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route

from policyengine.mcpgate.fast import FastPath
from policyengine.mcpgate.server import McpGateway
from policyengine.types import ROLES, Principal

__all__ = ["McpHttpApp", "mount"]

PATH = "/mcp"
log = logging.getLogger("policyengine.mcp")


def _token(scope: dict[str, Any]) -> str | None:
    auth = key = None
    for k, v in scope.get("headers", ()):
        if k == b"authorization":
            auth = v.decode("latin-1")
        elif k == b"x-api-key":
            key = v.decode("latin-1")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return key.strip() if key else None


async def _refuse(send: Any, status: int, message: str, code: int | None = None) -> None:
    code = code if code is not None else -32001 if status == 401 else -32003
    body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="policyengine"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class McpHttpApp:
    """ASGI: authenticate the key, then hand the request to the SDK's session manager."""

    def __init__(self, gateway: McpGateway, manager: StreamableHTTPSessionManager,
                 security: TransportSecuritySettings | None = None) -> None:
        self.gateway, self.manager = gateway, manager
        self.fast = FastPath(gateway, security, manager.max_request_body_size)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        rt = self.gateway.rt
        if rt.settings.auth_disabled:
            p = Principal(tenant=rt.settings.dev_tenant, key_id="dev", subject="dev", roles=frozenset(ROLES),
                          groups=frozenset({"*"}), attributes={})
        else:
            token = _token(scope)
            p = await rt.key_cache.lookup(token) if token else None
            if p is None:
                await _refuse(send, 401, "missing, invalid or revoked API key: send Authorization: Bearer <key>")
                return
            if not p.has("app"):
                await _refuse(send, 403, "this API key lacks the app role the MCP gateway needs")
                return
        scope["pe.principal"] = p
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.fast.handle(p, scope, receive, tracked, self._sdk)
        except Exception:
            log.exception("the MCP gateway failed on %s %s", scope["method"], scope["path"])
            if not started:
                await _refuse(tracked, 500, "internal error in the MCP gateway", code=-32603)


    async def _sdk(self, scope: Any, receive: Any, send: Any) -> None:
        p: Principal = scope["pe.principal"]
        # the SDK binds a session to the credential that opened it
        scope["user"] = AuthenticatedUser(AccessToken(token="-", client_id=p.key_id, scopes=[], subject=p.subject,
                                                      claims={"tenant": p.tenant}))
        await self.manager.handle_request(scope, receive, send)


def mount(app: Any, gateway: McpGateway, *, allowed_hosts: list[str] | None = None) -> None:
    """Serve `gateway` at `/mcp` on `app` (a `create_app` service), started with its lifespan.

    `allowed_hosts` (e.g. `["gw.example.com"]`) turns on the SDK's DNS-rebinding protection
    (Host and Origin checked); by default it is off, as the API key already authenticates."""
    security = None
    if allowed_hosts:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts,
                                             allowed_origins=[f"https://{h}" for h in allowed_hosts]
                                             + [f"http://{h}" for h in allowed_hosts])
    manager = StreamableHTTPSessionManager(app=gateway.server, security_settings=security,
                                           max_request_body_size=gateway.rt.settings.max_body_bytes)
    endpoint = McpHttpApp(gateway, manager, security)
    if hasattr(app, "add_hot_asgi"):  # ahead of FastAPI's route matching (benchmarks/mcp.md)
        app.add_hot_asgi(PATH, endpoint)
    else:
        app.router.routes.append(Route(PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            await gateway.start()
            try:
                async with manager.run():
                    yield state
            finally:
                await gateway.aclose()

    app.router.lifespan_context = lifespan
    app.state.mcp_gateway = gateway


def create_gateway_app(settings: Any, mcp_settings: Any, *, allowed_hosts: list[str] | None = None) -> Any:
    """The policyengine service for `settings` with a gateway for `mcp_settings` mounted at `/mcp`.

    Each HTTP upstream's URL is checked against the outbound policy for model URLs
    (`policyengine.netcheck`; private addresses allowed unless the settings say otherwise):
    a refused one raises `OutboundRefused` here, before anything starts."""
    from policyengine.api import create_app
    from policyengine.netcheck import check_url

    rules = settings.outbound_rules().model
    for u in mcp_settings.upstreams:
        if u.kind == "http":
            check_url(u.url, rules)
    app = create_app(settings)
    gateway = McpGateway(app.state.runtime, mcp_settings)
    mount(app, gateway, allowed_hosts=allowed_hosts)
    return app
