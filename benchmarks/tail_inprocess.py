"""What the slowest plain chats at concurrency 1 met: WAL restarts, checkpoint passes, collections.

    .venv/bin/python benchmarks/tail_inprocess.py [--requests 8000] [--sync NORMAL|FULL] [--page-size 4096]

The app is driven through its ASGI call in this process (no HTTP server, no client), one request
at a time, with the peer bench's policy (`../shared/peer-bench/policyengine/bench.policy`) against
its mock upstream (`mock_upstream.py`, on CPU 1; this process on CPU 0), the decision log on
SQLite. Each request is timed, and the decision log's counters are read around it, so every
request at or above the p99 is attributed: a WAL restart by the writer (`wal_resets` moved), a
pass of the checkpoint thread started (`checkpoints` moved), or a garbage collection inside it
(`gc.callbacks`). Also printed: how long each writer restart (`_restart_wal`) and each thread
pass took. `--page-size` creates the database with that page size first (SQLite's default is
4096), to see what fewer WAL bytes per commit change.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peer-bench"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import api_bench as ab  # noqa: E402  (free_port, wait_port, asgi_one, TOKEN)

BODY = (b'{"model":"primary","messages":[{"role":"system","content":"You are a helpful assistant."},'
        b'{"role":"user","content":"Classify this ticket: my invoice is wrong."}],"max_tokens":64,"temperature":0}')


def _timed_method(cls: Any, name: str, out: list[float]) -> None:
    """Wrap `cls.name` so that each call's duration (ms) is appended to `out`."""
    orig = getattr(cls, name)

    def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig(self, *a, **kw)
        finally:
            out.append((time.perf_counter() - t) * 1000)

    setattr(cls, name, wrapper)


async def run(app: Any, n: int) -> None:
    from policyengine.store.logger import DecisionLogger

    restarts: list[float] = []
    passes: list[float] = []
    _timed_method(DecisionLogger, "_restart_wal", restarts)
    _timed_method(DecisionLogger, "_checkpoint", passes)
    gcs: list[tuple[float, float]] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            gcs.append((started[0], time.perf_counter() - started[0]))

    one = ab.asgi_one(app, BODY, "/v1/chat/completions")
    async with app.router.lifespan_context(app):
        log = app.state.runtime.log
        for _ in range(500):
            await one()
        restarts.clear()
        passes.clear()
        gc.callbacks.append(on_gc)
        rows = []
        for _ in range(n):
            ck, rs = log.checkpoints, log.wal_resets
            t = time.perf_counter()
            await one()
            rows.append((time.perf_counter() - t, t, log.checkpoints - ck, log.wal_resets - rs))
        gc.callbacks.remove(on_gc)
    lat = sorted(r[0] for r in rows)
    p99 = lat[int(n * 0.99)]
    slow = [r for r in rows if r[0] >= p99]

    def had_gc(r: tuple[float, float, int, int]) -> bool:
        return any(r[1] <= g[0] <= r[1] + r[0] for g in gcs)

    def ms(x: float) -> str:
        return f"{x * 1000:.3f}"

    print(f"{n} requests: p50 {ms(lat[n // 2])} p99 {ms(p99)} p99.9 {ms(lat[int(n * 0.999)])} max {ms(lat[-1])} ms")
    print(f"the {len(slow)} at or above the p99: {sum(1 for r in slow if r[3])} met a WAL restart, "
          f"{sum(1 for r in slow if r[2] and not r[3])} (others) a checkpoint pass starting, "
          f"{sum(1 for r in slow if had_gc(r))} a garbage collection; "
          f"{sum(1 for r in slow if not (r[2] or r[3] or had_gc(r)))} none of these")
    if restarts:
        print(f"WAL restarts by the writer: {len(restarts)}, each {statistics.median(restarts):.2f} ms at the median "
              f"(max {max(restarts):.2f}); requests that met one: p50 "
              f"{ms(statistics.median(r[0] for r in rows if r[3]))} ms")
    if passes:
        print(f"checkpoint thread passes: {len(passes)}, each {statistics.median(passes):.2f} ms at the median "
              f"(max {max(passes):.2f})")
    print(f"garbage collections during the run: {len(gcs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8000)
    ap.add_argument("--sync", choices=["NORMAL", "FULL"], default="NORMAL")
    ap.add_argument("--page-size", type=int, default=None, help="create the database with this page size")
    args = ap.parse_args()
    import uvloop

    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings

    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="pe-tail-inproc-"))
    db = work / "pe.db"
    if args.page_size:
        con = sqlite3.connect(db)
        con.execute(f"PRAGMA page_size={args.page_size}")
        con.execute("PRAGMA journal_mode=WAL")
        con.close()
    port = ab.free_port()
    mock = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(PEER / "mock_upstream.py"), "--port", str(port)],
                            start_new_session=True, stdout=subprocess.DEVNULL)
    ab.wait_port(port, mock)
    os.environ.update(MOCK_URL=f"http://127.0.0.1:{port}/v1", PE_BENCH_TOKEN=ab.TOKEN)
    os.environ.setdefault("POLICYENGINE_APPROVALS_LINK_SECRET", "bench-link-secret-0123456789abcdef")
    settings = Settings(database_url=f"sqlite:///{db}", policy_path=[str(PEER / "policyengine" / "bench.policy")],
                        sqlite_synchronous=args.sync,
                        seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"])])
    print(f"sqlite_synchronous={args.sync}, page size {args.page_size or 'default'}, load {os.getloadavg()[0]:.1f}")
    try:
        uvloop.run(run(create_app(settings), args.requests))
    finally:
        mock.terminate()
        mock.wait(10)


if __name__ == "__main__":
    main()
