"""Signatures: review links (itsdangerous) and HMAC-signed HTTP bodies.

* Review links carry a signed, timestamped token naming the approval, the
  recipient and a random nonce. The token expires (max age checked on load) and
  is single-use: the nonce is recorded when a decision is POSTed with it.
* Outgoing webhooks and app callbacks carry
  ``X-PolicyEngine-Signature: t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>``
  (the Stripe scheme); receivers verify it with :func:`verify_body` and reject
  timestamps outside the tolerance window, so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

SIGNATURE_HEADER = "X-PolicyEngine-Signature"
DEFAULT_TOLERANCE_S = 300


class LinkError(Exception):
    """A review link that must be refused; `reason` is safe to show to the user."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True)
class LinkClaims:
    approval_id: str
    recipient: str  # e.g. "email:refunds@example.com" or "teams:refunds"
    nonce: str
    revision: int
    stage: int = 0  # escalation level the link was issued at


class LinkSigner:
    """Signs and verifies review-link tokens."""

    def __init__(self, secret: str, *, salt: str = "policyengine.review-link") -> None:
        if not secret or len(secret) < 16:
            raise ValueError("the review-link secret must be at least 16 characters (set POLICYENGINE_APPROVALS_LINK_SECRET)")
        self._s = URLSafeTimedSerializer(secret, salt=salt)

    def issue(self, approval_id: str, recipient: str, revision: int = 1, stage: int = 0) -> str:
        return self._s.dumps(
            {"a": approval_id, "r": recipient, "n": secrets.token_urlsafe(16), "v": revision, "s": stage}
        )

    def load(self, token: str, *, max_age_s: float) -> LinkClaims:
        try:
            data = self._s.loads(token, max_age=max_age_s)
        except SignatureExpired:
            raise LinkError("this review link has expired; open the approval from a fresh notification", expired=True)
        except BadSignature:
            raise LinkError("this review link is not valid (bad signature)")
        try:
            return LinkClaims(str(data["a"]), str(data["r"]), str(data["n"]), int(data.get("v", 1)), int(data.get("s", 0)))
        except (KeyError, TypeError, ValueError):
            raise LinkError("this review link is malformed")


def sign_body(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The value of the signature header for `body`."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class SignatureError(Exception):
    """A signature header that is missing, malformed, stale (replay window) or does not match."""


def _reviewer_message(token: str, reviewer: str) -> bytes:
    return f"{token}:{reviewer}".encode()


def sign_reviewer(token: str, reviewer: str, secret: str, *, timestamp: int | None = None) -> str:
    """What a webhook receiver sends as `reviewer_signature` when it posts a decision to the
    review link `token` on behalf of `reviewer`: `t=<unix>,v1=<hex HMAC-SHA256(secret,
    "<t>." + "<token>:<reviewer>")>`, with the webhook secret. It binds the identity to this
    one link; it is checked within the callback tolerance window (5 minutes)."""
    return sign_body(_reviewer_message(token, reviewer), secret, timestamp=timestamp)


def verify_reviewer(token: str, reviewer: str, signature: str | None, secret: str, *,
                    tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> int:
    """Check a `sign_reviewer` signature; returns its timestamp or raises SignatureError."""
    return verify_body(_reviewer_message(token, reviewer), signature, secret, tolerance_s=tolerance_s, now=now)


def verify_body(
    body: bytes, header: str | None, secret: str, *, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None
) -> int:
    """Check a signature header; returns its timestamp or raises SignatureError."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("signature header has no valid timestamp")
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        raise SignatureError("signature timestamp outside the tolerance window (possible replay)")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise SignatureError("signature does not match the body")
    return t
