"""SSRF (issue #9): callback_url is refused at hold time, webhook and callback targets at delivery.

The outbox's HTTP client is an `httpx.MockTransport`: nothing leaves the process, and the
tests assert that a refused target received no request at all.
"""

from __future__ import annotations

import socket

import httpx
import pytest
import sqlalchemy as sa
from policyengine.notifier import OutboxSender

from policyengine.approvals.errors import ApprovalInvalid
from policyengine.types import Channel

from .helpers import make_service, refund_action, refund_decision, reviewer


@pytest.fixture
def no_allowlists(monkeypatch):
    """The shipped defaults: no callback allowlist, no webhook allowlist (the suite's conftest sets both)."""
    monkeypatch.delenv("POLICYENGINE_CALLBACK_HOSTS_ALLOW", raising=False)
    monkeypatch.delenv("POLICYENGINE_WEBHOOK_HOSTS_ALLOW", raising=False)


def _recording_client(seen: list[httpx.Request]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)


async def _outbox(db) -> list[tuple[str, str, int, str | None]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.text(
            "select kind, state, attempts, last_error from notification_outbox order by created_at"))).all()
    return [(r.kind, r.state, r.attempts, r.last_error) for r in rows]


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                                 "http://[fd00:ec2::254]/latest", "http://metadata.google.internal/computeMetadata/v1/",
                                 "http://10.0.0.5:8080/internal-admin", "http://127.0.0.1:6379/", "http://[::1]/",
                                 "https://app.example.com/hooks/approvals"])
async def test_callback_urls_are_refused_at_hold_time_unless_allowlisted(tmp_path, no_allowlists, url):
    # today any app key can register one of these and the service POSTs the outcome there
    svc, db = await make_service(f"sqlite:///{tmp_path}/h.db")
    try:
        with pytest.raises(ApprovalInvalid) as e:
            await svc.hold(action=refund_action(), decision=refund_decision(), callback_url=url)
        assert e.value.status_code == 422 and "callback_url refused" in e.value.message
        async with db.engine.connect() as conn:
            assert (await conn.execute(sa.text("select count(*) from approvals"))).scalar() == 0
    finally:
        await db.aclose()


async def test_a_callback_registered_on_the_api_key_is_checked_too(tmp_path, no_allowlists):
    from .helpers import Principal

    svc, db = await make_service(f"sqlite:///{tmp_path}/k.db")
    try:
        p = Principal("acme", "k1", "app")
        p.attributes = {"callback_url": "http://169.254.169.254/latest"}  # type: ignore[attr-defined]
        with pytest.raises(ApprovalInvalid, match="metadata"):
            await svc.hold(action=refund_action(), decision=refund_decision(), principal=p)
    finally:
        await db.aclose()


async def test_an_allowlisted_callback_is_held_and_checked_again_when_it_is_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYENGINE_CALLBACK_HOSTS_ALLOW", "app.example.com")
    seen: list[httpx.Request] = []

    def getaddrinfo(host, port, *a, **k):  # the allowlisted name now points at the metadata service
        if host == "app.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    async with _recording_client(seen) as http:
        svc, db = await make_service(f"sqlite:///{tmp_path}/c.db", dispatcher=OutboxSender(http=http))
        try:
            res = await svc.hold(action=refund_action(), decision=refund_decision(),
                                 callback_url="https://app.example.com/hooks/approvals")
            await svc.decide(res.approval_id, reviewer(), approve=True, reason="ok")
            await svc.drain()
            await svc.deliver_due()
            rows = [r for r in await _outbox(db) if r[0] == "callback"]
            assert len(rows) == 1
            _kind, state, attempts, error = rows[0]
            assert state == "dead" and attempts == 1 and "metadata" in (error or "")  # not retried
        finally:
            await db.aclose()
    assert seen == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/hook",
                                    "http://127.0.0.1:9/hook"])
async def test_webhook_targets_are_refused_at_delivery_not_retried_and_the_approval_stays(tmp_path, no_allowlists,
                                                                                         target):
    seen: list[httpx.Request] = []
    async with _recording_client(seen) as http:
        svc, db = await make_service(f"sqlite:///{tmp_path}/w.db", dispatcher=OutboxSender(http=http))
        try:
            res = await svc.hold(action=refund_action(),
                                 decision=refund_decision([Channel(kind="webhook", target=target),
                                                           Channel(kind="teams", target=target)]))
            await svc.drain()
            await svc.deliver_due()
            rows = await _outbox(db)
            assert {r[0] for r in rows} == {"webhook", "teams"}
            assert all(state == "dead" and attempts == 1 and "refused" in (err or "") for _, state, attempts, err in rows)
            assert (await svc.get(res.approval_id)).state.value == "pending"
        finally:
            await db.aclose()
    assert seen == []


async def test_an_allowlisted_webhook_is_delivered(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYENGINE_WEBHOOK_HOSTS_ALLOW", "10.0.0.0/8")
    seen: list[httpx.Request] = []
    async with _recording_client(seen) as http:
        svc, db = await make_service(f"sqlite:///{tmp_path}/a.db", dispatcher=OutboxSender(http=http))
        try:
            await svc.hold(action=refund_action(),
                           decision=refund_decision([Channel(kind="webhook", target="http://10.0.0.5/hook")]))
            await svc.drain()
            assert [r[1] for r in await _outbox(db)] == ["delivered"]
        finally:
            await db.aclose()
    assert [str(r.url) for r in seen] == ["http://10.0.0.5/hook"]  # the mock transport: nothing left the process
