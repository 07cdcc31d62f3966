"""The review page in headless Chromium (Debian's package): approve, and reject with a reason."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from approvals.conftest import TOKENS
from approvals.harness import review_link

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def _hold(stack, amount: str, n_before: int) -> str:
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {TOKENS['app']}"}) as app:
        r = await app.post("/v1/evaluate", json={"action": "refund", "actor": "agent-7", "fields": {"amount": amount, "order": "C-9"},
                                                 "answers": {"qwen-72b": "Refund <b>approved</b> per policy 4.2",
                                                             "gemma-27b": "Refund needs a manager"}})
        assert r.json()["effect"] == "require_approval"
    for _ in range(400):
        if len(stack.smtp.messages) > n_before:
            return review_link(stack.smtp.messages[n_before])
        await asyncio.sleep(0.05)
    raise AssertionError("no email")


async def test_review_page_approve_and_reject_in_chromium(stack, chromium_path):
    from playwright.async_api import async_playwright

    link_a = await _hold(stack, "180 GBP", 0)
    link_b = await _hold(stack, "500 GBP", 1)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            page = await browser.new_page(java_script_enabled=False)  # the page must work without JS
            await page.goto(link_a)
            assert await page.inner_text("#state") == "pending"
            assert "180 GBP" in await page.inner_text("#action")
            assert "amount 180 GBP > 100 GBP" in await page.inner_text("#reasons")
            answers = await page.inner_text("#answers")
            assert "qwen-72b" in answers and "gemma-27b" in answers and "<b>approved</b>" in answers  # escaped, not HTML
            await page.click("#approve")
            await page.wait_for_selector("#outcome")
            assert await page.inner_text("#state") == "approved"

            await page.goto(link_b)
            await page.click("#reject")  # empty reason: the browser refuses the form (required)
            assert await page.inner_text("#state") == "pending"
            await page.fill("#reject-reason", "over the quarterly limit")
            await page.click("#reject")
            await page.wait_for_selector("#outcome")
            assert await page.inner_text("#state") == "rejected"
            assert "over the quarterly limit" in await page.inner_text("#outcome")

            await page.goto(link_a)  # the used link shows the outcome, no forms
            assert await page.query_selector("#approve-form") is None
        finally:
            await browser.close()
