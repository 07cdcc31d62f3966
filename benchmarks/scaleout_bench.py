"""Scale-out figures: two `policyengine serve` replicas sharing PostgreSQL and Redis.

Measured side by side in the same run (the machine is shared and noisy, so read
the ratios, not the absolute numbers):

1. approval release latency: an agent long-polls an approval; a reviewer approves
   it on the SAME replica (in-process wake-up) vs on the OTHER replica (seen by
   re-reading the row);
2. cooldown propagation: after a 429 + Retry-After seen through replica A, how
   many calls does replica B still make to the cooling model (expected: 0), and
   the extra latency of the skipped attempt;
3. evaluate throughput with one replica vs both replicas (round-robin client).

    .venv/bin/python benchmarks/scaleout_bench.py [--rounds 15] [--requests 400]

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (same as the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from policyengine.demo.cluster import LocalCluster
from policyengine.simulate.faults import Fault
from policyengine.simulate.server import SimServer

POLICY = """
policy "bench" version 1
model {cool} {{ provider vllm base_url env("B_COOL_URL") cost 0 }}
model {spare} {{ provider vllm base_url env("B_SPARE_URL") cost 0 }}
route default -> {cool} fallback [{spare}]
authorize chat, classify_ticket
require approval for refund when amount > 100 GBP {{ reviewers group "refunds" timeout 1h -> deny }}
"""


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def release_latency(c: httpx.AsyncClient, wait_on: str, approve_on: str, app: dict, rev: dict) -> float:
    r = await c.post(f"{wait_on}/v1/evaluate", headers=app, json={
        "action": "refund", "actor": "agent", "fields": {"amount": "150 GBP", "n": secrets.token_hex(4)}})
    aid = r.json()["approval"]["approval_id"]
    waiter = asyncio.create_task(c.get(f"{wait_on}/v1/approvals/{aid}", params={"wait": 30}, headers=app))
    await asyncio.sleep(1.3)  # let the waiter settle into its slowest (1 s) re-read interval
    t = time.perf_counter()
    ok = await c.post(f"{approve_on}/v1/approvals/{aid}/approve", headers=rev, json={"reason": "bench"})
    assert ok.status_code == 200, ok.text
    res = await waiter
    assert res.json()["state"] == "approved"
    return (time.perf_counter() - t) * 1000


async def throughput(c: httpx.AsyncClient, urls: list[str], app: dict, n: int, conc: int) -> float:
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            r = await c.post(f"{urls[i % len(urls)]}/v1/evaluate", headers=app,
                             json={"action": "classify_ticket", "fields": {"i": i}})
            assert r.status_code == 200

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


async def main(rounds: int, requests: int) -> None:
    pg = os.environ.get("PE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    rd = os.environ.get("PE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    run = secrets.token_hex(4)
    names = {"cool": f"bcool-{run}", "spare": f"bspare-{run}"}
    cool, spare = SimServer(names["cool"]), SimServer(names["spare"])
    await cool.start()
    await spare.start()
    work = Path(tempfile.mkdtemp(prefix="pe-scaleout-bench-"))
    (work / "p").mkdir()
    (work / "p" / "bench.policy").write_text(POLICY.format(**names))
    tok = {"app": "b-app-" + secrets.token_urlsafe(20), "rev": "b-rev-" + secrets.token_urlsafe(20)}
    lc = LocalCluster(postgres_url=pg, redis_url=rd, policy_dir=work / "p", workdir=work, run=run, seed_keys=[
        {"token_env": "B_APP", "tenant": "bench", "roles": ["app"], "subject": "agent"},
        {"token_env": "B_REV", "tenant": "bench", "roles": ["reviewer"], "subject": "rita", "groups": ["refunds"]}],
        env={"B_APP": tok["app"], "B_REV": tok["rev"], "B_COOL_URL": cool.url, "B_SPARE_URL": spare.url,
             "POLICYENGINE_LOG_LEVEL": "warning"})
    app, rev = {"Authorization": f"Bearer {tok['app']}"}, {"Authorization": f"Bearer {tok['rev']}"}
    try:
        await lc.start()
        a, b = (r.url for r in lc.replicas)
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            # 1. release latency, interleaved so noise hits both arms alike
            same, other = [], []
            for _ in range(rounds):
                same.append(await release_latency(c, a, a, app, rev))
                other.append(await release_latency(c, b, a, app, rev))
            print(f"approval release, waiter on the approving replica : median {statistics.median(same):7.1f} ms"
                  f"  p90 {pct(same, .9):7.1f} ms  (n={rounds})")
            print(f"approval release, waiter on the other replica     : median {statistics.median(other):7.1f} ms"
                  f"  p90 {pct(other, .9):7.1f} ms  (n={rounds})")
            print(f"  ratio other/same (median): {statistics.median(other) / statistics.median(same):.1f}x")

            # 2. cooldown propagation (baseline first: the same chain while nothing is cooling down)
            chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
            base = []
            for _ in range(rounds):
                t = time.perf_counter()
                await c.post(f"{b}/v1/chat/completions", headers=app, json=chat)
                base.append((time.perf_counter() - t) * 1000)
            cool.add_fault(Fault(kind="rate_limit", retry_after=60, times=None))
            t = time.perf_counter()
            r1 = await c.post(f"{a}/v1/chat/completions", headers=app, json=chat)
            first = (time.perf_counter() - t) * 1000
            seen = len(cool.seen())
            lat = []
            for _ in range(rounds):
                t = time.perf_counter()
                r2 = await c.post(f"{b}/v1/chat/completions", headers=app, json=chat)
                lat.append((time.perf_counter() - t) * 1000)
                assert r2.status_code == 200 and "skipped:cooldown" in r2.headers["x-policyengine-attempts"]
            cool.clear_faults()
            assert r1.status_code == 200
            print(f"cooldown: 429 via replica A took {first:.1f} ms (one upstream call, then fallback); replica B "
                  f"then made {len(cool.seen()) - seen} calls to the cooling model in {rounds} requests")
            print(f"  chat via B, primary healthy (baseline)       : median {statistics.median(base):7.1f} ms")
            print(f"  chat via B, primary skipped (cooling down)   : median {statistics.median(lat):7.1f} ms  "
                  f"ratio {statistics.median(lat) / statistics.median(base):.2f}x")

            # 3. throughput, one replica vs two
            await throughput(c, [a, b], app, 50, 8)  # warm-up
            one = await throughput(c, [a], app, requests, 16)
            two = await throughput(c, [a, b], app, requests, 16)
            print(f"evaluate throughput, 1 replica : {one:7.0f} req/s  ({requests} requests, concurrency 16)")
            print(f"evaluate throughput, 2 replicas: {two:7.0f} req/s  ratio {two / one:.2f}x "
                  f"(os.cpu_count()={os.cpu_count()}, load generator on the same machine)")
    finally:
        await lc.stop()
        await cool.stop()
        await spare.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--requests", type=int, default=400)
    a = ap.parse_args()
    try:
        asyncio.run(main(a.rounds, a.requests))
    except KeyboardInterrupt:
        sys.exit(130)
