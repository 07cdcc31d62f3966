"""Wiring the approvals service into the API process.

`lifespan` is attached to the approvals router, so FastAPI runs it inside the
app's own lifespan (after the store, policies and scheduler are up): it builds
the `ApprovalService` on the service database, sets `runtime.approvals`, and
adds one APScheduler interval job running every sweep (timeouts, reminders,
outbox). Every replica runs the job; the sweeps' compare-and-set makes that safe.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
from pydantic import SecretStr

from policyengine.approvals.metrics import ApprovalMetrics
from policyengine.approvals.service import ApprovalService
from policyengine.approvals.settings import ApprovalSettings
from policyengine.notifier import OutboxSender
from policyengine.notifier.email import EmailSender
from policyengine.notifier.slack import SlackSender

log = logging.getLogger("policyengine.approvals")
JOB_ID = "policyengine-approvals-sweep"


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_dispatcher(settings: ApprovalSettings, http: httpx.AsyncClient) -> OutboxSender:
    slack = None
    if settings.slack_bot_token is not None:
        slack = SlackSender(_secret(settings.slack_bot_token) or "", base_url=settings.slack_api_url,
                            timeout_s=settings.delivery_timeout_s)
    email = EmailSender(
        host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from, username=settings.smtp_username,
        password=_secret(settings.smtp_password), start_tls=settings.smtp_starttls, use_tls=settings.smtp_tls,
        timeout_s=settings.smtp_timeout_s,
    )
    return OutboxSender(http=http, slack=slack, email=email, webhook_secret=_secret(settings.webhook_secret),
                        callback_secret=_secret(settings.callback_secret))


def load_settings() -> ApprovalSettings:
    settings = ApprovalSettings()
    if settings.link_secret is None:
        log.warning(
            "POLICYENGINE_APPROVALS_LINK_SECRET is not set: review links are signed with a random per-process "
            "secret, so they stop working on restart and on other replicas. Set it in production."
        )
        settings = settings.model_copy(update={"link_secret": SecretStr(secrets.token_urlsafe(32))})
    if settings.callback_secret is None:
        log.warning("POLICYENGINE_APPROVALS_CALLBACK_SECRET is not set: requests registering a callback_url are refused "
                    "(callbacks are always signed); applications can poll or long-poll approvals")
    return settings


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    runtime = app.state.runtime
    settings = load_settings()
    http = httpx.AsyncClient(timeout=settings.delivery_timeout_s, follow_redirects=False)
    metrics = ApprovalMetrics(runtime.metrics.registry)
    service = ApprovalService(runtime.db.engine, settings, dispatcher=build_dispatcher(settings, http), metrics=metrics)
    runtime.approvals = service
    scheduler = runtime.scheduler
    if scheduler is not None:
        scheduler.add_job(
            service.run_sweeps, "interval", seconds=settings.sweep_interval_s, id=JOB_ID, replace_existing=True,
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )
    service.kick_delivery()  # anything left in the outbox by a previous run
    try:
        yield
    finally:
        if scheduler is not None:
            with contextlib.suppress(Exception):
                scheduler.remove_job(JOB_ID)
        with contextlib.suppress(Exception):
            await service.drain()
        await http.aclose()
        runtime.approvals = None
