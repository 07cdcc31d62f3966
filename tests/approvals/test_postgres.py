"""Scale-out on real PostgreSQL: the first decision wins under contention, and
pending approvals survive SIGKILL + restart and time out exactly once while two
server processes sweep the same database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from helpers.net import free_port

from approvals.conftest import POLICY
from approvals.harness import Recorder
from approvals.helpers import refund_action, refund_decision, reviewer, settings
from policyengine.approvals.errors import ApprovalConflict
from policyengine.approvals.service import ApprovalService
from policyengine.approvals.states import State
from policyengine.store import make_async_engine, upgrade

pytestmark = pytest.mark.postgres


async def test_fifty_concurrent_decisions_exactly_one_wins(pg_schema_url):
    upgrade(pg_schema_url)
    engine = make_async_engine(pg_schema_url)  # the service's default pool (5 + 10 overflow)
    svc = ApprovalService(engine, settings())
    try:
        res = await svc.hold(action=refund_action(), decision=refund_decision())

        async def one(i: int):
            who = reviewer(f"reviewer-{i}")
            if i % 2:
                return await svc.decide(res.approval_id, who, approve=False, reason=f"no ({i})")
            return await svc.decide(res.approval_id, who, approve=True, reason=f"yes ({i})")

        results = await asyncio.gather(*(one(i) for i in range(50)), return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert all(isinstance(e, ApprovalConflict) for e in losers), [type(e) for e in losers]
        final = await svc.get(res.approval_id)
        assert final.state == winners[0].state and final.decided_by == winners[0].decided_by and final.version == 2
        trail = await svc.audit_trail(res.approval_id)
        assert [e.kind for e in trail if e.kind in ("approved", "rejected")] == [winners[0].state.value]
        async with engine.connect() as conn:
            cb = (await conn.execute(sa.text("select count(*) from notification_outbox where kind='slack_update'"))).scalar()
        assert cb == 0  # no slack channel on this approval: nothing enqueued
    finally:
        await engine.dispose()


def _serve(url: str, port: int, policies: Path, callback_secret: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "POLICYENGINE_MIGRATE_ON_START": "false",
        "POLICYENGINE_APPROVALS_LINK_SECRET": "restart-link-secret-0123456789abc",
        "POLICYENGINE_APPROVALS_CALLBACK_SECRET": callback_secret,
        "POLICYENGINE_APPROVALS_SWEEP_INTERVAL_S": "0.3",
        "POLICYENGINE_APPROVALS_DELIVERY_BACKOFF_S": "0.2",
        "POLICYENGINE_APPROVALS_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    cmd = [str(Path(sys.executable).parent / "policyengine"), "serve", "--policies", str(policies), "--port", str(port),
           "--db", url, "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server on {port} not ready:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
async def test_pending_approvals_survive_sigkill_and_time_out_exactly_once(pg_schema_url, tmp_path):
    upgrade(pg_schema_url)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "support.policy").write_text(POLICY)
    log = tmp_path / "servers.log"
    rec = Recorder().start()
    engine = make_async_engine(pg_schema_url)
    svc = ApprovalService(engine, settings())
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen] = []
    n = 12
    try:
        # Both replicas boot at the same instant on the same database.
        procs = [_serve(pg_schema_url, p, tmp_path / "policies", "cb-secret-0123456789abcdef", log)
                 for p in ports]
        for p, proc in zip(ports, procs, strict=True):
            _ready(p, proc, log)
        ids = [
            (await svc.hold(action=refund_action(amount=f"{200 + i} GBP"), callback_url=f"{rec.url}/callback",
                            decision=refund_decision(timeout_s=6, remind_s=None))).approval_id
            for i in range(n)
        ]
        last_deadline = time.monotonic() + 6
        for proc in procs:  # crash both replicas before any deadline
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert [(await svc.get(i)).state for i in ids] == [State.pending] * n
        await asyncio.sleep(max(0.0, last_deadline - time.monotonic()) + 0.5)  # deadlines pass while nothing runs
        assert [(await svc.get(i)).state for i in ids] == [State.pending] * n
        procs = [_serve(pg_schema_url, p, tmp_path / "policies", "cb-secret-0123456789abcdef", log) for p in ports]
        for p, proc in zip(ports, procs, strict=True):
            _ready(p, proc, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(rec.on("/callback")) < n:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # several more sweeps by both replicas: nothing fires again
        states = [(await svc.get(i)).state for i in ids]
        assert states == [State.expired] * n
        for i in ids:
            kinds = [e.kind for e in await svc.audit_trail(i)]
            assert kinds.count("timed_out") == 1, kinds
        callbacks = rec.on("/callback")
        assert sorted(c.json()["approval_id"] for c in callbacks) == sorted(ids), "each callback exactly once"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        rec.stop()
        await engine.dispose()
