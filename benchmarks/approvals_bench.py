"""Approvals: how fast holds, decisions and timeout sweeps go, side by side.

    .venv/bin/python benchmarks/approvals_bench.py [--pg postgresql://postgres@127.0.0.1/test] [--n 300]

Prints, for SQLite (embedded default) and PostgreSQL (when reachable):
  * hold: creating a pending approval (+ audit event + outbox rows for 2 channels)
  * decide: approving one (compare-and-set + audit + Slack update + callback rows)
  * contention: 50 concurrent decisions on one approval (exactly one must win)
  * sweep: timing out N overdue approvals with 1 sweeper vs 2 concurrent sweepers
    (each fires exactly once; the ratio shows what the second replica costs / gains)
Figures are measured in the same run so ratios compare like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from approvals.helpers import refund_action, refund_decision, reviewer, settings

from policyengine.approvals.errors import ApprovalConflict
from policyengine.approvals.service import ApprovalService, utcnow
from policyengine.store import make_async_engine, upgrade
from policyengine.types import Channel

CHANNELS = [Channel(kind="slack", target="#refunds"), Channel(kind="email", target="refunds@example.com")]


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self):
        return utcnow() + self.offset


async def bench(url: str, n: int) -> dict[str, float]:
    upgrade(url)
    engine = make_async_engine(url)
    clock = Clock()
    svc = ApprovalService(engine, settings(), clock=clock)
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        ids = [(await svc.hold(action=refund_action(), decision=refund_decision(CHANNELS, timeout_s=60))).approval_id
               for _ in range(n)]
        out["hold/s"] = n / (time.perf_counter() - t)

        half = ids[: n // 2]
        lat = []
        for i in half:
            t = time.perf_counter()
            await svc.decide(i, reviewer(), approve=True, reason="ok")
            lat.append(time.perf_counter() - t)
        out["decide p50 ms"] = statistics.median(lat) * 1000
        out["decide/s"] = len(lat) / sum(lat)

        one = (await svc.hold(action=refund_action(), decision=refund_decision())).approval_id
        t = time.perf_counter()
        res = await asyncio.gather(*(svc.decide(one, reviewer(f"r{i}"), approve=True) for i in range(50)),
                                   return_exceptions=True)
        out["50-way contention ms"] = (time.perf_counter() - t) * 1000
        wins = sum(not isinstance(r, BaseException) for r in res)
        assert wins == 1 and all(isinstance(r, ApprovalConflict) for r in res if isinstance(r, BaseException))

        # Sweeps: the remaining half are overdue. One sweeper first...
        rest = ids[n // 2:]
        clock.offset = timedelta(seconds=61)
        quarter = rest[: len(rest) // 2]
        async with engine.begin() as conn:  # keep the second quarter for the 2-sweeper run
            await conn.execute(sa.text("UPDATE approvals SET timeout_at = :far WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)), {"far": utcnow() + timedelta(days=1), "ids": rest[len(quarter):]})
        t = time.perf_counter()
        fired = await svc.sweep_timeouts(limit=10_000)
        out["sweep 1 replica /s"] = fired / (time.perf_counter() - t)
        assert fired == len(quarter)
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE approvals SET timeout_at = :due WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)), {"due": utcnow(), "ids": rest[len(quarter):]})
        other = ApprovalService(engine, settings(), clock=clock)
        t = time.perf_counter()
        a, b = await asyncio.gather(svc.sweep_timeouts(limit=10_000), other.sweep_timeouts(limit=10_000))
        out["sweep 2 replicas /s"] = (a + b) / (time.perf_counter() - t)
        assert a + b == len(rest) - len(quarter), (a, b)  # nothing fired twice
        async with engine.connect() as conn:
            dup = (await conn.execute(sa.text(
                "select count(*) from (select approval_id from approval_events where kind='timed_out' "
                "group by approval_id having count(*) > 1) d"))).scalar()
        assert dup == 0
    finally:
        await engine.dispose()
    return out


def pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        results["sqlite"] = await bench(f"sqlite:///{d}/bench.db", args.n)
    if pg_up():
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        eng = sa.create_engine(args.pg)
        with eng.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            results["postgresql"] = await bench(f"{args.pg}?options=-csearch_path%3D{schema}", args.n)
        finally:
            with eng.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            eng.dispose()
    keys = list(next(iter(results.values())))
    print(f"approvals benchmark, n={args.n} holds per backend")
    print(f"{'metric':<24}" + "".join(f"{b:>14}" for b in results))
    for k in keys:
        print(f"{k:<24}" + "".join(f"{results[b][k]:>14.1f}" for b in results))
    for b, r in results.items():
        print(f"{b}: 2-replica / 1-replica sweep throughput = {r['sweep 2 replicas /s'] / r['sweep 1 replica /s']:.2f}x "
              f"(each approval timed out exactly once)")


if __name__ == "__main__":
    asyncio.run(main())
