"""Wiring the approvals service into the API process.

`lifespan` is attached to the approvals router, so FastAPI runs it inside the
app's own lifespan (after the store, policies and scheduler are up): it builds
the `ApprovalService` on the service database, sets `runtime.approvals`, and
adds one APScheduler interval job running every sweep (timeouts, reminders,
outbox). Every replica runs the job; the sweeps' compare-and-set makes that safe.

The service is given the policy serving (`policy_evaluator`: edited revisions are
evaluated again before they can be approved) and the decision log's redaction
settings (`redactor`: `redact_fields` are hashed in every approval copy stored or sent).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from pydantic import SecretStr

from policyengine.approvals.metrics import ApprovalMetrics
from policyengine.approvals.service import ApprovalService
from policyengine.approvals.settings import ApprovalSettings
from policyengine.notifier import OutboxSender
from policyengine.notifier.email import EmailSender
from policyengine.notifier.slack import SlackSender
from policyengine.store.redaction import Redactor
from policyengine.types import Action, Decision

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


def policy_evaluator(runtime: Any) -> Callable[[Action], Awaitable[Decision]]:
    """`evaluate(action) -> Decision` with the policy serving at the time of the call
    (`runtime.policies.current`, so a reload applies to the next edit) and the runtime's
    signals, exactly as the gateway evaluates a request (slow signals in a worker thread)."""
    from policyengine.gateway.call import evaluate as gateway_evaluate

    async def evaluate(action: Action) -> Decision:
        return await gateway_evaluate(runtime, runtime.policies.current, action)

    return evaluate


def redactor(settings: Any) -> Redactor | None:
    """The decision log's redaction rules and salt from the service `Settings` (`redact_fields`,
    `redaction_salt()`), so the log and the approvals hash a value to the same digest; None when
    nothing is redacted. Every ApprovalService that composes notices should be given it."""
    rules = list(getattr(settings, "redact_fields", None) or [])
    if not rules:
        return None
    return Redactor(rules, settings.redaction_salt())


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
    sender = build_dispatcher(settings, http)
    service = ApprovalService(runtime.db.engine, settings, dispatcher=sender, metrics=metrics,
                              evaluate=policy_evaluator(runtime), redactor=redactor(runtime.settings))
    runtime.approvals = service
    runtime.limit_sender = sender  # limit threshold notices go out through the same senders
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
        runtime.limit_sender = None
