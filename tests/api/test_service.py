"""evaluate, decisions, auth, admin reload, metrics: httpx against the real service."""

from __future__ import annotations

import asyncio
import shutil

import pytest


async def test_evaluate_standing_orders(service):
    async with service.client() as c:
        r = await c.post("/v1/evaluate", json={"action": "classify_ticket", "actor": "bot"})
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["effect"] == "allow" and d["decision_id"] and not d["held"]
        assert d["policy_hash"] == service.runtime.policies.current.hash
        r = await c.post("/v1/evaluate", json={"action": "delete_account"})
        assert r.json()["effect"] == "deny"
        r = await c.post("/v1/evaluate", json={"action": "launch_rockets"})
        assert r.json()["effect"] == "deny" and r.json()["default_applied"]
        r = await c.post("/v1/evaluate", json={"action": "refund", "fields": {"amount": "150 GBP"}})
        d = r.json()
        assert d["effect"] == "require_approval" and d["held"]
        assert d["obligations"][0]["group"] == "refunds"
        assert service.runtime.approvals is not None  # the approvals plugin runs in every service
        assert d["approval"]["approval_id"] and d["approval"]["status_url"]
        # a retried held request reuses its approval
        body = {"action": "refund", "fields": {"amount": "300 GBP"}}
        a1 = (await c.post("/v1/evaluate", json=body, headers={"Idempotency-Key": "req-1"})).json()
        a2 = (await c.post("/v1/evaluate", json=body, headers={"Idempotency-Key": "req-1"})).json()
        assert a1["approval"]["approval_id"] == a2["approval"]["approval_id"]
        assert a1["decision_id"] != a2["decision_id"]  # each call is still its own logged decision
        r = await c.post("/v1/evaluate", json={"action": "refund", "fields": {"amount": "50 GBP"}})
        assert r.json()["effect"] != "require_approval"
        # the decision is explained later
        r = await c.get(f"/v1/decisions/{d['decision_id']}")
        exp = r.json()
        assert exp["effect"] == "require_approval" and exp["record"]["request"]["fields"]["amount"] == "150 GBP"
        assert any("require_approval" in line for line in exp["explanation"])


async def test_evaluate_rejects_bad_input(service):
    async with service.client() as c:
        for body, status, needle in [
            ({}, 422, "action"),
            ({"action": ""}, 422, "action"),
            ({"action": "x", "surprise": 1}, 422, "surprise"),
            ({"action": "x", "tenant": "globex"}, 403, "does not match"),
            ({"action": "x", "prompt_tokens": -1}, 422, "prompt_tokens"),
        ]:
            r = await c.post("/v1/evaluate", json=body)
            assert r.status_code == status, (body, r.text)
            assert needle in r.json()["error"]["message"], (body, r.json())
        r = await c.post("/v1/evaluate", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400


async def test_auth_and_tenant_scoping(service):
    async with service.client() as c:
        did = (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).json()["decision_id"]
    async with service.client("other") as c:
        assert (await c.get(f"/v1/decisions/{did}")).status_code == 404
        assert (await c.get("/v1/decisions")).json()["data"] == []
    async with service.client("app") as c:
        data = (await c.get("/v1/decisions", params={"action": "classify_ticket"})).json()["data"]
        assert [d["id"] for d in data] == [did]
        assert (await c.get("/v1/decisions", params={"effect": "maybe"})).status_code == 422
        assert (await c.post("/v1/admin/policy/reload")).status_code == 403
    import httpx

    async with httpx.AsyncClient(base_url=service.url) as c:
        r = await c.post("/v1/evaluate", json={"action": "x"})
        assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
    # admin creates and revokes a key through the API
    async with service.client("admin") as c:
        r = await c.post("/v1/admin/keys", json={"roles": ["app"], "subject": "new-app"})
        assert r.status_code == 201
        token, key_id = r.json()["token"], r.json()["key_id"]
        async with httpx.AsyncClient(base_url=service.url, headers={"X-API-Key": token}) as k:
            assert (await k.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200
            assert (await c.delete(f"/v1/admin/keys/{key_id}")).status_code == 200
            assert (await k.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 401


async def test_health_ready_metrics(service):
    async with service.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        for _ in range(1200):  # ready once the embedding model the policy's `verify` needs is loaded
            r = await c.get("/readyz")
            if r.status_code == 200 or r.json()["checks"]["signals"].startswith("error"):
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200 and r.json()["checks"]["database"] == "ok", r.json()
        await c.post("/v1/evaluate", json={"action": "delete_account"})
        m = (await c.get("/metrics")).text
    assert 'policyengine_decisions_total{effect="deny",kind="evaluate"}' in m
    # every group commit is observed: at least the one that held this decision
    count = next(float(line.split()[-1]) for line in m.splitlines()
                 if line.startswith("policyengine_decision_log_batch_rows_count"))
    assert count >= 1
    assert "policyengine_cooldowns_open" in m and "policyengine_request_latency_seconds_bucket" in m
    wal = next(float(line.split()[-1]) for line in m.splitlines()
               if line.startswith("policyengine_decision_log_wal_bytes "))
    assert wal >= 0  # SQLite: the WAL's size now (0 on PostgreSQL)


async def test_policy_reload_is_atomic_and_refuses_bad_sets(tmp_path, service_factory, policies_dir):
    pdir = tmp_path / "policies"
    shutil.copytree(policies_dir, pdir)
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=pdir) as svc:
        old = svc.runtime.policies.current.hash
        async with svc.client("admin") as c:
            f = pdir / "gateway.policy"
            f.write_text(f.read_text() + "\ndeny frobnicate when amount >>> 3\n")
            r = await c.post("/v1/admin/policy/reload")
            assert r.status_code == 422 and not r.json()["ok"]
            assert svc.runtime.policies.current.hash == old
            f.write_text(f.read_text().replace("\ndeny frobnicate when amount >>> 3\n", "\ndeny frobnicate\n"))
            r = await c.post("/v1/admin/policy/reload")
            assert r.status_code == 200 and r.json()["changed"], r.text
            new = r.json()["hash"]
            assert new != old
            d = (await c.post("/v1/evaluate", json={"action": "frobnicate"})).json()
            assert d["effect"] == "deny" and d["policy_hash"] == new
            hist = (await c.get("/v1/admin/policy")).json()["history"]
            assert {h["hash"] for h in hist} >= {old, new}


@pytest.mark.postgres
async def test_two_replicas_share_one_chain(pg_schema_url, service_factory):
    """Two service instances (replicas) on one PostgreSQL: one consistent hash chain."""
    import asyncio

    from policyengine.store import make_sync_engine, verify_chain

    async with (service_factory(pg_schema_url) as a, service_factory(pg_schema_url) as b,
                a.client() as ca, b.client() as cb):
        rs = await asyncio.gather(*(c.post("/v1/evaluate", json={"action": "classify_ticket"})
                                    for _ in range(40) for c in (ca, cb)))
    assert all(r.status_code == 200 for r in rs)
    engine = make_sync_engine(pg_schema_url)
    res = verify_chain(engine)
    engine.dispose()
    assert res.ok and res.rows >= 80, res.problem


async def test_a_key_revoked_from_the_cli_stops_working_within_the_poll_interval(tmp_path, service_factory):
    """Keys are cached for key_cache_ttl_s (30 s here), but a revocation made by another process
    (`policyengine keys revoke`) clears every replica's cache within key_revocation_poll_s."""
    import asyncio
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    url = f"sqlite:///{tmp_path / 'pe.db'}"
    async with service_factory(url, key_cache_ttl_s=30, key_revocation_poll_s=0.2) as svc:
        async with svc.client("admin") as c:
            r = await c.post("/v1/admin/keys", json={"roles": ["app"], "subject": "cli-revoked"})
            token, key_id = r.json()["token"], r.json()["key_id"]
        async with httpx.AsyncClient(base_url=svc.url, headers={"X-API-Key": token}) as k:
            assert (await k.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200  # cached
            cli = Path(sys.executable).parent / "policyengine"
            res = await asyncio.to_thread(subprocess.run, [str(cli), "keys", "revoke", key_id, "--db", url],
                                          capture_output=True, text=True, timeout=120)
            assert res.returncode == 0, res.stderr
            t0 = time.monotonic()
            while (await k.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200:
                assert time.monotonic() - t0 < 5, "the revoked key still works after 5 s"
                await asyncio.sleep(0.05)
            assert (await k.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 401


async def test_gc_is_tuned_while_serving_and_restored_after(tmp_path, service_factory):
    import gc

    before = gc.get_threshold()
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", gc_gen0_threshold=12_345) as svc:
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() > 0
        async with svc.client() as c:
            assert (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).status_code == 200
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_the_revocation_watcher_survives_a_database_error() -> None:
    """A failed check (the database briefly unavailable, even on the first try) is logged and
    retried; the watcher keeps running and still clears the cache on the next revocation."""
    import asyncio

    from policyengine.gateway import KeyCache

    class Repo:
        def __init__(self) -> None:
            self.answers: list[object] = [RuntimeError("database down"), (0, None), (0, None), (1, 5.0)]

        async def revocation_mark(self):
            a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            if isinstance(a, Exception):
                raise a
            return a

    cache = KeyCache(Repo(), ttl_s=30)  # type: ignore[arg-type]
    cache._cache["h"] = (float("inf"), None)
    task = asyncio.create_task(cache.watch_revocations(0.01))
    for _ in range(200):
        if not cache._cache:
            break
        await asyncio.sleep(0.01)
    assert not task.done() and cache._cache == {}
    task.cancel()


async def test_concurrent_misses_for_one_key_share_one_lookup() -> None:
    """When a cached key expires under load, the requests in flight for it wait for one lookup
    instead of querying the database each; a caller that goes away does not cancel it for the
    others; a lookup that started before an invalidate is answered but not cached."""
    import asyncio

    from policyengine.gateway import KeyCache
    from policyengine.store import KeyInfo

    class Repo:
        def __init__(self) -> None:
            self.calls = 0
            self.release = asyncio.Event()

        async def authenticate(self, token: str):
            self.calls += 1
            await self.release.wait()
            return KeyInfo(key_id="k1", tenant="acme", subject="app", roles={"app"}, groups=set(), attributes={},
                           created_at=0.0, revoked_at=None, description=None)

    repo = Repo()
    cache = KeyCache(repo, ttl_s=30)  # type: ignore[arg-type]
    callers = [asyncio.create_task(cache.lookup("pe_token")) for _ in range(32)]
    await asyncio.sleep(0)
    callers[0].cancel()  # this client hung up
    repo.release.set()
    results = await asyncio.gather(*callers[1:])
    assert repo.calls == 1 and {p.key_id for p in results} == {"k1"}
    assert (await cache.lookup("pe_token")).tenant == "acme" and repo.calls == 1  # cached

    cache.invalidate()
    repo.release = asyncio.Event()
    pending = asyncio.create_task(cache.lookup("pe_token"))
    await asyncio.sleep(0)
    cache.invalidate()  # a revocation seen while the lookup runs
    repo.release.set()
    assert (await pending).key_id == "k1"
    assert cache._cache == {}  # not cached: the next request looks the key up again


async def test_a_reload_whose_model_url_is_refused_is_refused_and_not_recorded(tmp_path, service_factory,
                                                                               policies_dir):
    """A model base_url on the cloud metadata address fails the dispatcher's outbound check: the reload
    is refused like a lint error (the old set keeps serving), and the refused set is not recorded."""
    pdir = tmp_path / "policies"
    shutil.copytree(policies_dir, pdir)
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=pdir) as svc:
        old = svc.runtime.policies.current.hash
        f = pdir / "gateway.policy"
        f.write_text(f.read_text() + '\nmodel meta { provider openai base_url env("PE_T_META_URL") }\n')
        import os

        os.environ["PE_T_META_URL"] = "http://169.254.169.254/v1"
        try:
            async with svc.client("admin") as c:
                r = await c.post("/v1/admin/policy/reload")
                assert r.status_code == 422 and not r.json()["ok"], r.text
                assert svc.runtime.policies.current.hash == old
                hist = (await c.get("/v1/admin/policy")).json()["history"]
        finally:
            del os.environ["PE_T_META_URL"]
        assert {h["hash"] for h in hist} == {old}
