"""The console's login throttle: failed logins per address, on a real service and on the real Redis."""

from __future__ import annotations

import uuid

import httpx
import pytest
from api.conftest import running_service
from pydantic import ValidationError

from policyengine.console.throttle import LoginThrottle
from policyengine.settings import Settings

from .conftest import POLICIES


async def test_failed_logins_past_the_rate_get_429_with_retry_after(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYENGINE_CONSOLE_LOGIN_FAILURES", "3/minute")
    async with (running_service(f"sqlite:///{tmp_path / 'pe.db'}", monkeypatch, policy_dir=POLICIES) as svc,
                httpx.AsyncClient(base_url=svc.url) as h):
        good = svc.tokens["reviewer"]
        # a correct login does not count against the address
        assert (await h.post("/console/login", data={"key": good})).status_code == 303
        h.cookies.clear()
        for _ in range(3):
            assert (await h.post("/console/login", data={"key": good.replace("pe", "px")})).status_code == 401
        r = await h.post("/console/login", data={"key": good})  # even the right key, until the window moves
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 61
        assert "Too many failed logins" in r.text and "pe_console" not in r.headers.get("set-cookie", "")


def test_a_rate_that_is_not_one_is_refused_at_settings():
    with pytest.raises(ValidationError, match="is not a rate"):
        Settings(console_login_failures="ten a minute")


async def test_replicas_share_failures_through_redis(redis_url):
    prefix = f"pe-test-{uuid.uuid4().hex[:8]}:"
    a = LoginThrottle("2/minute", redis_url, prefix)
    b = LoginThrottle("2/minute", redis_url, prefix)
    await a.failed("10.0.0.7")
    await b.failed("10.0.0.7")
    assert not (await a.check("10.0.0.7")).allowed and not (await b.check("10.0.0.7")).allowed
    assert (await b.check("10.0.0.8")).allowed  # another address is its own count


async def test_an_unreachable_redis_falls_back_to_this_process(caplog):
    t = LoginThrottle("1/minute", "redis://127.0.0.1:1/0")
    assert (await t.check("10.0.0.9")).allowed
    await t.failed("10.0.0.9")
    assert not (await t.check("10.0.0.9")).allowed
    assert "cannot reach Redis" in caplog.text
