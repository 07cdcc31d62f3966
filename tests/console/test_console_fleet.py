"""The console's fleet page in headless Chromium: admins only; cooldowns, breakers, latency and
failover charts; an admin clears a cooldown and closes a breaker from the page."""

from __future__ import annotations

import pytest

from console.conftest import MSG, login, new_page, shot
from policyengine.simulate.faults import Fault
from policyengine.state import BreakerConfig

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


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
