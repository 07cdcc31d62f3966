"""Sending one outbox entry, and when to try again.

The outbox table and its claims live in ``policyengine.approvals``; this module
only knows how to deliver a payload of a given kind and how long to back off.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
from policyengine.notifier.email import EmailSender
from policyengine.notifier.errors import DeliveryError
from policyengine.notifier.slack import SlackSender
from policyengine.notifier.teams import TeamsSender
from policyengine.notifier.webhook import WebhookSender

KINDS = ("slack", "slack_update", "teams", "email", "webhook", "callback")


def backoff_s(attempt: int, *, base_s: float = 2, max_s: float = 600, retry_after_s: float | None = None) -> float:
    """Exponential backoff with full jitter; `attempt` counts from 1. Honours Retry-After."""
    ceiling = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


class OutboxSender:
    """Maps an outbox kind to its sender. A sender that is not configured fails permanently."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        slack: SlackSender | None = None,
        email: EmailSender | None = None,
        webhook_secret: str | None = None,
        callback_secret: str | None = None,
    ) -> None:
        self.http = http
        self.slack = slack
        self.email = email
        self.teams = TeamsSender(http)
        self.webhook = WebhookSender(http, webhook_secret)
        self.callback = WebhookSender(http, callback_secret, purpose="callback")

    async def send(self, kind: str, target: str, payload: dict[str, Any], *, key: str | None = None) -> dict[str, Any]:
        if kind in ("slack", "slack_update"):
            if self.slack is None:
                raise DeliveryError("slack is not configured (set POLICYENGINE_APPROVALS_SLACK_BOT_TOKEN)", retriable=False)
            return await (self.slack.post(payload) if kind == "slack" else self.slack.update(payload))
        if kind == "email":
            if self.email is None:
                raise DeliveryError("email is not configured (set POLICYENGINE_APPROVALS_SMTP_HOST)", retriable=False)
            return await self.email.send(payload)
        if kind == "teams":
            return await self.teams.post(target, payload)
        if kind == "webhook":
            return await self.webhook.post(target, payload, idempotency_key=key)
        if kind == "callback":
            return await self.callback.post(target, payload, idempotency_key=key)
        raise DeliveryError(f"unknown delivery kind {kind!r}", retriable=False)
