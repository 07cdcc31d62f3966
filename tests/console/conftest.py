"""The console against a real service (tests/api's: uvicorn, simulated upstreams, seeded keys) and
Debian's chromium driven by playwright with JavaScript switched off."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import httpx
import pytest
from api.conftest import running_service

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
# PE_CONSOLE_SCREENSHOTS=1 writes docs/console-*.png (the pictures docs/console.md shows)
SHOTS = os.environ.get("PE_CONSOLE_SCREENSHOTS") == "1"
POLICIES = Path(__file__).parent / "policies"  # tests/api's gateway policy without verify (no embedding model to load)
MSG = [{"role": "user", "content": "Where is my order?"}]


@pytest.fixture
async def service(tmp_path, monkeypatch):
    async with running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, policy_dir=POLICIES) as svc:
        yield svc


@pytest.fixture
async def browser(chromium_path):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_page(browser, base_url: str):
    """A page without JavaScript (the console must work without it), 1100 px wide."""
    ctx = await browser.new_context(java_script_enabled=False, base_url=base_url,
                                    viewport={"width": 1100, "height": 760})
    return await ctx.new_page()


async def login(page, token: str) -> None:
    await page.goto("/console/login")
    await page.fill("#key", token)
    await page.click("#login")


async def shot(page, name: str, *, full_page: bool = False) -> None:
    if SHOTS:
        await page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=full_page)


@contextlib.asynccontextmanager
async def console_client(svc, who: str):
    """An httpx client logged into the console as `who` (its cookie set), and the session's CSRF token."""
    async with httpx.AsyncClient(base_url=svc.url, follow_redirects=False) as h:
        r = await h.post("/console/login", data={"key": svc.tokens[who]})
        assert r.status_code == 303, r.text
        yield h


def csrf_of(html: str) -> str:
    import re

    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)
