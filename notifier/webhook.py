"""Generic webhook: a JSON body signed with HMAC-SHA256 and a timestamp.

Header: ``X-PolicyEngine-Signature: t=<unix>,v1=<hex>`` where
``v1 = HMAC_SHA256(secret, f"{t}." + body)``. The same scheme signs callbacks
to applications; ``policyengine.client.verify_callback`` checks it.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from policyengine.notifier.errors import DeliveryError, classify_status
from policyengine.notifier.notice import Notice

from policyengine.approvals.signing import SIGNATURE_HEADER, sign_body


def compose(notice: Notice) -> dict[str, Any]:
    return {
        "event": f"approval.{notice.purpose}",
        "approval": notice.model_dump(mode="json", exclude={"review_url"}),
        "review_url": notice.review_url,
    }


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient, secret: str | None) -> None:
        self._client = client
        self._secret = secret

    async def post(self, url: str, payload: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", "User-Agent": "policyengine-notifier"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign_body(body, self._secret)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            resp = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise DeliveryError(f"webhook {url}: {type(e).__name__}: {e}")
        if resp.status_code >= 300:
            raise classify_status(resp.status_code, resp.text, f"webhook {url}", resp.headers.get("retry-after"))
        return {"status": resp.status_code}
