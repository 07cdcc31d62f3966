"""Every console page in headless Chromium (Debian's, JavaScript off): login, decisions (search, chart,
detail), approvals (queue, decide, self-approval and group refusals), fleet (admin only, levers).

One service and one browser for the module (the tests run in order; the fleet test, which
breaks a key and a breaker, runs last)."""

from __future__ import annotations

import pytest
import pytest_asyncio
from api.conftest import running_service

from console.conftest import ARGS, MSG, POLICIES, login, new_page, shot
from policyengine.simulate.faults import Fault
from policyengine.state import BreakerConfig

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def service(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        db = tmp_path_factory.mktemp("console") / "pe.db"
        async with running_service(f"sqlite:///{db}", mp, policy_dir=POLICIES) as svc:
            yield svc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def _traffic(svc) -> dict[str, str]:
    """A few decisions of each effect and one chat that failed over; returns some of their ids."""
    ids = {}
    async with svc.client() as c:
        ids["held"] = (await c.post("/v1/evaluate", json={"action": "refund", "actor": "agent-7",
                                                           "fields": {"amount": "180 GBP", "order": "C-9"}})).json()
        for _ in range(2):
            assert (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).json()["effect"] == "allow"
        ids["deny"] = (await c.post("/v1/evaluate", json={"action": "delete_account", "actor": "agent-9"})).json()
        svc.sims["qwen-72b"].add_fault(Fault(kind="error", status=500, times=1))
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert r.status_code == 200 and ":500:failover" in r.headers["x-policyengine-attempts"]
        ids["chat"] = r.headers["x-policyengine-decision-id"]
    return ids


async def test_login_refuses_bad_and_app_keys_and_decisions_search_and_detail(service, browser):
    ids = await _traffic(service)
    page = await new_page(browser, service.url)
    await page.goto("/console/decisions")  # no session: the login page
    assert "/console/login" in page.url
    await shot(page, "login")
    await login(page, "pe_not_a_key_0123456789abcdefghij")
    assert "not valid" in await page.inner_text("#error")
    await login(page, service.tokens["app"])
    assert "reviewers and admins" in await page.inner_text("#error")
    assert service.tokens["app"] not in page.url

    await login(page, service.tokens["reviewer"])
    assert page.url.endswith("/console/decisions")
    assert "rita@acme" in await page.inner_text("#who")
    assert await page.query_selector("#nav-fleet") is None  # not an admin
    table = await page.inner_text("#decisions")
    for d in (ids["held"], ids["deny"]):
        assert d["decision_id"] in table
    assert await page.query_selector("#effects-chart svg") is not None
    assert await page.query_selector("#effects-chart script") is None
    numbers = await page.text_content("#effects-table")  # inside a closed <details>
    assert "require_approval" in numbers
    await shot(page, "decisions", full_page=True)

    await page.select_option("#f-effect", "deny")
    await page.click("#search")
    assert "effect=deny" in page.url
    table = await page.inner_text("#decisions")
    assert ids["deny"]["decision_id"] in table and ids["held"]["decision_id"] not in table
    await page.fill("#f-since", "not a time")
    await page.click("#search")
    assert "ISO 8601" in await page.inner_text("#error")

    await page.goto(f"/console/decisions/{ids['chat']}")  # the chat that failed over: why, attempt by attempt
    attempts = await page.inner_text("#attempts")
    assert "failover" in attempts and "ok" in attempts and "qwen-72b" in attempts
    expl = await page.inner_text("#explanation")
    assert "failed (failover)" in expl and "answered" in expl
    await shot(page, "decision", full_page=True)
    await page.goto(f"/console/decisions/{ids['held']['decision_id']}")
    assert "amount 180 GBP > 100 GBP" in await page.inner_text("#rules")
    await page.click("#approval-link")  # the decision leads to its approval
    assert page.url.endswith(f"/console/approvals/{ids['held']['approval']['approval_id']}")
    await page.goto("/console/decisions/no-such-id")
    assert "No decision" in await page.inner_text("#error")

    await page.click("#nav-usage")  # the tenant's limit counters: the chats above counted
    usage = await page.inner_text("#usage")
    assert "limit requests 1000 per day per tenant" in usage and "requests" in usage
    assert await page.query_selector("#usage-chart svg") is not None
    await shot(page, "usage")

    await page.click("#logout")
    assert "/console/login" in page.url
    await page.goto("/console/decisions")
    assert "/console/login" in page.url


async def test_approvals_queue_decide_and_refusals(service, browser):
    async with service.client() as c:
        refund = (await c.post("/v1/evaluate", json={"action": "refund", "actor": "agent-7",
                                                      "fields": {"amount": "180 GBP", "order": "C-9"}})).json()
        care = (await c.post("/v1/evaluate", json={"action": "draft_response",
                                                    "text": "I am disgusted by this"})).json()
    async with service.client("admin") as c:  # the admin asks: they may not approve it themselves
        own = (await c.post("/v1/evaluate", json={"action": "send_email", "fields": {"to": "all@acme"}})).json()
    refund_id, care_id, own_id = (x["approval"]["approval_id"] for x in (refund, care, own))

    page = await new_page(browser, service.url)
    await page.goto(f"/console/approvals/{refund_id}")  # a link to the approval: log in, then back to it
    await page.fill("#key", service.tokens["reviewer"])  # rita, group refunds
    await page.click("#login")
    assert page.url.endswith(f"/console/approvals/{refund_id}")
    await page.click("#nav-approvals")
    queue = await page.inner_text("#approvals")
    assert refund_id in queue and own_id in queue  # send_email has no group: any reviewer of the tenant
    assert care_id not in queue  # group care only
    await shot(page, "approvals")

    await page.goto(f"/console/approvals/{care_id}")  # by its address: shown, but no forms
    assert "group care" in await page.inner_text("#refusal")
    assert await page.query_selector("#approve-form") is None

    await page.goto(f"/console/approvals/{refund_id}")
    assert await page.inner_text("#state") == "pending"
    assert "180 GBP" in await page.inner_text("#action")
    await shot(page, "approval", full_page=True)
    await page.click("#reject")  # an empty reason: the browser refuses to send the form
    assert await page.inner_text("#state") == "pending"
    await page.fill("#approve-reason", "customer is a regular")
    await page.click("#approve")
    assert await page.inner_text("#state") == "approved"
    assert "by rita@acme via console" in await page.inner_text("#outcome")
    audit = await page.inner_text("#audit")
    assert "approved" in audit and "console" in audit and "customer is a regular" in audit
    async with service.client() as c:  # the application sees the decision
        assert (await c.get(f"/v1/approvals/{refund_id}")).json()["state"] == "approved"

    await page.goto("/console/approvals")
    await page.select_option("#f-state", "approved")
    await page.click("#show")
    assert refund_id in await page.inner_text("#approvals")

    admin = await new_page(browser, service.url)
    await login(admin, service.tokens["admin"])
    await admin.goto(f"/console/approvals/{own_id}")
    assert "cannot approve or reject it yourself" in await admin.inner_text("#self-approval")
    assert await admin.query_selector("#approve-form") is None
    await shot(admin, "self-approval")


async def test_fleet_page_admin_only_with_charts_and_levers(service, browser):
    service.sims["qwen-72b"].expire_key("qk1")
    async with service.client() as c:
        for _ in range(3):
            assert (await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})).status_code == 200
        service.sims["qwen-72b"].add_fault(Fault(kind="error", status=500, times=None))  # failover, no retry wait
        assert (await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})).status_code == 200
        service.sims["qwen-72b"].reset()
    for _ in range(3):
        await service.runtime.state.breaker_failure("kimi-large", BreakerConfig())

    reviewer = await new_page(browser, service.url)
    await login(reviewer, service.tokens["reviewer"])
    r = await reviewer.goto("/console/fleet")
    assert r.status == 403 and "for admins" in await reviewer.inner_text("#error")

    page = await new_page(browser, service.url)
    await login(page, service.tokens["admin"])
    await page.click("#nav-fleet")
    models = await page.inner_text("#models")
    assert "qwen-72b" in models and "gemma-27b" in models and "breaker_open" in models
    assert "env(PE_T_QWEN_URL) = http://127.0.0.1:" in models
    cooldowns = await page.inner_text("#cooldowns")
    assert "key:qwen-72b/PE_T_QWEN_KEY_1" in cooldowns and "auth" in cooldowns
    assert "kimi-large" in await page.inner_text("#breakers")
    assert await page.query_selector("#latency-chart svg") is not None
    assert await page.query_selector("#failover-chart svg") is not None
    stats = await page.inner_text("#model-stats")
    assert "qwen-72b" in stats and "gemma-27b" in stats
    await shot(page, "fleet", full_page=True)

    await page.click("#cooldowns button")
    assert "cleared" in await page.inner_text("#notice")
    assert await page.query_selector("#no-cooldowns") is not None
    await page.click("#breakers button")
    assert "closed" in await page.inner_text("#notice")
    assert await page.query_selector("#no-breakers") is not None
    assert (await service.runtime.state.breaker("kimi-large")).state == "closed"
