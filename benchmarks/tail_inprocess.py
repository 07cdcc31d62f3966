"""What the slowest plain chats at concurrency 1 met: WAL restarts, checkpoint passes, collections.

    .venv/bin/python benchmarks/tail_inprocess.py [--requests 8000] [--sync NORMAL|FULL] [--http]
        [--prefill 120000] [--page-size 4096] [--no-db-flush] [--quiet-passes N]

The app runs in this process on CPU 0, with the peer bench's policy
(`../shared/peer-bench/policyengine/bench.policy`) against its mock upstream (`mock_upstream.py`,
on CPU 1), the decision log on SQLite. Requests come one at a time: through the app's ASGI call
(no HTTP server, no client), or with `--http` from a client process on CPU 1 over one keep-alive
connection to uvicorn serving the app in this process (as `policyengine serve` does). `--prefill N`
first sends N chats at concurrency 32, so that the log is as large as the peer bench's is when its
c=1 runs come (a few hundred thousand rows). Each request is timed, and the decision log's work is
timed around it (`time.perf_counter`, one clock for both processes), so every request at or above
the p99 is attributed to the first of: a WAL restart by the writer (`_restart_wal`) during it, a
pass of the checkpoint thread in flight during it, a garbage collection (`gc.callbacks`), or its own
commit taking over twice the median. Also printed: the commits' latency (beside a pass and not),
and how long each restart and each pass took.

`--page-size` creates the database with that page size first (SQLite's default is 4096). Two
switches put back what session 20 changed, to compare in the same conditions: `--no-db-flush` (the
checkpoint thread does not flush the database file after its passes) and `--quiet-passes 4` (the
passes as under load while the service is quiet).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peer-bench"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import api_bench as ab  # noqa: E402  (free_port, wait_port, asgi_one, TOKEN)

BODY = (b'{"model":"primary","messages":[{"role":"system","content":"You are a helpful assistant."},'
        b'{"role":"user","content":"Classify this ticket: my invoice is wrong."}],"max_tokens":64,"temperature":0}')


def _timed_method(cls: Any, name: str, out: list[tuple[float, float]]) -> None:
    """Wrap `cls.name` so that each call's (start, end) in `time.perf_counter` seconds is appended to
    `out` (from whichever thread calls it)."""
    orig = getattr(cls, name)

    def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return orig(self, *a, **kw)
        finally:
            out.append((t, time.perf_counter()))

    setattr(cls, name, wrapper)


def _overlaps(spans: list[tuple[float, float]], t0: float, t1: float) -> list[tuple[float, float]]:
    """The spans of `spans` (start, end) that intersect [t0, t1]."""
    return [s for s in spans if s[0] <= t1 and s[1] >= t0]


# The client of `--http`: one keep-alive connection, one request at a time, each timed with
# `time.perf_counter` (CLOCK_MONOTONIC on Linux, the clock the server's spans are read from), the
# pairs printed as JSON at the end. A raw socket, so its own cost per request is a few microseconds.
HTTP_CLIENT = r"""
import json, socket, sys, time
port, n, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = sys.stdin.buffer.read()
req = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
       f"authorization: Bearer {token}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []
for _ in range(n):
    t = time.perf_counter()
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    size = int(next(v for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                    if k.strip().lower() == b"content-length"))
    while len(rest) < size:
        rest += s.recv(65536)
    e = time.perf_counter()
    out.append((e - t, t, e))
print(json.dumps(out))
"""


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """`app`'s lifespan, for requests through its ASGI call."""
    async with app.router.lifespan_context(app):
        yield None


@contextlib.asynccontextmanager
async def _served(app: Any) -> AsyncIterator[int]:
    """`app` served by uvicorn (uvloop, httptools, as `policyengine serve`) in this process on a free
    port, lifespan included; yields the port."""
    import uvicorn

    port = ab.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http="httptools",
                                           log_level="warning", access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _http_requests(port: int, n: int) -> list[tuple[float, float, float]]:
    """`n` requests from the client subprocess on CPU 1: each (duration, start, end)."""
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", sys.executable, "-c", HTTP_CLIENT, str(port), str(n), ab.TOKEN,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(BODY)
    if proc.returncode:
        raise SystemExit(f"the HTTP client failed (exit {proc.returncode})")
    return [tuple(r) for r in json.loads(out)]


async def _prefill(app: Any, n: int) -> None:
    """`n` plain chats through the app's ASGI call at concurrency 32 (its lifespan running), to grow
    the log first (the peer bench's c=1 runs meet a log of a few hundred thousand rows)."""
    one = ab.asgi_one(app, BODY, "/v1/chat/completions")
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(32)))


async def run(app: Any, n: int, http: bool = False, prefill: int = 0) -> None:
    from policyengine.store.logger import DecisionLogger

    restarts: list[tuple[float, float]] = []
    passes: list[tuple[float, float]] = []
    commits: list[tuple[float, float]] = []
    _timed_method(DecisionLogger, "_restart_wal", restarts)
    _timed_method(DecisionLogger, "_checkpoint", passes)
    _timed_method(DecisionLogger, "_append_sqlite", commits)
    gcs: list[tuple[float, float]] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            gcs.append((started[0], time.perf_counter()))

    one = ab.asgi_one(app, BODY, "/v1/chat/completions")
    async with _served(app) if http else _lifespan(app) as port:
        if prefill:
            t = time.perf_counter()
            await _prefill(app, prefill)
            print(f"prefilled {prefill} chats ({prefill * 2} rows) in {time.perf_counter() - t:.0f} s")

        async def requests(k: int) -> list[tuple[float, float, float]]:
            if port is not None:
                return await _http_requests(port, k)
            out = []
            for _ in range(k):
                t = time.perf_counter()
                await one()
                e = time.perf_counter()
                out.append((e - t, t, e))
            return out

        await requests(500)
        for spans in (restarts, passes, commits):
            spans.clear()
        gc.callbacks.append(on_gc)
        rows = await requests(n)
        gc.callbacks.remove(on_gc)
    lat = sorted(r[0] for r in rows)
    p99 = lat[int(n * 0.99)]

    def ms(x: float) -> str:
        return f"{x * 1000:.3f}"

    def cause(r: tuple[float, float, float]) -> str:
        """The first of: a writer WAL restart, a checkpoint pass in flight, a collection, a slow
        commit of its own (over twice the run's median commit), during the request."""
        if _overlaps(restarts, r[1], r[2]):
            return "restart"
        if _overlaps(passes, r[1], r[2]):
            return "pass"
        if _overlaps(gcs, r[1], r[2]):
            return "gc"
        own = _overlaps(commits, r[1], r[2])
        if own and max(c[1] - c[0] for c in own) > 2 * commit_p50:
            return "slow commit"
        return "none"

    commit_ms = sorted(c[1] - c[0] for c in commits)
    commit_p50 = commit_ms[len(commit_ms) // 2] if commit_ms else 0.0
    print(f"{n} requests: p50 {ms(lat[n // 2])} p99 {ms(p99)} p99.9 {ms(lat[int(n * 0.999)])} max {ms(lat[-1])} ms")
    for label, group in (("the slowest 1 %", [r for r in rows if r[0] >= p99]), ("all", rows)):
        counts: dict[str, int] = {}
        for r in group:
            counts[cause(r)] = counts.get(cause(r), 0) + 1
        print(f"{label} ({len(group)}): " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print("  (restart: met a WAL restart by the writer; pass: a checkpoint-thread pass was in flight; gc: a"
          " collection; slow commit: its own commit took over twice the median)")
    if commit_ms:
        print(f"commits: {len(commit_ms)}, p50 {ms(commit_p50)} p99 {ms(commit_ms[int(len(commit_ms) * 0.99)])} ms; "
              f"during a pass p50 {ms(statistics.median([c[1] - c[0] for c in commits if _overlaps(passes, *c)] or [0]))} ms")
    for name, spans in (("WAL restarts by the writer", restarts), ("checkpoint thread passes", passes)):
        if spans:
            d = [s[1] - s[0] for s in spans]
            print(f"{name}: {len(d)}, each {ms(statistics.median(d))} ms at the median (max {ms(max(d))})")
    print(f"garbage collections during the run: {len(gcs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8000)
    ap.add_argument("--sync", choices=["NORMAL", "FULL"], default="NORMAL")
    ap.add_argument("--page-size", type=int, default=None, help="create the database with this page size")
    ap.add_argument("--prefill", type=int, default=0, help="plain chats at c=32 before measuring (a larger log)")
    ap.add_argument("--no-db-flush", action="store_true",
                    help="leave the database file's flush to the WAL restart (as before session 20), to compare")
    ap.add_argument("--quiet-passes", type=int, default=None,
                    help="checkpoint passes per WAL bound while quiet (store.logger.PASSES_PER_BOUND_QUIET; "
                         "4 is the cadence under load, as before session 20)")
    ap.add_argument("--http", action="store_true",
                    help="serve the app with uvicorn in this process, requests from a client process on CPU 1")
    args = ap.parse_args()
    import uvloop

    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings
    from policyengine.store import logger as logger_mod

    if args.no_db_flush:
        logger_mod.DecisionLogger._flush_db_file = lambda self: None  # type: ignore[method-assign]
    if args.quiet_passes is not None:
        logger_mod.PASSES_PER_BOUND_QUIET = args.quiet_passes
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
    print(f"sqlite_synchronous={args.sync}, page size {args.page_size or 'default'}, "
          f"{'HTTP (uvicorn)' if args.http else 'ASGI calls'}, database flush after each pass "
          f"{'off' if args.no_db_flush else 'on'}, passes per WAL bound while quiet "
          f"{logger_mod.PASSES_PER_BOUND_QUIET}, load {os.getloadavg()[0]:.1f}")
    try:
        uvloop.run(run(create_app(settings), args.requests, args.http, args.prefill))
    finally:
        mock.terminate()
        mock.wait(10)


if __name__ == "__main__":
    main()
