"""The security issue's API items (#15): trusted inputs, 4xx instead of 500, unguessable ids,
auth_disabled on a public bind, no internals in responses, every body bounded.

Each test failed on the code before its fix (named in the test's docstring)."""

from __future__ import annotations

import asyncio
import shutil
from itertools import pairwise
from typing import Any

import httpx
import pytest

MSG = [{"role": "user", "content": "Summarise ticket 4411"}]
LITIGIOUS = "If this is not fixed I will sue you and my solicitor will be in touch."


async def _key(service, **attributes: Any) -> str:
    """A new app key of tenant acme with these attributes (made through the admin API)."""
    async with service.client("admin") as c:
        r = await c.post("/v1/admin/keys", json={"roles": ["app"], "subject": "trusted-app", "attributes": attributes})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def _as(service, token: str) -> httpx.AsyncClient:
    # generous: the first text a litigation rule reads may load the signal models
    return httpx.AsyncClient(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=180)


def _refused(r: httpx.Response, attribute: str) -> None:
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "untrusted_input" and err["attribute"] == attribute, err
    assert attribute in err["message"]


# ------------------------------------------------------------------ A. trusted inputs (#7)


async def test_signals_from_a_key_without_trusted_signals_are_refused(service):
    """Before: `signals: {"mentions:litigation": false}` switched the litigation escalation off (200 allow)."""
    action = {"action": "draft_response", "text": LITIGIOUS}
    async with _as(service, service.tokens["app"]) as c:
        assert (await c.post("/v1/evaluate", json=action)).json()["effect"] == "escalate"
        for signals in ({"mentions:litigation": False}, {"mentions": {"litigation": False}}, {"sentiment": 0.99}):
            _refused(await c.post("/v1/evaluate", json={**action, "signals": signals}), "trusted_signals")
        r = await c.post("/v1/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": LITIGIOUS}],
            "metadata": {"signals": {"mentions:litigation": False}}})
        _refused(r, "trusted_signals")
        assert (await c.post("/v1/evaluate", json={**action, "signals": {}})).json()["effect"] == "escalate"
    # a key trusted with the mentions family may supply them (and nothing else)
    async with _as(service, await _key(service, trusted_signals=["mentions"])) as c:
        r = await c.post("/v1/evaluate", json={**action, "signals": {"mentions:litigation": False}})
        assert r.status_code == 200 and r.json()["effect"] == "allow", r.text
        _refused(await c.post("/v1/evaluate", json={**action, "signals": {"sentiment": 0.99}}), "trusted_signals")
    async with _as(service, await _key(service, trusted_signals="true")) as c:  # as `keys create --attr` stores it
        r = await c.post("/v1/evaluate", json={**action, "signals": {"sentiment": 0.99, "mentions:litigation": False}})
        assert r.status_code == 200, r.text


async def test_role_channel_and_tier_claims_need_trusted_fields(service):
    """Before: any app key became a power user by sending X-PolicyEngine-Actor-Role: power (200 from
    the model it picked), and set channel / tenant_tier in the evaluate body."""
    async with service.client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "gemma-27b", "messages": MSG},
                         headers={"X-PolicyEngine-Actor-Role": "power"})
        _refused(r, "trusted_fields")
        assert r.json()["error"]["param"] == "actor_role"
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG,
                                                       "metadata": {"actor_role": "power"}})
        _refused(r, "trusted_fields")
        _refused(await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG},
                              headers={"X-PolicyEngine-Channel": "internal"}), "trusted_fields")
        for field in ("actor_role", "channel", "tenant_tier"):
            _refused(await c.post("/v1/evaluate", json={"action": "classify_ticket", field: "x"}), "trusted_fields")
        _refused(await c.get("/v1/models", params={"actor_role": "power"}), "trusted_fields")
        assert (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200
    # a key's own attribute is authoritative: repeating it is fine, contradicting it is refused
    async with service.client("power") as c:
        r = await c.post("/v1/chat/completions", json={"model": "gemma-27b", "messages": MSG},
                         headers={"X-PolicyEngine-Actor-Role": "power"})
        assert r.status_code == 200 and r.json()["model"] == "gemma-27b", r.text
        _refused(await c.post("/v1/evaluate", json={"action": "classify_ticket", "actor_role": "agent"}),
                 "trusted_fields")
    async with _as(service, await _key(service, trusted_fields=["channel"])) as c:
        r = await c.post("/v1/evaluate", json={"action": "classify_ticket", "channel": "internal"})
        assert r.status_code == 200 and r.json()["decision_id"]
        _refused(await c.post("/v1/evaluate", json={"action": "classify_ticket", "tenant_tier": "enterprise"}),
                 "trusted_fields")


# ------------------------------------------------------------------ B. 4xx, not 500 (#11)


async def test_malformed_values_are_4xx_with_a_message(service):
    """Before: each of these was a 500 (the cursor one a plain-text 500)."""
    deep = b'{"action": "classify_ticket", "fields": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
    deep_list = b'{"action": "classify_ticket", "fields": {"x": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}}"
    async with service.client() as c:
        cases = [
            ("POST", "/v1/evaluate", {"action": "refund", "fields": {"amount": "NaN GBP"}}),
            ("POST", "/v1/evaluate", {"action": "refund", "fields": {"amount": {"amount": "sNaN", "currency": "GBP"}}}),
            ("POST", "/v1/evaluate", {"action": "refund", "fields": {"amount": {"amount": "NaN", "currency": "GBP"}}}),
            ("POST", "/v1/evaluate", {"action": "refund", "fields": {"amount": {"amount": "Infinity",
                                                                                "currency": "GBP"}}}),
            ("POST", "/v1/evaluate", deep),
            ("POST", "/v1/evaluate", deep_list),
            ("POST", "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": [
                {"type": "text", "text": 5}]}]}),
            ("POST", "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": ["hi"]}]}),
            ("POST", "/v1/evaluate", {"action": "classify_ticket", "request_id": {"a": 1}}),
            ("POST", "/v1/evaluate", {"action": "refund", "fields": {"amount": "150 GBP"}, "request_id": "r" * 500}),
            ("POST", "/v1/evaluate", {"action": "refund", "fields": {"amount": "150 GBP"}, "answers": {"q": 1}}),
            ("GET", "/v1/decisions?before=99999999999999999999999", None),
            ("GET", "/v1/decisions?before=-1", None),
            ("GET", "/v1/decisions?since=nan", None),
            ("GET", "/v1/decisions?until=1e999", None),
            ("GET", "/v1/decisions?action=%00", None),  # PostgreSQL text cannot hold NUL: was a 500 there
            ("GET", "/v1/decisions?kind=%00", None),
            ("GET", "/v1/decisions/%00", None),
        ]
        for method, path, body in cases:
            if isinstance(body, bytes):
                r = await c.request(method, path, content=body, headers={"content-type": "application/json"})
            else:
                r = await c.request(method, path, json=body)
            assert 400 <= r.status_code < 500, (path, body if not isinstance(body, bytes) else "deep",
                                                r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["message"] and err["code"], err
    async with service.client("admin") as c:
        for method, path, body in [("DELETE", "/v1/admin/keys/%00", None),
                                   ("POST", "/v1/admin/keys", {"roles": ["app"], "subject": "a\x00b"}),
                                   ("POST", "/v1/admin/keys", {"roles": ["app"], "subject": "a", "groups": ["\x00"]})]:
            r = await c.request(method, path, json=body)
            assert 400 <= r.status_code < 500 and r.json()["error"]["message"], (path, body, r.status_code, r.text)


async def test_request_bodies_are_limited_in_depth(tmp_path, service_factory):
    """The nesting limit is a setting (`max_json_depth`, default 32; the body is level 1)."""
    def nested(n: int) -> dict:
        d: Any = 1
        for _ in range(n - 1):  # the body is level 1: n - 1 objects below it
            d = {"k": d}
        return {"action": "classify_ticket", "fields": d}

    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", max_json_depth=8) as svc, svc.client() as c:
        assert (await c.post("/v1/evaluate", json=nested(8))).status_code == 200
        r = await c.post("/v1/evaluate", json=nested(9))
        assert r.status_code == 400 and r.json()["error"]["code"] == "body_too_deep", r.text
        assert "8 levels" in r.json()["error"]["message"]


async def test_an_adapter_failing_after_the_call_leaves_both_rows_and_a_502(service, monkeypatch):
    """Before: an unexpected exception in the adapter after the model answered was a 500 with no
    outcome row (the decision row alone said `dispatched`)."""
    from types import SimpleNamespace

    import orjson
    from policyengine.adapters import openai_compat

    calls = []

    def loads(raw):  # the answer arrived; translating it fails in a way the adapter did not foresee
        calls.append(len(raw))
        raise RuntimeError("cannot read the answer (bug in /srv/policyengine/translate.py)")

    monkeypatch.setattr(openai_compat, "orjson", SimpleNamespace(dumps=orjson.dumps, loads=loads,
                                                                 JSONDecodeError=orjson.JSONDecodeError))
    async with service.client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
    assert r.status_code == 502, r.text
    assert calls  # the model was called
    assert "RuntimeError" not in r.text and "/srv/" not in r.text
    did = r.headers["x-policyengine-decision-id"]
    err = r.json()["error"]
    assert err["decision_id"] == did and err["error_class"] == "failover" and err["reason"] == "adapter_error"
    async with service.client() as c:
        for _ in range(100):
            rec = (await c.get(f"/v1/decisions/{did}")).json()
            if "outcome_row" in rec:
                break
            await asyncio.sleep(0.05)
    assert rec["record"]["extra"]["outcome"] == "dispatched"
    out = rec["outcome_row"]["record"]
    assert out["extra"]["outcome"] == "upstream_failed" and out["extra"]["error_class"] == "failover"
    assert all(a["reason"] == "adapter_error" for a in out["attempts"] if not a.get("skipped"))


async def test_a_stream_the_adapter_cannot_read_is_a_classified_failure():
    """Before: an unexpected exception while reading a stream's chunks escaped as itself (a crash of
    the relay) instead of a classified failover."""
    from policyengine.adapters import TransportError
    from policyengine.adapters.openai_compat import OpenAIChunkStream

    class Event:
        event, data = "message", '{"choices": []}'

    class Broken(OpenAIChunkStream):
        async def _events(self):
            yield Event()
            raise KeyError("choices")

    stream = Broken(response=None)  # type: ignore[arg-type]
    got = []
    with pytest.raises(TransportError) as e:
        async for chunk in stream:
            got.append(chunk)
    assert got == [{"choices": []}] and e.value.reason == "adapter_error"
    assert "KeyError" not in str(e.value)


async def test_an_unexpected_dispatcher_error_leaves_an_outcome_row_and_a_502(service, monkeypatch):
    """A failure outside the adapters (the dispatcher itself) is still classified and logged."""
    disp = service.runtime.policies.dispatcher

    async def broken(*a, **kw):
        raise RuntimeError("bug in /srv/policyengine/dispatch.py")

    monkeypatch.setattr(disp, "complete", broken)
    async with service.client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        assert r.status_code == 502, r.text
        assert "RuntimeError" not in r.text and "/srv/" not in r.text
        did = r.headers["x-policyengine-decision-id"]
        for _ in range(100):
            rec = (await c.get(f"/v1/decisions/{did}")).json()
            if "outcome_row" in rec:
                break
            await asyncio.sleep(0.05)
    assert rec["outcome_row"]["record"]["extra"]["outcome"] == "upstream_failed"


# ------------------------------------------------------------------ C. unguessable ids (#13)


def test_decision_ids_are_unordered_unrelated_and_unique():
    """Before: 64 random bits per process + a counter, so consecutive ids shared their first 16
    hex digits and sorted in issue order."""
    import uuid

    from policyengine.gateway import new_decision_id, outcome_id

    ids = [new_decision_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    for i in ids[:1000]:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 4 and u.variant == uuid.RFC_4122
        assert outcome_id(i) == str(uuid.uuid5(u, "outcome"))
    first = ids[:1000]
    assert first != sorted(first)
    # consecutive ids share no prefix beyond chance (8 hex digits: 1 in 4 billion per pair)
    assert all(a[:8] != b[:8] for a, b in pairwise(ids))
    shared = sum(a[0] == b[0] for a, b in pairwise(first))
    assert shared < 150  # ~62 expected for independent ids; a counter-suffix scheme gives 999


async def test_ids_of_consecutive_requests_share_no_prefix(service):
    async with service.client() as c:
        ids = [(await c.post("/v1/evaluate", json={"action": "classify_ticket"})).json()["decision_id"]
               for _ in range(3)]
    assert len(set(ids)) == 3 and all(a[:8] != b[:8] for a, b in pairwise(ids))


def test_ids_differ_after_a_fork():
    import os

    from policyengine.gateway import new_decision_id

    new_decision_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(w, new_decision_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.waitpid(pid, 0)
    os.close(r)
    assert child and child != new_decision_id() and child[:8] != new_decision_id()[:8]


# ------------------------------------------------------------------ D. auth_disabled, internals (#16)


def _serve(monkeypatch, *args: str) -> tuple[int, str, list]:
    import uvicorn
    from typer.testing import CliRunner

    from policyengine.cli import app

    runs: list = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: runs.append(kw))
    monkeypatch.setenv("POLICYENGINE_AUTH_DISABLED", "true")
    monkeypatch.delenv("POLICYENGINE_SETTINGS_JSON", raising=False)
    res = CliRunner().invoke(app, ["serve", *args])
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes is not None else ""), runs


def test_auth_disabled_is_refused_on_a_public_bind(monkeypatch):
    """Before: `serve --host 0.0.0.0` with auth_disabled started silently, every request an admin."""
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        code, out, runs = _serve(monkeypatch, "--host", host)
        assert code == 2 and not runs, (host, code, out)
        assert "auth_disabled" in out and "loopback" in out
    code, out, runs = _serve(monkeypatch, "--host", "127.0.0.1")
    assert code == 0 and len(runs) == 1, out
    assert "auth_disabled" in out and "WARNING" in out


async def test_reload_errors_carry_no_paths_or_exception_names(tmp_path, service_factory, policies_dir):
    """Before: a refused reload answered `error: "FileNotFoundError: policy path not found: /tmp/..."` and
    the server's absolute file paths in `files`."""
    pdir = tmp_path / "policies"
    shutil.copytree(policies_dir, pdir)
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=pdir) as svc, \
            svc.client("admin") as c:
        f = pdir / "gateway.policy"
        f.write_text(f.read_text() + "\ndeny frobnicate when amount >>> 3\n")
        r = await c.post("/v1/admin/policy/reload")
        assert r.status_code == 422 and not r.json()["ok"]
        body = r.json()
        assert body["error_code"] == "policy_invalid" and body["diagnostics"], body
        assert body["diagnostics"][0]["file"] == "gateway.policy"
        shutil.rmtree(pdir)
        r = await c.post("/v1/admin/policy/reload")
        assert r.status_code == 422 and r.json()["error_code"] == "policy_path_not_found", r.text
        status = await c.get("/v1/admin/policy")
        for resp in (r, status):
            assert str(tmp_path) not in resp.text and "Error:" not in resp.text, resp.text
        assert status.json()["files"] == ["gateway.policy"]


async def test_approvals_unavailable_names_no_exception(service, monkeypatch):
    """Before: 503 `... the approval could not be created: RuntimeError`."""
    async def broken(**kw):
        raise RuntimeError("database at /var/lib/pe.db is locked")

    monkeypatch.setattr(service.runtime.approvals, "hold", broken)
    async with service.client() as c:
        r = await c.post("/v1/evaluate", json={"action": "refund", "fields": {"amount": "150 GBP"}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "approvals_unavailable", r.text
    assert "RuntimeError" not in r.text and "/var/lib" not in r.text
    assert r.json()["error"]["decision_id"] in r.json()["error"]["message"]


async def test_evaluation_errors_name_no_exception():
    """Before: `cannot evaluate this action: '>' not supported between instances of 'str' and 'Decimal'`
    (the engine's words, sent to the client)."""
    from types import SimpleNamespace

    from policyengine.gateway.call import evaluate
    from policyengine.gateway.errors import EvaluationFailed
    from policyengine.types import Action

    class Broken:
        def signals_needed(self, action):
            return set()

        def evaluate(self, action, signals):
            raise TypeError("'>' not supported between instances of 'str' and 'Decimal'")

    with pytest.raises(EvaluationFailed) as e:
        await evaluate(SimpleNamespace(signals=None), Broken(), Action(action="refund"))
    assert "instances" not in e.value.message and "Decimal" not in e.value.message
    assert e.value.message.startswith("cannot evaluate this action")


# ------------------------------------------------------------------ E. every body bounded (#4)


async def _send_endless(app: Any, method: str, path: str, *, total: int, chunk: int,
                        declared: int | None = None) -> tuple[int | None, int, bytes]:
    """Send a chunked body of `total` bytes, produced lazily; -> (status, bytes the app pulled, body)."""
    pulled = sent = 0
    out: dict[str, Any] = {"status": None, "body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal pulled, sent
        if sent >= total:
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        n = min(chunk, total - sent)
        sent += n
        pulled += n
        return {"type": "http.request", "body": b" " * n, "more_body": sent < total}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    length = [(b"content-length", str(declared).encode())] if declared is not None else \
        [(b"transfer-encoding", b"chunked")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), *length], "client": ("127.0.0.1", 1234),
             "server": ("127.0.0.1", 80)}
    await asyncio.wait_for(app(scope, receive, send), 30)
    return out["status"], pulled, out["body"]


OTHERS = ("/v1/approvals", "/v1/integrations", "/review")  # bounded by the approvals package itself


async def test_every_route_refuses_an_oversized_body(tmp_path, policies_dir):
    """Before: routes that do not read a body (policy reload, key revocation, every GET) ignored an
    oversized one and answered as if it were not there."""
    from fastapi.routing import APIRoute

    from policyengine.api import create_app
    from policyengine.api.app import discover_routes
    from policyengine.settings import Settings

    limit = 64 * 1024
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'pe.db'}", policy_path=[str(policies_dir)],
                              auth_disabled=True, max_body_bytes=limit))
    routers, _ = discover_routes()
    routes = [(m, r.path) for router in routers for r in router.routes
              if isinstance(r, APIRoute) and not r.path.startswith(OTHERS) for m in sorted(r.methods - {"HEAD"})]
    routes += [("GET", "/openapi.json"), ("GET", "/docs")]
    assert ("POST", "/v1/admin/policy/reload") in routes and ("POST", "/v1/evaluate") in routes
    routes.append(("POST", "/no/such/route"))
    for method, path in routes:
        path = path.replace("{decision_id}", "d1").replace("{key_id}", "k1")
        status, pulled, body = await _send_endless(app, method, path, total=256 * 1024 * 1024, chunk=16 * 1024)
        assert status == 413 and b"body_too_large" in body, (method, path, status, body[:200])
        assert pulled <= limit + 16 * 1024, (method, path, pulled)  # refused at the limit, not buffered
        status, pulled, _ = await _send_endless(app, method, path, total=10, chunk=10, declared=limit + 1)
        assert status == 413 and pulled == 0, (method, path, status)  # a declared length: refused unread

