"""Who is calling: the API key in the request, checked against the key store and the route's roles.

Clients send `Authorization: Bearer <token>` (the OpenAI SDK's `api_key`) or
`X-API-Key: <token>`. The token is looked up through the runtime's `KeyCache`
(policyengine.gateway.keys); the Principal it stands for is the only source of the caller's
tenant, roles and groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from policyengine.api.body import headers
from policyengine.api.errors import AuthError
from policyengine.types import ROLES, Principal

__all__ = ["Principal", "authenticate", "require_principal"]


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
                         roles=frozenset(ROLES), groups=frozenset({"*"}))
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
