"""API-key authentication and role checks.

Clients send `Authorization: Bearer <token>` (the OpenAI SDK's `api_key`) or
`X-API-Key: <token>`. Keys are stored as sha256 hashes, each bound to one
tenant, a subject, roles (app, reviewer, admin) and reviewer groups.
Authenticated keys are cached in-process for `key_cache_ttl_s` seconds (0
disables the cache); a revocation clears the cache within
`key_revocation_poll_s` wherever it was made (the CLI, the admin API, another
replica), and at once on the replica that served the admin call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from policyengine.store import ApiKeyRepo, KeyInfo, hash_token

ROLES = ("app", "reviewer", "admin")
log = logging.getLogger("policyengine.api.auth")


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str
    subject: str
    roles: frozenset[str]
    groups: frozenset[str]
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or any(r in self.roles for r in roles)


class AuthError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def principal_of(info: KeyInfo) -> Principal:
    return Principal(tenant=info.tenant, key_id=info.key_id, subject=info.subject, roles=frozenset(info.roles),
                     groups=frozenset(info.groups), attributes=info.attributes)


class KeyCache:
    """Authenticated keys by token hash, as ready-made (immutable) Principals, for `ttl_s` seconds."""

    def __init__(self, repo: ApiKeyRepo, ttl_s: float) -> None:
        self.repo, self.ttl_s = repo, ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def lookup(self, token: str) -> Principal | None:
        h = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[0] > now:
            return hit[1]
        info = await self.repo.authenticate(token)
        p = None if info is None else principal_of(info)
        if self.ttl_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[h] = (now + self.ttl_s, p)
        return p

    def invalidate(self) -> None:
        self._cache.clear()

    async def watch_revocations(self, every_s: float) -> None:
        """Clear the cache as soon as a key is revoked anywhere (the CLI, another replica): one small
        query every `every_s` seconds, so a revocation takes effect within that time, not the TTL."""
        mark: tuple[int, float | None] | None = None
        while True:
            try:
                now = await self.repo.revocation_mark()
            except Exception as exc:  # the database is briefly unavailable: keep serving, retry
                log.warning("cannot check for revoked API keys: %s: %s", type(exc).__name__, exc)
            else:
                if mark is not None and now != mark:
                    self.invalidate()
                mark = now
            await asyncio.sleep(every_s)


def _token(request: Request) -> str | None:
    from policyengine.api.body import headers

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
    services = request.app.state.services
    settings = services.settings
    if settings.auth_disabled:
        return Principal(tenant=settings.dev_tenant, key_id="dev", subject="dev",
                         roles=frozenset(ROLES), groups=frozenset({"*"}))
    token = _token(request)
    if not token:
        raise AuthError(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                        "missing_api_key")
    p = await services.extras["key_cache"].lookup(token)
    if p is None:
        raise AuthError(401, "invalid or revoked API key", "invalid_api_key")
    return p


def require_principal(*roles: str):
    """FastAPI dependency: the caller's Principal, which must hold one of `roles` (admin holds all).

    With no roles, any valid key is accepted.
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
