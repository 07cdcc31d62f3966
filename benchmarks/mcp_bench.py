"""Latency the MCP gateway adds per tools/call, beside calling the MCP server directly, in one run.

An MCP server (the SDK's `MCPServer`, one `lookup_order` tool, streamable HTTP under uvicorn)
runs in its own process. In front of it, each in its own process: a do-nothing proxy on the
same SDK (the floor of any gateway built on it), `policyengine mcp --transport http` as it
ships (the fast path: an allowed 2026-07-28 tools/call answered without the SDK's server and
client machinery), and the same gateway with `fast_path: false` (every call through the SDK),
each with a policy that authorizes the tool (every call decided and its decision row committed
before it is forwarded; the outcome row queued). This process holds one real SDK client per
side and runs rounds of sequential calls (concurrency 1), rotating which side goes first, so
all sides see the same machine load.

Printed: p50 / p90 / p99 of each side, the latency each adds over the direct call at p50 and
p90 with the ratios, CPU per call of each process, and, from each gateway's own log rows, how
much of one call it spends outside the upstream call (the decision, its commit, the server
side) against the upstream call it makes.

With `--baseline REV`, one more side: the same gateway as the commit REV ships it (its files
exported with `git archive`, run from there), so a change is measured against its parent in
one run, under the same load.

    .venv/bin/python benchmarks/mcp_bench.py [--calls 400] [--rounds 4] [--sync NORMAL|FULL] [--baseline REV]
    MCP_BENCH_PROFILE=/tmp/gw.prof ...   # cProfile of the fast gateway's process
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
    from mcp_types import ToolAnnotations
    mcp = MCPServer("bench")

    @mcp.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id}: delivered"

    @mcp.tool(annotations=ToolAnnotations(destructiveHint=True))
    def cancel_order(order_id: str) -> str:
        """Cancel an order (here: says it did)."""
        return f"order {order_id}: cancelled"

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
POLICY = 'policy "bench" version 1\nauthorize lookup_order\nauthorize cancel_order\n'


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


# The sides that call the side-effecting tool (`cancel_order`, whose decision row commits before
# it is sent by default); every other side calls the read-only `lookup_order`.
WRITE_SIDES = ("direct_write", "gateway_write")


async def timed(client: Client, n: int, tool: str = "lookup_order") -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = await client.call_tool(tool, {"order_id": f"A{i}"})
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
        tools = {k: "cancel_order" if k in WRITE_SIDES else "lookup_order" for k in urls}
        for k, c in clients.items():  # warm-up: connections, the SDK's validators, the first decisions
            await timed(c, 50, tools[k])
        per = max(1, calls // rounds)
        order = list(urls)
        for r in range(rounds):  # rotate which side goes first
            for side in order[r % len(order):] + order[:r % len(order)]:
                before = {k: cpu_s(p) for k, p in pids.items()}
                lat[side].extend(await timed(clients[side], per, tools[side]))
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


# The gateway's entry point, run from a checkout `root`: `adapters/` and `notifier/` install as
# `policyengine.adapters` / `policyengine.notifier` (pyproject's package-dir), so they are looked
# up in `root` first, ahead of whichever checkout the environment's editable install points at.
LAUNCHER = textwrap.dedent('''
    import sys
    import policyengine
    policyengine.__path__.append(sys.argv.pop(1))
    from policyengine.cli import app
    app()
''')


def export_rev(rev: str, dest: Path) -> Path:
    """The files of commit `rev` of this repository, written under `dest` (no checkout touched)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_gateway(tmp: Path, tag: str, sport: int, sync: str, env: dict[str, str], *, fast: bool,
                  profile: str | None, commit: str | None, root: Path = ROOT) -> tuple[subprocess.Popen, int, Path]:
    """`policyengine mcp --transport http` (the checkout at `root`) in front of the server:
    (process, port, its log's path)."""
    port = free_port()
    env = {**env, "PYTHONPATH": str(root)}
    db = tmp / f"pe-{tag}.db"
    (tmp / f"settings-{tag}.json").write_text(json.dumps({
        "database_url": f"sqlite:///{db}", "policy_path": [str(tmp / "bench.policy")], "port": port,
        "sqlite_synchronous": sync,
        "seed_keys": [{"token_env": "PE_BENCH_TOKEN", "tenant": "bench", "roles": ["app"], "subject": "bench"}]}))
    (tmp / f"mcp-{tag}.json").write_text(json.dumps({
        "upstreams": {"bench": f"http://127.0.0.1:{sport}/mcp"}, "fast_path": fast,
        **({"commit_before_forward": commit} if commit is not None else {})}))
    proc = subprocess.Popen(
        [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []),
         str(tmp / "gateway.py"), str(root), "mcp", "--transport", "http",
         "--settings", str(tmp / f"settings-{tag}.json"), "--config", str(tmp / f"mcp-{tag}.json"), "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
    return proc, port, db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=400, help="calls per side (after 50 warm-up calls)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sync", choices=["NORMAL", "FULL"], default="NORMAL", help="SQLite synchronous mode of the log")
    ap.add_argument("--commit", choices=["always", "unless_read_only", "never"], default="unless_read_only",
                    help="commit_before_forward of the gateways (the default is the shipped default)")
    ap.add_argument("--baseline", metavar="REV", help="one more side: the gateway as commit REV ships it")
    args = ap.parse_args()
    # a baseline from before the three modes took a boolean: the same choice, or its own default
    base_commit = {"always": True, "never": False}.get(args.commit)
    tmp = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    (tmp / "server.py").write_text(SERVER)
    (tmp / "bench.policy").write_text(POLICY)
    (tmp / "gateway.py").write_text(LAUNCHER)
    base_root = export_rev(args.baseline, tmp / "baseline") if args.baseline else None
    (tmp / "proxy.py").write_text(PROXY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PE_BENCH_TOKEN": TOKEN,
           "POLICYENGINE_APPROVALS_LINK_SECRET": "bench-link-secret-0123456789abcdef"}
    sport, pport = free_port(), free_port()
    server = subprocess.Popen([sys.executable, str(tmp / "server.py"), str(sport)], env=env)
    procs: list[subprocess.Popen] = []
    try:
        wait_port(sport, server, "the MCP server")
        proxy = subprocess.Popen([sys.executable, str(tmp / "proxy.py"), str(pport),
                                  f"http://127.0.0.1:{sport}/mcp"], env=env)
        procs.append(proxy)
        wait_port(pport, proxy, "the bare SDK proxy")
        fast, fport, fdb = start_gateway(tmp, "fast", sport, args.sync, env, fast=True,
                                         profile=os.environ.get("MCP_BENCH_PROFILE"), commit=args.commit)
        procs.append(fast)
        sdk, gport, gdb = start_gateway(tmp, "sdk", sport, args.sync, env, fast=False, profile=None,
                                       commit=args.commit)
        procs.append(sdk)
        pids = {"server": server.pid, "proxy": proxy.pid, "gateway": fast.pid, "gateway_sdk": sdk.pid}
        urls = {"direct": f"http://127.0.0.1:{sport}/mcp", "proxy": f"http://127.0.0.1:{pport}/mcp",
                "gateway": f"http://127.0.0.1:{fport}/mcp", "gateway_sdk": f"http://127.0.0.1:{gport}/mcp",
                "direct_write": f"http://127.0.0.1:{sport}/mcp", "gateway_write": f"http://127.0.0.1:{fport}/mcp"}
        if base_root is not None:
            base, bport, _ = start_gateway(tmp, "base", sport, args.sync, env, fast=True, profile=None,
                                          commit=base_commit, root=base_root)
            procs.append(base)
            wait_port(bport, base, f"the gateway at {args.baseline}")
            pids["gateway_base"], urls["gateway_base"] = base.pid, f"http://127.0.0.1:{bport}/mcp"
        wait_port(fport, fast, "the gateway")
        wait_port(gport, sdk, "the gateway (fast_path: false)")
        time.sleep(1.0)  # the upstream connection is made in the lifespan, before the port listens
        lat, cpu = asyncio.run(measure(urls, args.calls, args.rounds, pids))
    finally:
        for p in (*reversed(procs), server):
            p.send_signal(signal.SIGINT)  # a clean stop (the profile, when asked for, is written)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    load = os.getloadavg()[0]
    n = len(lat["direct"])
    print(f"MCP gateway bench: {n} calls per side, concurrency 1, SQLite {args.sync}, "
          f"commit_before_forward: {args.commit}, load {load:.1f}")
    print(f"{'':40}{'p50':>9}{'p90':>9}{'p99':>9}   (ms)")
    names = {"direct": "direct to the server", "proxy": "through a bare SDK proxy",
             "gateway": "through the gateway", "gateway_sdk": "through the gateway, fast_path: false",
             "direct_write": "cancel_order, direct", "gateway_write": "cancel_order, through the gateway"}
    if "gateway_base" in lat:
        names["gateway_base"] = f"through the gateway at {args.baseline}"[:40]
    for side, name in names.items():
        xs = lat[side]
        print(f"{name:40}{pct(xs, .5):9.3f}{pct(xs, .9):9.3f}{pct(xs, .99):9.3f}")
    for q, label in ((.5, "p50"), (.9, "p90")):
        d = pct(lat["direct"], q)
        parts = [f"{k} {pct(lat[k], q) - d:+.3f} ms ({pct(lat[k], q) / d:.2f}x)" for k in ("gateway", "gateway_sdk",
                                                                                          "proxy")]
        print(f"added at {label} over direct: " + "; ".join(parts))
    for q, label in ((.5, "p50"), (.9, "p90")):
        d, w = pct(lat["direct_write"], q), pct(lat["gateway_write"], q)
        print(f"cancel_order (not read-only: its row commits before it is sent unless --commit never), added at "
              f"{label} over its direct call: {w - d:+.3f} ms ({w / d:.2f}x)")
    g50, s50, p50 = (pct(lat[k], .5) for k in ("gateway", "gateway_sdk", "proxy"))
    print(f"gateway vs fast_path: false at p50: {g50 - s50:+.3f} ms ({g50 / s50:.2f}x); vs the bare SDK proxy "
          f"{g50 - p50:+.3f} ms ({g50 / p50:.2f}x)")
    if "gateway_base" in lat:
        d, g, b = (pct(lat[k], .5) for k in ("direct", "gateway", "gateway_base"))
        print(f"added at p50 over direct: gateway at {args.baseline} {b - d:+.3f} ms, this gateway {g - d:+.3f} ms")
    per = {k: v / n * 1000 for k, v in cpu.items()}
    if "gateway_base" in lat:
        print(f"CPU per call (ms): gateway at {args.baseline} {per['gateway_base@gateway_base']:.2f}, this gateway "
              f"{per['gateway@gateway']:.2f}")
    print(f"CPU per call (ms): gateway process {per['gateway@gateway']:.2f}, fast_path: false "
          f"{per['gateway_sdk@gateway_sdk']:.2f}, bare proxy process {per['proxy@proxy']:.2f}; the MCP server "
          f"{per['server@direct']:.2f} called directly")
    for tag, db in (("gateway", fdb), ("fast_path: false", gdb)):
        inside, upstream = gateway_split(db)
        if inside:
            print(f"inside the {tag} (its log rows, {len(inside)} calls of both tools): outside its upstream call p50 "
                  f"{statistics.median(inside):.3f} ms; its upstream call p50 {statistics.median(upstream):.3f} ms")


if __name__ == "__main__":
    main()
