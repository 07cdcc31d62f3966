"""Durability: SIGKILL the real server (a subprocess) under load; after a restart every request that got
a 2xx has its committed decision row, and `policyengine verify-log` passes. Also: SIGHUP reloads policies."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from helpers.net import free_port

from policyengine.store import make_sync_engine

pytestmark = pytest.mark.slow

TOKEN = "pe_crash_test_token_0123456789abcdef"
CLI = str(Path(sys.executable).parent / "policyengine")


def _start(db_url: str, policy_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PE_CRASH_TOKEN": TOKEN, "POLICYENGINE_DATABASE_URL": db_url,
           "POLICYENGINE_POLICY_PATH": str(policy_dir),
           "POLICYENGINE_SEED_KEYS": json.dumps([{"token_env": "PE_CRASH_TOKEN", "tenant": "acme",
                                                  "roles": ["app", "admin"]}]),
           "POLICYENGINE_APPROVALS_LINK_SECRET": "crash-test-link-secret-0123456789",
           "POLICYENGINE_APPROVALS_CALLBACK_SECRET": "crash-test-callback-secret-0123"}
    env.pop("POLICYENGINE_SETTINGS_FILE", None)
    return subprocess.Popen([CLI, "serve", "--port", str(port), "--log-level", "warning"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


async def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=2) as c:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if (await c.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become ready:\n" + log.read_text()[-3000:])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crash_db(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crash.db'}"
    return request.getfixturevalue("pg_schema_url")


async def test_sigkill_under_load_loses_no_acknowledged_decision(crash_db, tmp_path, policies_dir):
    pdir = tmp_path / "policies"
    shutil.copytree(policies_dir, pdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _start(crash_db, pdir, port, log)
    acknowledged: list[str] = []
    try:
        await _wait_ready(url, proc, log)
        stop = asyncio.Event()

        async def worker(i: int) -> None:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                                         timeout=5) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        r = await c.post("/v1/evaluate", json={"action": "refund" if n % 3 else "delete_account",
                                                               "actor": f"w{i}",
                                                               "fields": {"amount": f"{n} GBP"}})
                    except httpx.TransportError:
                        return  # the server is gone
                    if 200 <= r.status_code < 300:
                        acknowledged.append(r.json()["decision_id"])

        tasks = [asyncio.create_task(worker(i)) for i in range(16)]
        t0 = time.monotonic()
        while len(acknowledged) < 300 and time.monotonic() - t0 < 60:
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no flush: a crash
        proc.wait(10)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert len(acknowledged) >= 100, "the load generator barely ran"

    # restart on the same database: every acknowledged decision is there, the chain verifies
    proc = _start(crash_db, pdir, port, log)
    try:
        await _wait_ready(url, proc, log)
        engine = make_sync_engine(crash_db)
        with engine.connect() as conn:
            ids = {r[0] for r in conn.execute(sa.text("SELECT id FROM decisions"))}
        engine.dispose()
        missing = set(acknowledged) - ids
        assert not missing, f"{len(missing)} acknowledged decisions were lost"
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            r = await c.post("/v1/evaluate", json={"action": "classify_ticket"})
            assert r.status_code == 200  # the chain continues after the crash
            # SIGHUP reloads the policy directory atomically
            old = (await c.get("/v1/admin/policy")).json()["hash"]
            f = pdir / "gateway.policy"
            f.write_text(f.read_text() + "\ndeny frobnicate\n")
            os.kill(proc.pid, signal.SIGHUP)
            for _ in range(100):
                new = (await c.get("/v1/admin/policy")).json()["hash"]
                if new != old:
                    break
                await asyncio.sleep(0.1)
            assert new != old
            assert (await c.post("/v1/evaluate", json={"action": "frobnicate"})).json()["policy_hash"] == new
        res = subprocess.run([CLI, "verify-log", crash_db], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "chain intact" in res.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
