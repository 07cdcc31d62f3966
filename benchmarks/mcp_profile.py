"""Where the MCP gateway's time goes, in process, beside the SDK it replaces on the hot path.

An MCP server (the SDK's `MCPServer`, one `lookup_order` tool, streamable HTTP under uvicorn)
runs in its own process. In this one:

1. the upstream leg: `Upstream.call` through the SDK's `Client` against `Upstream.call_raw`
   on the raw JSON-RPC path (`policyengine.mcpgate.wire`), sequentially, p50 and CPU per call
   of this process;
2. the whole gateway: its ASGI app (`create_gateway_app`, SQLite `--sync`, default `NORMAL`) called directly with
   a 2026-07-28 tools/call (no HTTP server in front, no client), with `fast_path` on and off,
   p50 and CPU per call; `--profile` adds a cProfile of the fast path (cumulative, the
   gateway's own functions).

`--stages` times the fast path's stages (thread CPU time per call, each stage wrapped: the
figures overlap and include the wrappers); `--uvloop` runs the loop the service runs on.

`--profile` sorts by `MCP_PROFILE_SORT` (default cumulative) and lists the functions matching
`MCP_PROFILE_FILTER` (a regex; default the gateway's own modules; `.` lists every function).
`--commit-modes` instead compares `commit_before_forward: always` with the default
`unless_read_only` on the bench's read-only tool, two apps in this process, rounds interleaved.

    PYTHONPATH=. .venv/bin/python benchmarks/mcp_profile.py [--calls 600] [--profile] [--stages] [--uvloop] [--sync FULL]
    PYTHONPATH=. .venv/bin/python benchmarks/mcp_profile.py --calls 2000 --uvloop --commit-modes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mcp_bench import POLICY, SERVER, TOKEN, free_port, wait_port

from policyengine.mcpgate import McpSettings, UpstreamSpec
from policyengine.mcpgate.upstreams import Upstreams

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = [(b"host", b"127.0.0.1"), (b"accept", b"application/json, text/event-stream"),
           (b"content-type", b"application/json"), (b"mcp-protocol-version", b"2026-07-28"),
           (b"mcp-method", b"tools/call"), (b"mcp-name", b"lookup_order"),
           (b"authorization", f"Bearer {TOKEN}".encode())]


async def upstream_leg(url: str, calls: int) -> None:
    for raw in (False, True):
        ups = Upstreams([UpstreamSpec(name="bench", kind="http", url=url)], raw=raw)
        await ups.start()
        u = ups.by_name["bench"]
        f = u.call_raw if raw else u.call
        for _ in range(100):
            await f("lookup_order", {"order_id": "A1"})
        lat = []
        c0 = time.process_time()
        for _ in range(calls):
            t = time.perf_counter()
            await f("lookup_order", {"order_id": "A1"})
            lat.append((time.perf_counter() - t) * 1000)
        cpu = (time.process_time() - c0) / calls * 1000
        await ups.aclose()
        name = "raw JSON-RPC (wire.py)" if raw else "the SDK's Client.call_tool"
        print(f"upstream leg, {name:28} p50 {statistics.median(lat):7.3f} ms   CPU per call {cpu:6.3f} ms")


async def one(app, i: int) -> None:
    body = orjson.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "lookup_order", "arguments": {"order_id": f"A{i}"}, "_meta": META}})
    scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp", "root_path": "",
             "headers": [*HEADERS, (b"content-length", str(len(body)).encode())], "query_string": b"",
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2)}
    sent: list[dict] = []
    given = False

    async def receive() -> dict:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected (the SDK's disconnect watcher waits here)
        raise AssertionError("unreachable")

    async def send(m: dict) -> None:
        sent.append(m)

    await app(scope, receive, send)
    assert sent and sent[0]["status"] == 200, sent


async def whole_gateway(url: str, calls: int, tmp: Path, profile: bool) -> None:
    from policyengine.mcpgate.http import create_gateway_app
    from policyengine.settings import SeedKey, Settings

    os.environ["PE_BENCH_TOKEN"] = TOKEN
    os.environ.setdefault("POLICYENGINE_APPROVALS_LINK_SECRET", "bench-link-secret-0123456789abcdef")
    for fast in (False, True):
        db = tmp / f"pe-{fast}.db"
        settings = Settings(database_url=f"sqlite:///{db}", policy_path=[str(tmp / "bench.policy")],
                            sqlite_synchronous=SYNC[0],
                            seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"],
                                               subject="bench")])
        app = create_gateway_app(settings, McpSettings(upstreams=[UpstreamSpec(name="bench", kind="http", url=url)],
                                                       fast_path=fast))
        async with app.router.lifespan_context(app):
            for i in range(100):
                await one(app, i)
            lat = []
            STAGES.clear()
            c0 = time.process_time()
            for i in range(calls):
                t = time.perf_counter()
                await one(app, i)
                lat.append((time.perf_counter() - t) * 1000)
            cpu = (time.process_time() - c0) / calls * 1000
            print(f"whole gateway in process, fast_path: {str(fast).lower():5}  p50 {statistics.median(lat):7.3f} ms"
                  f"   CPU per call {cpu:6.3f} ms (the decision's commit and the outcome row included)")
            if fast and STAGES:
                print("  thread CPU time per call of its stages (us; a nested stage is part of the one above):")
                for label in STAGE_ORDER:
                    print(f"  {label:58} {STAGES.get(label, 0.0) / calls * 1e6:8.1f}")
            if profile and fast:
                pr = cProfile.Profile()
                pr.enable()
                for i in range(calls):
                    await one(app, i)
                pr.disable()
                pstats.Stats(pr).sort_stats(os.environ.get("MCP_PROFILE_SORT", "cumulative")).print_stats(
                    os.environ.get("MCP_PROFILE_FILTER", "mcpgate|gateway/call|store/logger|evaluator|adapters/h1"), 30)


async def commit_modes(url: str, calls: int, tmp: Path, rounds: int = 8) -> None:
    """The same gateway with `commit_before_forward: always` and `unless_read_only` (the bench's
    `lookup_order` is declared read-only, so the second sends it before its row commits), both
    apps in this process in front of the same server, rounds interleaved so both see the same
    machine; p50 and CPU per call of each, the first round left out as warm-up."""
    from policyengine.mcpgate.http import create_gateway_app
    from policyengine.settings import SeedKey, Settings

    os.environ["PE_BENCH_TOKEN"] = TOKEN
    os.environ.setdefault("POLICYENGINE_APPROVALS_LINK_SECRET", "bench-link-secret-0123456789abcdef")
    modes = ("always", "unless_read_only")
    async with contextlib.AsyncExitStack() as stack:
        apps = {}
        for mode in modes:
            settings = Settings(database_url=f"sqlite:///{tmp / f'pe-{mode}.db'}",
                                policy_path=[str(tmp / "bench.policy")], sqlite_synchronous=SYNC[0],
                                seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"],
                                                   subject="bench")])
            app = create_gateway_app(settings, McpSettings(
                upstreams=[UpstreamSpec(name="bench", kind="http", url=url)], commit_before_forward=mode))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[mode] = app
        lat: dict[str, list[float]] = {m: [] for m in modes}
        cpu = dict.fromkeys(modes, 0.0)
        for r in range(rounds + 1):
            for mode in modes if r % 2 else modes[::-1]:
                c0 = time.process_time()
                for i in range(max(1, calls // rounds)):
                    t = time.perf_counter()
                    await one(apps[mode], i)
                    if r:
                        lat[mode].append((time.perf_counter() - t) * 1000)
                if r:
                    cpu[mode] += time.process_time() - c0
    for mode in modes:
        print(f"whole gateway in process, commit_before_forward: {mode:16} p50 {statistics.median(lat[mode]):7.3f} ms"
              f"   CPU per call {cpu[mode] / len(lat[mode]) * 1000:6.3f} ms")
    a, b = (statistics.median(lat[m]) for m in modes)
    print(f"  the read-only tool sent before its row commits: {b - a:+.3f} ms at p50 ({b / a:.2f}x)")


STAGES: dict[str, float] = {}
STAGE_ORDER: list[str] = []


def _timed(label: str, f: Any) -> Any:
    """`f` with its thread CPU time added to STAGES[label] (an awaited coroutine: from its start
    to its end, so what the loop runs meanwhile counts too; calls here are sequential)."""
    if asyncio.iscoroutinefunction(f):
        @functools.wraps(f)
        async def run_async(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return await f(*a, **k)
            finally:
                STAGES[label] = STAGES.get(label, 0.0) + time.thread_time() - t
        return run_async

    @functools.wraps(f)
    def run(*a: Any, **k: Any) -> Any:
        t = time.thread_time()
        try:
            return f(*a, **k)
        finally:
            STAGES[label] = STAGES.get(label, 0.0) + time.thread_time() - t
    return run


def install_stages() -> None:
    """Wrap the fast path's stages (module attributes, so the callers' lookups find the wrappers)."""
    from policyengine.adapters import h1

    from policyengine.gateway import call
    from policyengine.mcpgate import fast, http, server
    from policyengine.store import logger

    for owner, name, label in (
            (http.McpHttpApp, "__call__", "the whole /mcp request (auth included)"),
            (fast.FastPath, "_checked", "  checks (envelope ladder, params, headers)"),
            (server.McpGateway, "decide", "  decide (Action, evaluation, row built and committed)"),
            (server, "tool_action", "    the Action"),
            (server, "open_call", "    evaluation and the Call"),
            (call.Call, "record", "    the decision row built and committed"),
            (logger.DecisionLogger, "_append_inline", "      the SQLite commit"),
            (server.McpGateway, "forward_wire", "  forward (the raw POST and its answer)"),
            (h1.H1Pool, "request", "    the request sent, until its head is in"),
            (call.Call, "outcome", "  the outcome row built and queued"),
            (fast, "_write", "  the answer written")):
        STAGE_ORDER.append(label)
        setattr(owner, name, _timed(label, getattr(owner, name)))


# the log's SQLite synchronous mode for every app this script builds (--sync)
SYNC = ["NORMAL"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=600)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--stages", action="store_true", help="thread CPU time per call of the fast path's stages")
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop, as the service does")
    ap.add_argument("--commit-modes", action="store_true",
                    help="only: commit_before_forward always against unless_read_only, interleaved")
    ap.add_argument("--sync", choices=["NORMAL", "FULL"], default="NORMAL",
                    help="SQLite synchronous mode of the decision log (the service's default is FULL)")
    args = ap.parse_args()
    SYNC[0] = args.sync
    if args.stages:
        install_stages()
    tmp = Path(tempfile.mkdtemp(prefix="mcp-profile-"))
    (tmp / "server.py").write_text(SERVER)
    (tmp / "bench.policy").write_text(POLICY)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(tmp / "server.py"), str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_port(port, server, "the MCP server")
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}/mcp"
        print(f"load {os.getloadavg()[0]:.1f}, {args.calls} sequential calls per line")
        run: Any = asyncio.run
        if args.uvloop:
            import uvloop

            run = uvloop.run
        if args.commit_modes:
            run(commit_modes(url, args.calls, tmp))
            return
        run(upstream_leg(url, args.calls))
        run(whole_gateway(url, args.calls, tmp, args.profile))
    finally:
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main()
