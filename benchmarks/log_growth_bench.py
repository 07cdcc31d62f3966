"""What the decision log's writer costs per row as the log grows, by decision-id scheme and page cache.

    .venv/bin/python benchmarks/log_growth_bench.py [--prefill 1500000] [--pairs 20000] [--rounds 3]
        [--caches 2048,131072] [--schemes random,ordered]

The 10-minute soak (soak.md) saw the gateway's CPU per request rise by a quarter as the log grew
to 1.75 M rows. The suspect is the unique index on `decisions.id`: decision ids are random, so
every insert lands on a random leaf of an index that outgrows the writer's page cache (SQLite's
default, about 2 MB), is read back from the OS, and is written as a WAL frame of its own per
commit (and copied back by the checkpoints). Every other index grows at its end.

For each id scheme, one SQLite log is prefilled with `--prefill` rows (decision + outcome pairs as
the gateway writes them, a real chat record, ids from the scheme), straight through the writer's
own INSERT in large transactions (synchronous OFF: only the prefill); a fresh log per scheme is the
small-log baseline. Then, in alternating rounds, a DecisionLogger as the service runs it (SQLite
FULL, its checkpoint thread and WAL bound) commits `--pairs` decision rows from 32 concurrent
submitters, each followed by its outcome row (`enqueue`, as a plain chat does), for every
(log, cache size) case. Printed per case: CPU of the whole process per pair (building and hashing
the records is the same in every case), bytes written per pair (`wchar`, WAL frames and the
checkpoints' copies), and the medians over rounds.

Schemes: `random`, the gateway's ids (`gateway.new_decision_id`, `gateway.outcome_id`); `ordered`,
decision ids that start with the time in milliseconds (UUIDv7-shaped), their outcome rows' ids
still `gateway.outcome_id` of them (derived by a hash, so random): only half the rows' ids are
ordered, and what ordering every id would save is at least the difference measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policyengine import gateway  # noqa: E402
from policyengine.store import DecisionLogger, LogEntry, upgrade  # noqa: E402

DECISION = {"action": "chat", "effect": "allow", "policy_hash": "h" * 64, "policy_name": "bench",
            "routing": {"chain": ["qwen-72b", "gemma-27b"]},
            "rules": [{"rule_id": "bench.policy:8", "kind": "route", "source": "route default -> qwen-72b",
                       "because": ["no earlier route matched: default route"]}]}
ACTION = {"action": "chat", "text": "Summarise my last ticket.",
          "messages": [{"role": "user", "content": "Summarise my last ticket."}]}


def _ids(scheme: str) -> tuple[Any, Any]:
    """(new decision id, outcome id of a decision id) for `scheme`."""
    if scheme == "random":
        return gateway.new_decision_id, gateway.outcome_id
    if scheme == "ordered":
        return _v7, gateway.outcome_id
    raise SystemExit(f"unknown scheme {scheme!r}")


def _v7() -> str:
    """A UUIDv7-shaped id: 48 bits of milliseconds, then random bits."""
    x = f"{int(time.time() * 1000):012x}" + os.urandom(10).hex()
    return f"{x[:8]}-{x[8:12]}-7{x[13:16]}-{'89ab'[int(x[16], 16) & 3]}{x[17:20]}-{x[20:32]}"


def _pair(new_id: Any, outcome_of: Any) -> tuple[LogEntry, LogEntry]:
    did = new_id()
    d = LogEntry(kind="chat", tenant="bench", decision=DECISION, action=ACTION, model="qwen-72b", id=did,
                 actor="bench-app", key_id="k" * 16)
    o = LogEntry(kind="chat_outcome", tenant="bench", decision=DECISION, action={}, model="qwen-72b",
                 id=outcome_of(did), follows=did, latency_ms=12.5, actor="bench-app", key_id="k" * 16,
                 extra={"outcome": "ok", "decision_id": did, "usage": {"prompt_tokens": 9, "completion_tokens": 40}})
    return d, o


def prefill(path: Path, n_rows: int, scheme: str) -> None:
    """`n_rows` rows (pairs) through the writer's INSERT, chained as the writer chains them."""
    url = f"sqlite:///{path}"
    upgrade(url)
    if n_rows <= 0:
        return
    logger = DecisionLogger(url)
    new_id, outcome_of = _ids(scheme)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1048576")  # 1 GiB: the prefill is not what is measured
    head: Any = con.execute("SELECT seq, head_hash FROM decision_chain WHERE id = 1").fetchone()
    done = 0
    while done < n_rows:
        recs = []
        for _ in range(min(20_000, n_rows - done) // 2 or 1):
            d, o = _pair(new_id, outcome_of)
            recs += [logger.build_record(d), logger.build_record(o)]
        good, _ = logger._prepare(recs)
        rows, _ = logger._rows(head, good)
        con.execute("BEGIN")
        con.executemany(logger._sql_insert, rows)
        con.execute(logger._sql_move, (rows[-1][0], rows[-1][-1]))
        con.execute("COMMIT")
        head = (rows[-1][0], rows[-1][-1])
        done += len(rows)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


async def _round(path: Path, scheme: str, cache_kib: int, pairs: int) -> tuple[float, float]:
    """(CPU µs per pair, bytes written per pair) for one round of `pairs` at 32 submitters."""
    logger = DecisionLogger(f"sqlite:///{path}", sqlite_synchronous="FULL")
    await logger.start()
    new_id, outcome_of = _ids(scheme)
    left = pairs

    async def submitter() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            d, o = _pair(new_id, outcome_of)
            await logger.submit(d)
            logger.enqueue(o)

    await logger.log(_pair(new_id, outcome_of)[0])  # connection and pragmas set up before the clock
    # the writer's own connection (the service leaves SQLite's default, 2 MB: see benchmarks/soak.md)
    logger._raw.driver_connection.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: KiB
    w, t = _wchar(), time.process_time()
    await asyncio.gather(*(submitter() for _ in range(32)))
    await logger.aclose()
    return (time.process_time() - t) * 1e6 / pairs, (_wchar() - w) / pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefill", type=int, default=1_500_000, help="rows in the large log")
    ap.add_argument("--pairs", type=int, default=20_000, help="decision+outcome pairs per round and case")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--caches", default="2048,131072", help="writer page cache sizes, KiB")
    ap.add_argument("--schemes", default="random,ordered")
    ap.add_argument("--dir", default=None, help="where the logs go (default: a fresh temporary directory)")
    args = ap.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="pe-growth-"))
    caches = [int(c) for c in args.caches.split(",")]
    logs: list[tuple[str, str, Path]] = []
    for scheme in args.schemes.split(","):
        for label, n in (("small", 0), ("large", args.prefill)):
            path = base / f"{scheme}-{label}.db"
            t = time.perf_counter()
            prefill(path, n, scheme)
            print(f"prefilled {path.name}: {n} rows, {path.stat().st_size / 1e9:.2f} GB "
                  f"in {time.perf_counter() - t:.0f} s", flush=True)
            logs.append((scheme, label, path))
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for scheme, label, path in logs:
            for cache in caches:
                cpu, wb = asyncio.run(_round(path, scheme, cache, args.pairs))
                results.setdefault((scheme, label, cache), []).append((cpu, wb))
                print(f"round {r + 1}: {scheme:8s} {label:5s} cache {cache:>7d} KiB: "
                      f"{cpu:7.1f} us CPU, {wb / 1024:6.1f} KiB written per pair", flush=True)
    print("\nmedians over rounds (per decision+outcome pair; CPU of the whole process):")
    print("| ids | log | writer cache | CPU µs/pair | KiB written/pair |")
    print("|---|---|---:|---:|---:|")
    for (scheme, label, cache), vals in results.items():
        rows = sqlite3.connect(base / f"{scheme}-{label}.db").execute(
            "SELECT seq FROM decision_chain WHERE id = 1").fetchone()[0]
        print(f"| {scheme} | {label} ({rows / 1e6:.2f} M rows at the end) | {cache / 1024:.0f} MB | "
              f"{statistics.median(v[0] for v in vals):.1f} | {statistics.median(v[1] for v in vals) / 1024:.1f} |")


if __name__ == "__main__":
    main()
