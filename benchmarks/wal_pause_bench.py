"""The decision log alone at concurrency 1: how long each commit waits, and the WAL checkpoints behind it.

    .venv/bin/python benchmarks/wal_pause_bench.py [--sync FULL] [--rows 5000] [--wal-max-mb 16] [--gap-ms 0.5]

One caller logs a chat's decision row (`await logger.log`), sleeps `--gap-ms` (the upstream call),
and queues the outcome row (`enqueue`, riding along with the next commit), `--rows` times, into a
fresh SQLite database in a temporary directory (`--dir` to choose the disk). Printed: the wait per
commit (p50 / p90 / p99 / p99.9 / max), how many waited over 2 and 5 ms, and the checkpoints: the
writer's own (the pause a request can wait behind) and the checkpoint thread's, each counted and
timed. Run it with two checkouts on PYTHONPATH, one after the other, for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import policyengine.store.logger as L
from policyengine.store import DecisionLogger, LogEntry, upgrade

DECISION = {"action": "chat", "effect": "allow", "policy_hash": "h" * 64, "policy_name": "bench",
            "routing": {"chain": ["qwen-72b", "gemma-27b"]},
            "rules": [{"rule_id": "bench.policy:8", "kind": "route", "source": "route default -> qwen-72b",
                       "because": ["no earlier route matched: default route"]}]}
# the writer's checkpoint (this tree's name, the one it replaced) and the checkpoint thread's pass
TIMED = ("_restart_wal", "_reset_wal", "_checkpoint")


def _timed(events: list[tuple[str, float]]) -> None:
    for name in TIMED:
        orig = getattr(L.DecisionLogger, name, None)
        if orig is None:
            continue

        def wrapper(self, *a, _orig=orig, _name=name, **k):
            t = time.perf_counter()
            try:
                return _orig(self, *a, **k)
            finally:
                events.append((_name, (time.perf_counter() - t) * 1000))

        setattr(L.DecisionLogger, name, wrapper)


async def run(a: argparse.Namespace) -> None:
    events: list[tuple[str, float]] = []
    _timed(events)
    path = Path(tempfile.mkdtemp(prefix="pe-walpause-", dir=a.dir)) / "log.db"
    upgrade(f"sqlite:///{path}")
    lg = DecisionLogger(f"sqlite:///{path}", sqlite_synchronous=a.sync, wal_max_bytes=int(a.wal_max_mb * 2**20))
    await lg.start()
    waits = []
    text = "Summarise my last ticket. " * 20
    for _ in range(a.rows):
        e = LogEntry(kind="chat", tenant="bench", decision=DECISION, model="qwen-72b",
                     action={"action": "chat", "text": text})
        t = time.perf_counter()
        await lg.log(e)
        waits.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(a.gap_ms / 1000)
        lg.enqueue(LogEntry(kind="chat_outcome", tenant="bench", decision=DECISION, model="qwen-72b", action={},
                            follows=e.id))
    await lg.aclose()
    waits.sort()

    def q(p: float) -> float:
        return waits[min(len(waits) - 1, int(p * len(waits)))]

    print(f"{a.sync} wal_max {a.wal_max_mb} MB, {a.rows} commits: wait p50 {q(.5):.3f} p90 {q(.9):.3f} p99 {q(.99):.3f} "
          f"p99.9 {q(.999):.3f} max {waits[-1]:.2f} ms; over 2 ms {sum(w > 2 for w in waits)}, over 5 ms "
          f"{sum(w > 5 for w in waits)}; largest WAL {lg.wal_peak_bytes / 1e6:.1f} MB", flush=True)
    for name in TIMED:
        d = [ms for n, ms in events if n == name]
        if d:
            where = "checkpoint thread" if name == "_checkpoint" else "writer (a request may wait behind it)"
            print(f"  {name} ({where}): {len(d)} runs, median {statistics.median(d):.1f} ms, max {max(d):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sync", default="FULL")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--wal-max-mb", type=float, default=16)
    ap.add_argument("--gap-ms", type=float, default=0.5)
    ap.add_argument("--dir", help="where the database goes (default: the system's temporary directory)")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
