"""Console sessions: an API key exchanged for a signed cookie; CSRF tokens for POST forms.

The cookie holds `{key_id, tenant, csrf}` signed with itsdangerous (timestamped; at most
`MAX_AGE_S` old). The signing key is `$POLICYENGINE_CONSOLE_SECRET` when set, else derived
(HMAC-SHA256, a fixed label) from the approvals link secret, so one secret is enough for a
deployment and the two signatures can never be swapped. On every request the key id is
looked up again: a revoked key, or one whose roles no longer include reviewer or admin, ends
the session.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from policyengine.gateway.keys import principal_of
from policyengine.types import Principal

COOKIE = "pe_console"
MAX_AGE_S = 8 * 3600
ENV_SECRET = "POLICYENGINE_CONSOLE_SECRET"
CONSOLE_ROLES = ("reviewer", "admin")


class ConsoleUnavailable(RuntimeError):
    """No secret to sign sessions with: the console cannot log anyone in."""


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in console user: who (as the key store says now) and the session's CSRF token."""

    principal: Principal
    csrf: str


def _secret(rt: Any) -> bytes:
    env = os.environ.get(ENV_SECRET)
    if env:
        if len(env) < 16:
            raise ConsoleUnavailable(f"{ENV_SECRET} must be at least 16 characters")
        return env.encode("utf-8")
    svc = getattr(rt, "approvals", None)
    link = None
    if svc is not None:
        secret = svc.settings.link_secret
        link = secret.get_secret_value() if secret is not None else None
    else:
        from policyengine.approvals.settings import ApprovalSettings

        s = ApprovalSettings()
        link = s.link_secret.get_secret_value() if s.link_secret is not None else None
    if not link:
        raise ConsoleUnavailable(f"set {ENV_SECRET} (or POLICYENGINE_APPROVALS_LINK_SECRET) to sign console sessions")
    return hmac.new(link.encode("utf-8"), b"policyengine console session v1", hashlib.sha256).digest()


def _serializer(rt: Any) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(rt), salt="policyengine.console")


def issue(rt: Any, principal: Principal) -> str:
    """The cookie value for a new session of `principal` (a fresh CSRF token)."""
    return _serializer(rt).dumps({"k": principal.key_id, "t": principal.tenant, "c": secrets.token_urlsafe(24)})


async def read(rt: Any, cookie: str | None) -> Session | None:
    """The session the cookie stands for, or None (no cookie, bad or old signature, key revoked,
    key without a console role)."""
    if not cookie:
        return None
    try:
        data = _serializer(rt).loads(cookie, max_age=MAX_AGE_S)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(x), str) for x in ("k", "t", "c")):
        return None
    if rt.settings.auth_disabled and data["k"] == "dev":
        from policyengine.api.http import DEV_ATTRIBUTES
        from policyengine.types import ROLES

        p = Principal(tenant=rt.settings.dev_tenant, key_id="dev", subject="dev", roles=frozenset(ROLES),
                      groups=frozenset({"*"}), attributes=dict(DEV_ATTRIBUTES))
        return Session(p, data["c"])
    info = await rt.keys.get(data["k"], data["t"])
    if info is None or info.revoked_at is not None:
        return None
    p = principal_of(info)
    if not p.has(*CONSOLE_ROLES):
        return None
    return Session(p, data["c"])


def csrf_ok(session: Session, token: str | None) -> bool:
    """Whether a form's CSRF token is this session's (constant-time)."""
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())
