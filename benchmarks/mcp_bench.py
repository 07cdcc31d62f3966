"""Latency the MCP gateway adds per tools/call, beside calling the MCP server directly, in one run.

An MCP server (the SDK's `MCPServer`, one `lookup_order` tool, streamable HTTP under uvicorn)
runs in its own process; `policyengine mcp --transport http` runs in another, in front of it,
with a policy that authorizes the tool (every call decided and its decision row committed
before it is forwarded; the outcome row queued). This process holds two real SDK clients, one
on the server, one on the gateway, and alternates rounds of sequential calls between them
(concurrency 1), so both sides see the same machine load.

Printed: p50 / p90 / p99 of each side, the added latency at p50 and p90, and, from the
gateway's own log rows, how much of one call the gateway spends outside the upstream call
(the decision, its commit, the SDK's server side) against the upstream call it makes.

    .venv/bin/python benchmarks/mcp_bench.py [--calls 400] [--rounds 4] [--sync NORMAL|FULL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "pe_bench_mcp_token_0123456789abcdef0123"

SERVER = textwrap.dedent('''
    import sys, uvicorn
    from mcp.server import MCPServer
    mcp = MCPServer("bench")

    @mcp.tool()
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id}: delivered"

    uvicorn.run(mcp.streamable_http_app(host="0.0.0.0"), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="warning")
''')
POLICY = 'policy "bench" version 1\nauthorize lookup_order\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def timed(client: Client, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = await client.call_tool("lookup_order", {"order_id": f"A{i}"})
        out.append((time.perf_counter() - t) * 1000)
        assert not r.is_error, r
    return out


async def measure(server_url: str, gateway_url: str, calls: int, rounds: int) -> tuple[list[float], list[float]]:
    direct_http = httpx2.AsyncClient(timeout=30)
    gw_http = httpx2.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})
    direct: list[float] = []
    via: list[float] = []
    async with Client(streamable_http_client(server_url, http_client=direct_http)) as d, \
            Client(streamable_http_client(gateway_url, http_client=gw_http)) as g:
        await timed(d, 50)  # warm-up: connections, the SDK's validators, the policy's first decisions
        await timed(g, 50)
        per = max(1, calls // rounds)
        for r in range(rounds):  # alternate which side goes first
            first, second = (d, g) if r % 2 == 0 else (g, d)
            a = await timed(first, per)
            b = await timed(second, per)
            (direct if first is d else via).extend(a)
            (via if second is g else direct).extend(b)
    await direct_http.aclose()
    await gw_http.aclose()
    return direct, via


def gateway_split(db: Path) -> tuple[list[float], list[float]]:
    """(gateway time outside the upstream call, the upstream call) per forwarded call, from the log."""
    con = sqlite3.connect(db)
    inside, upstream = [], []
    for (record,) in con.execute("SELECT record FROM decisions WHERE kind = 'mcp_outcome'"):
        rec = json.loads(record)
        extra = rec.get("extra") or {}
        if extra.get("outcome") == "forwarded" and extra.get("upstream_ms") is not None:
            upstream.append(float(extra["upstream_ms"]))
            inside.append(float(rec["latency_ms"]) - float(extra["upstream_ms"]))
    con.close()
    return inside[50:], upstream[50:]  # without the warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=400, help="calls per side (after 50 warm-up calls)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sync", choices=["NORMAL", "FULL"], default="NORMAL", help="SQLite synchronous mode of the log")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    (tmp / "server.py").write_text(SERVER)
    (tmp / "bench.policy").write_text(POLICY)
    sport, gport = free_port(), free_port()
    db = tmp / "pe.db"
    (tmp / "settings.json").write_text(json.dumps({
        "database_url": f"sqlite:///{db}", "policy_path": [str(tmp / "bench.policy")], "port": gport,
        "sqlite_synchronous": args.sync,
        "seed_keys": [{"token_env": "PE_BENCH_TOKEN", "tenant": "bench", "roles": ["app"], "subject": "bench"}]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PE_BENCH_TOKEN": TOKEN,
           "POLICYENGINE_APPROVALS_LINK_SECRET": "bench-link-secret-0123456789abcdef"}
    server = subprocess.Popen([sys.executable, str(tmp / "server.py"), str(sport)], env=env)
    gateway = None
    try:
        wait_port(sport, server, "the MCP server")
        gateway = subprocess.Popen(
            [sys.executable, "-c", "from policyengine.cli import app; app()", "mcp", "--transport", "http",
             "--settings", str(tmp / "settings.json"), "--upstream", f"bench=http://127.0.0.1:{sport}/mcp",
             "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
        wait_port(gport, gateway, "the gateway")
        time.sleep(1.0)  # the upstream connection is made in the lifespan, before the port listens
        direct, via = asyncio.run(measure(f"http://127.0.0.1:{sport}/mcp", f"http://127.0.0.1:{gport}/mcp",
                                          args.calls, args.rounds))
    finally:
        for p in (gateway, server):
            if p is not None:
                p.terminate()
                p.wait(10)
    inside, upstream = gateway_split(db)
    load = os.getloadavg()[0]
    print(f"MCP gateway bench: {len(direct)} calls per side, concurrency 1, SQLite {args.sync}, load {load:.1f}")
    print(f"{'':28}{'p50':>9}{'p90':>9}{'p99':>9}   (ms)")
    for name, xs in (("direct to the server", direct), ("through the gateway", via)):
        print(f"{name:28}{pct(xs, .5):9.3f}{pct(xs, .9):9.3f}{pct(xs, .99):9.3f}")
    print(f"{'added by the gateway':28}{pct(via, .5) - pct(direct, .5):9.3f}{pct(via, .9) - pct(direct, .9):9.3f}"
          f"{'':9}   ratio p50 {pct(via, .5) / pct(direct, .5):.2f}x")
    if inside:
        print(f"inside the gateway (log rows, {len(inside)} calls): outside the upstream call p50 "
              f"{statistics.median(inside):.3f} ms; its own upstream call p50 {statistics.median(upstream):.3f} ms")


if __name__ == "__main__":
    main()
