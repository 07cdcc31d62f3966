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
import contextlib
import json
import os
import signal
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
# A do-nothing MCP proxy on the same SDK (its low-level Server in front, its Client behind): the
# floor any gateway built on the SDK pays for the extra hop, measured beside ours.
PROXY = textwrap.dedent('''
    import contextlib, sys, uvicorn
    import mcp_types as types
    from mcp import Client
    from mcp.server.lowlevel import Server
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    up = {}

    async def list_tools(ctx, params):
        return await up["c"].list_tools()

    async def call_tool(ctx, params):
        return await up["c"].call_tool(params.name, params.arguments or {})

    server = Server("proxy", on_list_tools=list_tools, on_call_tool=call_tool,
                    get_tool_input_schema=lambda name: None)
    manager = StreamableHTTPSessionManager(app=server)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with Client(sys.argv[2], cache=None) as c, manager.run():
            up["c"] = c
            yield

    class Endpoint:
        async def __call__(self, scope, receive, send):
            await manager.handle_request(scope, receive, send)

    from starlette.applications import Starlette
    from starlette.routing import Route
    app = Starlette(routes=[Route("/mcp", endpoint=Endpoint(), methods=["GET", "POST", "DELETE"])], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def measure(urls: dict[str, str], calls: int, rounds: int, pids: dict[str, int],
                  ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latencies per side (direct, proxy, gateway) and CPU seconds per process per side."""
    https = {k: httpx2.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) for k in urls}
    lat: dict[str, list[float]] = {k: [] for k in urls}
    cpu: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = {k: await stack.enter_async_context(Client(streamable_http_client(u, http_client=https[k])))
                   for k, u in urls.items()}
        for c in clients.values():  # warm-up: connections, the SDK's validators, the first decisions
            await timed(c, 50)
        per = max(1, calls // rounds)
        order = list(urls)
        for r in range(rounds):  # rotate which side goes first
            for side in order[r % len(order):] + order[:r % len(order)]:
                before = {k: cpu_s(p) for k, p in pids.items()}
                lat[side].extend(await timed(clients[side], per))
                for k, p in pids.items():
                    cpu[f"{k}@{side}"] = cpu.get(f"{k}@{side}", 0.0) + cpu_s(p) - before[k]
    for h in https.values():
        await h.aclose()
    return lat, cpu


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
    (tmp / "gateway.py").write_text("from policyengine.cli import app\napp()\n")
    sport, gport = free_port(), free_port()
    db = tmp / "pe.db"
    (tmp / "settings.json").write_text(json.dumps({
        "database_url": f"sqlite:///{db}", "policy_path": [str(tmp / "bench.policy")], "port": gport,
        "sqlite_synchronous": args.sync,
        "seed_keys": [{"token_env": "PE_BENCH_TOKEN", "tenant": "bench", "roles": ["app"], "subject": "bench"}]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PE_BENCH_TOKEN": TOKEN,
           "POLICYENGINE_APPROVALS_LINK_SECRET": "bench-link-secret-0123456789abcdef"}
    (tmp / "proxy.py").write_text(PROXY)
    pport = free_port()
    server = subprocess.Popen([sys.executable, str(tmp / "server.py"), str(sport)], env=env)
    gateway = proxy = None
    try:
        wait_port(sport, server, "the MCP server")
        proxy = subprocess.Popen([sys.executable, str(tmp / "proxy.py"), str(pport),
                                  f"http://127.0.0.1:{sport}/mcp"], env=env)
        wait_port(pport, proxy, "the bare SDK proxy")
        gateway = subprocess.Popen(
            [sys.executable, *(["-m", "cProfile", "-o", os.environ["MCP_BENCH_PROFILE"]]
                               if os.environ.get("MCP_BENCH_PROFILE") else []),
             str(tmp / "gateway.py"), "mcp", "--transport", "http",
             "--settings", str(tmp / "settings.json"), "--upstream", f"bench=http://127.0.0.1:{sport}/mcp",
             "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
        wait_port(gport, gateway, "the gateway")
        time.sleep(1.0)  # the upstream connection is made in the lifespan, before the port listens
        urls = {"direct": f"http://127.0.0.1:{sport}/mcp", "proxy": f"http://127.0.0.1:{pport}/mcp",
                "gateway": f"http://127.0.0.1:{gport}/mcp"}
        lat, cpu = asyncio.run(measure(urls, args.calls, args.rounds,
                                       {"server": server.pid, "proxy": proxy.pid, "gateway": gateway.pid}))
    finally:
        for p in (gateway, proxy, server):
            if p is not None:
                p.send_signal(signal.SIGINT)  # a clean stop (the profile, when asked for, is written)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
    inside, upstream = gateway_split(db)
    load = os.getloadavg()[0]
    n = len(lat["direct"])
    print(f"MCP gateway bench: {n} calls per side, concurrency 1, SQLite {args.sync}, load {load:.1f}")
    print(f"{'':34}{'p50':>9}{'p90':>9}{'p99':>9}   (ms)")
    names = {"direct": "direct to the server", "proxy": "through a bare SDK proxy", "gateway": "through the gateway"}
    for side, name in names.items():
        xs = lat[side]
        print(f"{name:34}{pct(xs, .5):9.3f}{pct(xs, .9):9.3f}{pct(xs, .99):9.3f}")
    d50, p50, g50 = (pct(lat[k], .5) for k in ("direct", "proxy", "gateway"))
    print(f"added at p50: gateway {g50 - d50:.3f} ms ({g50 / d50:.2f}x direct); bare SDK proxy {p50 - d50:.3f} ms; "
          f"gateway beyond the bare proxy {g50 - p50:.3f} ms")
    per = {k: v / n * 1000 for k, v in cpu.items()}
    print(f"CPU per call (ms): gateway process {per['gateway@gateway']:.2f}, bare proxy process "
          f"{per['proxy@proxy']:.2f}; the MCP server {per['server@direct']:.2f} called directly")
    if inside:
        print(f"inside the gateway (its log rows, {len(inside)} calls): outside its upstream call p50 "
              f"{statistics.median(inside):.3f} ms; its upstream call p50 {statistics.median(upstream):.3f} ms")

if __name__ == "__main__":
    main()
