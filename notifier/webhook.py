"""Generic webhook: a JSON body signed with HMAC-SHA256 and a timestamp.

Header: ``X-PolicyEngine-Signature: t=<unix>,v1=<hex>`` where
``v1 = HMAC_SHA256(secret, f"{t}." + body)``. The same scheme signs callbacks
to applications; ``policyengine.client.verify_callback`` checks it.

Before anything is sent the target is checked against the outbound policy of its purpose
(``policyengine.netcheck``: webhooks, or callbacks to applications), its host resolved then:
a refused target is a non-retriable ``DeliveryError`` (logged), a name that does not resolve
a retriable one. Redirects are never followed (a 3xx is a failed delivery).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
from policyengine.notifier.errors import DeliveryError, classify_status
from policyengine.notifier.notice import Notice

from policyengine.approvals.signing import SIGNATURE_HEADER, sign_body
from policyengine.netcheck import (
    OutboundPolicy,
    OutboundRefused,
    OutboundUnresolved,
    Purpose,
    redact_url,
)

log = logging.getLogger("policyengine.notifier")


async def check_target(url: str, purpose: Purpose, policy: OutboundPolicy | None, where: str) -> None:
    """Refuse to send to `url` unless `policy` (default: the settings' policy for `purpose`) admits it.

    Raises `DeliveryError`: non-retriable when the target is refused (and logged as a warning),
    retriable when its name does not resolve now.
    """
    if policy is None:
        from policyengine.settings import default_outbound_rules

        policy = getattr(default_outbound_rules(), purpose)
    try:
        await policy.acheck(url)
    except OutboundUnresolved as e:
        raise DeliveryError(f"{where}: {e.message}", retriable=True) from None
    except OutboundRefused as e:
        log.warning("%s refused (%s): %s", where, e.reason, e.message)
        raise DeliveryError(f"{where} refused: {e.message}", retriable=False) from None


def compose(notice: Notice) -> dict[str, Any]:
    return {
        "event": f"approval.{notice.purpose}",
        "approval": notice.model_dump(mode="json", exclude={"review_url"}),
        "review_url": notice.review_url,
    }


class WebhookSender:
    """POSTs signed JSON to webhook targets (`purpose="webhook"`) or application callbacks (`"callback"`).

    `policy` overrides the outbound policy from the settings for that purpose.
    """

    def __init__(self, client: httpx.AsyncClient, secret: str | None, *, purpose: Purpose = "webhook",
                 policy: OutboundPolicy | None = None) -> None:
        self._client = client
        self._secret = secret
        self._purpose: Purpose = purpose
        self._policy = policy

    async def post(self, url: str, payload: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """Send `payload` to `url` once it passes the outbound check; `DeliveryError` on refusal or failure."""
        await check_target(url, self._purpose, self._policy, self._purpose)
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "policyengine-notifier"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign_body(body, self._secret)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            resp = await self._client.post(url, content=body, headers=headers, follow_redirects=False)
        except httpx.HTTPError as e:
            raise DeliveryError(f"{self._purpose} {redact_url(url)}: {type(e).__name__}: {e}")
        if resp.status_code >= 300:
            raise classify_status(resp.status_code, resp.text, f"{self._purpose} {redact_url(url)}",
                                  resp.headers.get("retry-after"))
        return {"status": resp.status_code}
