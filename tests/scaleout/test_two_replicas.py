"""Two `policyengine serve` replicas sharing the real PostgreSQL and Redis.

What must hold when the control layer runs on several machines:
  * a cooldown set through one replica (429 + Retry-After) is honoured by the other;
  * a session pinned through one replica stays on its model through the other;
  * an approval made on one replica releases an action long-polling on the other;
  * approval timeouts are swept by every replica, and each fires exactly once.

Skips with the reason when PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is
absent. Isolation: a fresh PostgreSQL schema, and model names / session ids unique to
this run (the service's Redis keys are named after them), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from helpers.net import free_port

from policyengine.demo import ServiceProcess
from policyengine.demo.cluster import LocalCluster
from policyengine.demo.inbox import Inbox
from policyengine.simulate.faults import Fault
from policyengine.simulate.server import SimServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
TENANT = "scaleout"
TIMEOUTS = 12  # approvals left to time out while both replicas sweep


@dataclass
class Cluster:
    a: ServiceProcess
    b: ServiceProcess
    cool: SimServer  # preferred model of the cooldown scenario
    primary: SimServer  # preferred model of the stickiness scenario
    spare: SimServer  # the fallback of both
    names: dict[str, str]  # role -> unique model name
    tokens: dict[str, str]
    db_url: str
    run: str  # unique suffix of this run
    redis_url: str
    inbox: Inbox  # the reviewers' webhook
    broken: SimServer  # crashes on every request (circuit breaker scenario)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def _policy(names: dict[str, str]) -> str:
    c, p, s, k = names["cool"], names["primary"], names["spare"], names["broken"]
    return f"""
policy "scaleout" version 1
model {c} {{ provider vllm base_url env("SO_COOL_URL") cost 0 }}
model {k} {{ provider vllm base_url env("SO_BROKEN_URL") cost 0 }}
model {p} {{ provider vllm base_url env("SO_PRIMARY_URL") cost 0 }}
model {s} {{ provider vllm base_url env("SO_SPARE_URL") cost 0 }}

route when use_case == "cooldown" -> {c} fallback [{s}]
route when use_case == "breaker"  -> {k} fallback [{s}]
route when use_case == "sticky"   -> {p} fallback [{s}] sticky session
route default                     -> {p} fallback [{s}]
authorize chat

require approval for refund when amount > 100 GBP {{
  reviewers group "refunds"
  timeout 1h -> deny
}}
require approval for wire_transfer {{
  reviewers group "refunds"
  timeout 2s -> deny
}}
require approval for send_email {{
  reviewers group "refunds"
  notify webhook "env:SO_HOOK"
  remind every 1s
  timeout 1h -> deny
}}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Cluster]:
    run = uuid.uuid4().hex[:8]
    names = {"cool": f"cool-{run}", "primary": f"prim-{run}", "spare": f"spare-{run}", "broken": f"brk-{run}"}
    cool, primary, spare, broken = (SimServer(names[k], flavour="vllm") for k in ("cool", "primary", "spare", "broken"))
    for sim in (cool, primary, spare, broken):
        await sim.start()
    hook_secret = secrets.token_urlsafe(24)
    inbox = Inbox(port=free_port(), secret=hook_secret)
    await inbox.start()
    d = tmp_path_factory.mktemp("scaleout")
    (d / "policies").mkdir()
    (d / "policies" / "scaleout.policy").write_text(_policy(names))
    tokens = {"app": "so-app-" + secrets.token_urlsafe(20), "reviewer": "so-rev-" + secrets.token_urlsafe(20)}
    seed = [{"token_env": "SO_APP_TOKEN", "tenant": TENANT, "roles": ["app"], "subject": "agent-1"},
            {"token_env": "SO_REVIEWER_TOKEN", "tenant": TENANT, "roles": ["reviewer"], "subject": "rita",
             "groups": ["refunds"]}]
    lc = LocalCluster(postgres_url=postgres_url, redis_url=redis_url, policy_dir=d / "policies", workdir=d,
                      replicas=2, seed_keys=seed, run=run, env={
                          "POLICYENGINE_APPROVALS_SWEEP_INTERVAL_S": "0.5",
                          "POLICYENGINE_APPROVALS_WEBHOOK_SECRET": hook_secret,
                          # the reviewers' webhook is on loopback: outbound requests there are allowlisted
                          "POLICYENGINE_WEBHOOK_HOSTS_ALLOW": "127.0.0.1",
                          "SO_HOOK": inbox.url,  # the policy says notify webhook "env:SO_HOOK"
                          "SO_APP_TOKEN": tokens["app"], "SO_REVIEWER_TOKEN": tokens["reviewer"],
                          "SO_COOL_URL": cool.url, "SO_PRIMARY_URL": primary.url, "SO_SPARE_URL": spare.url,
                          "SO_BROKEN_URL": broken.url})
    try:
        await lc.start(timeout=120)
        a, b = lc.replicas
        yield Cluster(a, b, cool, primary, spare, names, tokens, lc.db_url, run, redis_url, inbox, broken)
    finally:
        await lc.stop()
        await inbox.stop()
        for sim in (cool, primary, spare, broken):
            await sim.stop()


async def _chat(client: httpx.AsyncClient, c: Cluster, replica: ServiceProcess, *, use_case: str,
                session: str | None = None) -> httpx.Response:
    headers = {**c.auth("app"), "X-PolicyEngine-Use-Case": use_case}
    if session:
        headers["X-PolicyEngine-Session"] = session
    return await client.post(f"{replica.url}/v1/chat/completions", headers=headers,
                             json={"model": "auto", "messages": [{"role": "user", "content": "Hello there."}]})


def _attempts(r: httpx.Response) -> str:
    return r.headers.get("x-policyengine-attempts", "")


async def test_cooldown_set_through_one_replica_is_honoured_by_the_other(cluster: Cluster) -> None:
    c = cluster
    p, s = c.names["cool"], c.names["spare"]
    c.cool.add_fault(Fault(kind="rate_limit", retry_after=30, times=None))
    try:
        before = len(c.cool.seen())
        async with httpx.AsyncClient(timeout=60) as client:
            r1 = await _chat(client, c, c.a, use_case="cooldown")
            r2 = await _chat(client, c, c.b, use_case="cooldown")
        assert r1.status_code == 200 and r1.headers["x-policyengine-model"] == s, r1.text
        assert f"{p}:429:retry" in _attempts(r1)
        assert r2.status_code == 200 and r2.headers["x-policyengine-model"] == s, r2.text
        assert f"{p}:skipped:cooldown" in _attempts(r2), _attempts(r2)
        assert len(c.cool.seen()) - before == 1  # replica B never called the cooling model
    finally:
        c.cool.clear_faults()


async def test_circuit_breaker_opened_by_failures_on_both_replicas(cluster: Cluster) -> None:
    c = cluster
    k, s = c.names["broken"], c.names["spare"]
    c.broken.add_fault(Fault(kind="error", status=500, times=None))  # the engine is dead
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            failing = [await _chat(client, c, replica, use_case="breaker") for replica in (c.a, c.b, c.a)]
            calls = len(c.broken.seen())
            after = await _chat(client, c, c.b, use_case="breaker")
        for r in failing:  # each request still answered by the fallback
            assert r.status_code == 200 and r.headers["x-policyengine-model"] == s, _attempts(r)
            assert f"{k}:500:failover" in _attempts(r)
        # three failures, counted across both replicas, open the breaker for everyone
        assert after.status_code == 200 and f"{k}:skipped:breaker_open" in _attempts(after), _attempts(after)
        assert len(c.broken.seen()) == calls
    finally:
        c.broken.clear_faults()


async def test_session_stays_pinned_across_replicas(cluster: Cluster) -> None:
    c = cluster
    p, s = c.names["primary"], c.names["spare"]
    session = f"sess-{c.run}"
    c.primary.add_fault(Fault(kind="error", status=500, times=1))  # the primary crashes once (vLLM EngineCore body: no retry)
    async with httpx.AsyncClient(timeout=60) as client:
        t1 = await _chat(client, c, c.a, use_case="sticky", session=session)
        before = len(c.primary.seen())
        t2 = await _chat(client, c, c.b, use_case="sticky", session=session)
        t3 = await _chat(client, c, c.a, use_case="sticky", session=session)
        fresh = await _chat(client, c, c.b, use_case="sticky", session=f"other-{c.run}")
    assert t1.status_code == 200 and t1.headers["x-policyengine-model"] == s, (t1.text, _attempts(t1))
    assert f"{p}:500:failover" in _attempts(t1)
    assert t2.status_code == 200 and t2.headers["x-policyengine-model"] == s, _attempts(t2)
    assert t3.status_code == 200 and t3.headers["x-policyengine-model"] == s, _attempts(t3)
    assert len(c.primary.seen()) - before == 1  # only the fresh session went to the primary
    assert fresh.status_code == 200 and fresh.headers["x-policyengine-model"] == p, _attempts(fresh)


async def test_approval_on_one_replica_releases_a_waiter_on_the_other(cluster: Cluster) -> None:
    c = cluster
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{c.a.url}/v1/evaluate", headers=c.auth("app"), json={
            "action": "refund", "actor": "agent-1", "fields": {"amount": "150 GBP", "order": c.run}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["effect"] == "require_approval"
        approval_id = body["approval"]["approval_id"]
        waiter = asyncio.create_task(client.get(f"{c.b.url}/v1/approvals/{approval_id}", params={"wait": 30},
                                                headers=c.auth("app")))
        await asyncio.sleep(1.0)
        assert not waiter.done(), "the long poll on replica B returned before anyone decided"
        ok = await client.post(f"{c.a.url}/v1/approvals/{approval_id}/approve", headers=c.auth("reviewer"),
                               json={"reason": "checked the order"})
        assert ok.status_code == 200, ok.text
        released = await asyncio.wait_for(waiter, 20)
    view = released.json()
    assert released.status_code == 200 and view["state"] == "approved" and view["released"] is True, view


async def test_each_timeout_fires_once_with_two_sweeping_replicas(cluster: Cluster) -> None:
    c = cluster
    ids = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(TIMEOUTS):
            replica = c.a if i % 2 == 0 else c.b
            r = await client.post(f"{replica.url}/v1/evaluate", headers=c.auth("app"), json={
                "action": "wire_transfer", "actor": "agent-1", "fields": {"n": i, "run": c.run}})
            assert r.status_code == 200 and r.json()["effect"] == "require_approval", r.text
            ids.append(r.json()["approval"]["approval_id"])
        # both replicas sweep every 0.5 s; the timeout is 2 s
        views = await asyncio.gather(*(client.get(f"{c.b.url}/v1/approvals/{i}", params={"wait": 20},
                                                  headers=c.auth("app")) for i in ids))
    assert [v.json()["state"] for v in views] == ["expired"] * TIMEOUTS
    await asyncio.sleep(1.5)  # a few more sweeps on both replicas: nothing may fire again
    engine = sa.create_engine(c.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT approval_id, count(*) FROM approval_events WHERE kind = 'timed_out' "
                "AND approval_id = ANY(:ids) GROUP BY approval_id"), {"ids": ids}).all()
            versions = dict(conn.execute(sa.text("SELECT id, version FROM approvals WHERE id = ANY(:ids)"),
                                         {"ids": ids}).all())
    finally:
        engine.dispose()
    assert dict(rows) == dict.fromkeys(ids, 1)
    assert set(versions.values()) == {2}  # pending (1) -> expired (2), one compare-and-set each


async def test_reminders_and_notifications_go_out_once_with_two_replicas(cluster: Cluster) -> None:
    c = cluster
    ids = []
    async with httpx.AsyncClient(timeout=60) as client:
        for i, replica in enumerate((c.a, c.b, c.a)):
            r = await client.post(f"{replica.url}/v1/evaluate", headers=c.auth("app"), json={
                "action": "send_email", "actor": "agent-1", "fields": {"to": f"x{i}@example.com", "run": c.run}})
            assert r.status_code == 200 and r.json()["effect"] == "require_approval", r.text
            ids.append(r.json()["approval"]["approval_id"])
        await asyncio.sleep(3.6)  # ~3 reminders each, swept by both replicas every 0.5 s
        for aid in ids:  # stop the reminders: cancel each approval
            r = await client.post(f"{c.b.url}/v1/approvals/{aid}/cancel", headers=c.auth("app"), json={})
            assert r.status_code == 200, r.text
    await asyncio.sleep(1.5)  # let the outbox drain
    engine = sa.create_engine(c.db_url)
    try:
        with engine.connect() as conn:
            sent = dict(conn.execute(sa.text("SELECT id, reminders_sent FROM approvals WHERE id = ANY(:ids)"),
                                     {"ids": ids}).all())
            events = conn.execute(sa.text(
                "SELECT approval_id, at FROM approval_events WHERE kind = 'reminded' AND approval_id = ANY(:ids) "
                "ORDER BY approval_id, at"), {"ids": ids}).all()
    finally:
        engine.dispose()
    by: dict[str, list] = {}
    for aid, at in events:
        by.setdefault(aid, []).append(at)
    for aid in ids:
        ats = by.get(aid, [])
        # every 1 s for ~3.6 s: 1-4 reminders (fewer only if the machine stalls the sweeps)
        assert 1 <= len(ats) == sent[aid] <= 4, (aid, sent[aid], ats)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ats)]
        assert all(g >= 0.9 for g in gaps), f"{aid}: reminders {gaps} s apart (one fired twice?)"
    got = [r for r in c.inbox.received if (r["payload"].get("approval") or {}).get("approval_id") in ids]
    keys = [r["idempotency_key"] for r in got if r["idempotency_key"]]
    assert len(keys) == len(set(keys)), "a notification was delivered twice"
    for aid in ids:
        mine = [r["payload"]["event"] for r in got if r["payload"]["approval"]["approval_id"] == aid]
        assert mine.count("approval.request") == 1, (aid, mine)
        assert mine.count("approval.reminder") == sent[aid], (aid, mine)
    assert c.inbox.rejected == []  # every body carried a valid signature


async def test_replicas_share_one_decision_log_chain(cluster: Cluster) -> None:
    from policyengine.store import make_sync_engine, verify_chain

    engine = make_sync_engine(cluster.db_url)
    try:
        res = verify_chain(engine)
    finally:
        engine.dispose()
    assert res.ok, res.problem
    assert res.rows >= 10


def _nginx_conf(workdir: Path, listen: int, a: int, b: int) -> Path:
    """examples/deploy/nginx/nginx.conf, pointed at the two local replicas (nothing else changed)."""
    src = (ROOT / "examples" / "deploy" / "nginx" / "nginx.conf").read_text()
    conf = (src.replace("server policyengine-1:8000", f"server 127.0.0.1:{a}")
            .replace("server policyengine-2:8000", f"server 127.0.0.1:{b}")
            .replace("listen 8080;", f"listen 127.0.0.1:{listen};")
            .replace("worker_processes auto;", "worker_processes 1;")
            .replace("http {", "http {\n" + "".join(f"  {k}_temp_path {workdir}/{k};\n"
                                                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")), 1))
    assert f"127.0.0.1:{a}" in conf and f"127.0.0.1:{b}" in conf and f"127.0.0.1:{listen}" in conf
    path = workdir / "nginx.conf"
    path.write_text(conf)
    return path


async def _decisions_total(client: httpx.AsyncClient, url: str) -> float:
    text = (await client.get(f"{url}/metrics")).text
    return sum(float(v) for v in re.findall(r'^policyengine_decisions_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


async def test_the_shipped_nginx_config_fronts_both_replicas(cluster: Cluster, tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light); the reverse-proxy check needs it")
    c = cluster
    port = free_port()
    conf = _nginx_conf(tmp_path, port, c.a.port, c.b.port)
    proc = await asyncio.create_subprocess_exec(
        nginx, "-p", str(tmp_path), "-c", str(conf), "-g", f"daemon off; pid {tmp_path}/nginx.pid;",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    proxy = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(50):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{proxy}/readyz")).status_code == 200:
                        break
                assert proc.returncode is None, (await proc.stderr.read()).decode() if proc.stderr else ""
                await asyncio.sleep(0.1)
            # round robin: both replicas take decisions made through the proxy
            before = [await _decisions_total(client, r.url) for r in (c.a, c.b)]
            for i in range(6):
                r = await client.post(f"{proxy}/v1/evaluate", headers=c.auth("app"),
                                      json={"action": "chat", "fields": {"i": i}})
                assert r.status_code == 200, r.text
            after = [await _decisions_total(client, r.url) for r in (c.a, c.b)]
            assert all(x > y for x, y in zip(after, before, strict=True)), (before, after)
            # metrics stay inside the cluster network
            assert (await client.get(f"{proxy}/metrics")).status_code == 403
            # a streamed chat completion is relayed as server-sent events, to the end
            lines = []
            async with client.stream("POST", f"{proxy}/v1/chat/completions", headers=c.auth("app"), json={
                    "model": "auto", "stream": True, "messages": [{"role": "user", "content": "Hello"}]}) as s:
                assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
                async for line in s.aiter_lines():
                    if line.startswith("data: "):
                        lines.append(line[6:])
            assert lines[-1] == "[DONE]" and len(lines) > 3
            assert json.loads(lines[0])["object"] == "chat.completion.chunk"
            # an approval long poll through the proxy is released by a decision through the proxy
            r = await client.post(f"{proxy}/v1/evaluate", headers=c.auth("app"), json={
                "action": "refund", "actor": "agent-1", "fields": {"amount": "300 GBP", "via": "nginx"}})
            aid = r.json()["approval"]["approval_id"]
            waiter = asyncio.create_task(client.get(f"{proxy}/v1/approvals/{aid}", params={"wait": 20},
                                                    headers=c.auth("app")))
            await asyncio.sleep(0.5)
            ok = await client.post(f"{proxy}/v1/approvals/{aid}/approve", headers=c.auth("reviewer"), json={})
            assert ok.status_code == 200, ok.text
            view = (await asyncio.wait_for(waiter, 25)).json()
            assert view["state"] == "approved" and view["released"] is True
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
