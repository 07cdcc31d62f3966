"""The hot endpoints are served straight from the ASGI call (policyengine.api.http): same
behaviour as through FastAPI's stack — errors, auth, root_path — without its per-request cost."""

from __future__ import annotations

import uuid

import httpx
import pytest
from starlette.requests import Request

from policyengine.api.http import PolicyEngineApp
from policyengine.gateway import outcome_id


def _app() -> PolicyEngineApp:
    app = PolicyEngineApp()

    async def boom(request: Request):
        raise RuntimeError("secret detail that must not reach the client")

    async def echo(request: Request):
        from policyengine.api.errors import json_response

        return json_response({"path": request.url.path, "body": (await request.body()).decode()})

    app.add_hot_route("/v1/boom", boom)
    app.add_hot_route("/v1/echo", echo)

    @app.get("/v1/echo")
    async def echo_get() -> dict:
        return {"via": "fastapi"}

    return app


async def test_unhandled_error_is_a_logged_json_500(caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as c:
        r = await c.post("/v1/boom", json={})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and "secret" not in r.text
    assert "secret detail" in caplog.text  # the traceback is in the server log


async def test_only_post_takes_the_hot_path_and_root_path_is_honoured() -> None:
    app = _app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/v1/echo")).json() == {"via": "fastapi"}
        assert (await c.post("/v1/echo", content=b"hi")).json()["body"] == "hi"
        assert (await c.post("/v1/nope", content=b"hi")).status_code == 404
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, root_path="/pe"),
                                 base_url="http://t") as c:
        assert (await c.post("/pe/v1/echo", content=b"x")).json()["body"] == "x"


async def test_auth_errors_match_the_fastapi_routes(service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as c:
        hot = await c.post("/v1/evaluate", json={"action": "classify_ticket"})
        slow = await c.get("/v1/models")
        bad = await c.post("/v1/chat/completions", json={}, headers={"Authorization": "Bearer nope"})
    assert hot.status_code == slow.status_code == 401
    assert hot.headers["www-authenticate"] == slow.headers["www-authenticate"] == "Bearer"
    assert hot.json()["error"]["code"] == slow.json()["error"]["code"] == "missing_api_key"
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"


def test_outcome_id_is_uuid5_of_the_decision_id() -> None:
    for _ in range(200):
        d = str(uuid.uuid4())
        assert outcome_id(d) == str(uuid.uuid5(uuid.UUID(d), "outcome"))


def test_attempt_dicts_equal_the_json_dump_of_every_attempt_shape() -> None:
    """The gateway copies an Attempt's field dict instead of serialising it: that holds only while every
    field is JSON-native. Fails if a field with another type (a datetime, an enum, a model) is added."""
    from policyengine.dispatch.results import Attempt
    from policyengine.fastmodel import construct
    from policyengine.gateway import attempt_dicts

    full = Attempt(model="m", key_id="K", status=429, error_class="retry", reason="rate_limited", started_at=1.5,
                   latency_ms=2.25, skipped=False, message="slow down")
    fast = construct(Attempt, {"model": "m", "started_at": 2.0})
    for a in (full, fast, Attempt(model="m", started_at=0, skipped=True)):
        assert attempt_dicts([a]) == [a.model_dump(mode="json")]


async def test_oversized_bodies_get_413_declared_or_chunked(tmp_path, service_factory) -> None:
    """The limit holds whether the client declares the size or streams the body chunked
    (then it is refused once the running count passes the limit, not after buffering it all)."""
    import orjson

    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", max_body_bytes=2_000) as svc:
        big = orjson.dumps({"action": "classify_ticket", "fields": {"note": "x" * 5_000}})

        async def chunked():
            for i in range(0, len(big), 500):
                yield big[i:i + 500]

        async with svc.client() as c:
            declared = await c.post("/v1/evaluate", content=big, headers={"content-type": "application/json"})
            streamed = await c.post("/v1/chat/completions", content=chunked(),
                                    headers={"content-type": "application/json"})
            small = await c.post("/v1/evaluate", json={"action": "classify_ticket"})
    assert declared.status_code == streamed.status_code == 413
    assert "transfer-encoding" not in declared.request.headers
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert streamed.json()["error"]["code"] == "body_too_large"
    assert small.status_code == 200


async def test_in_flight_counts_every_http_request_until_its_answer_is_sent() -> None:
    """`quiet()` (whether a decision-log commit may block the loop for its fsync) holds while at most
    QUIET_IN_FLIGHT requests are being served, and the count goes back to zero whatever the outcome."""
    import asyncio

    from policyengine.api.http import QUIET_IN_FLIGHT

    app = _app()
    entered: list[int] = []
    release = asyncio.Event()

    async def wait(request: Request):
        from policyengine.api.errors import json_response

        entered.append(app.in_flight)
        await release.wait()
        return json_response({"ok": True})

    app.add_hot_route("/v1/wait", wait)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        n = QUIET_IN_FLIGHT + 1
        calls = [asyncio.ensure_future(c.post("/v1/wait", content=b"{}")) for _ in range(n)]
        while len(entered) < n:
            await asyncio.sleep(0.001)
        assert app.in_flight == n and not app.quiet()
        release.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
        assert app.in_flight == 0 and app.quiet()
        assert (await c.post("/v1/boom", content=b"{}")).status_code == 500  # an error still counts down
        assert (await c.get("/v1/echo")).status_code == 200  # so does a FastAPI route
    assert app.in_flight == 0 and sorted(entered) == list(range(1, n + 1))


async def test_under_full_a_lone_request_commits_its_row_on_the_loop(tmp_path, service_factory) -> None:
    """The service's default durability (SQLite FULL): one request at a time, the decision row's
    commit (its fsync included) runs on the event loop, not in the writer thread; it is durable and
    chained like every other row."""
    from policyengine.store import make_sync_engine, verify_chain

    url = f"sqlite:///{tmp_path / 'pe.db'}"
    async with service_factory(url) as svc:
        log = svc.runtime.log
        assert svc.settings.sqlite_synchronous == "FULL" and log.quiet is not None and log.fsync_on_loop
        async with svc.client() as c:
            await c.post("/v1/evaluate", json={"action": "classify_ticket"})  # the connection opens
            before = log.loop_commits
            for _ in range(5):
                assert (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200
        assert log.loop_commits - before >= 4  # (the odd row may meet the writer busy with another)
    engine = make_sync_engine(url)
    res = verify_chain(engine)
    engine.dispose()
    assert res.ok and res.rows >= 6, res.problem


async def test_sqlite_fsync_on_loop_false_keeps_every_commit_in_the_writer_thread(tmp_path, service_factory) -> None:
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", sqlite_fsync_on_loop=False) as svc:
        log = svc.runtime.log
        assert not log.fsync_on_loop
        assert log.quiet is not None and log.quiet()  # the checkpoint cadence still follows the load
        async with svc.client() as c:
            for _ in range(3):
                assert (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200
        assert log.loop_commits == 0
