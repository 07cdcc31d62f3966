"""OpenAI-compatible adapter on its three paths: the native HTTP/1.1 client, the aiohttp fast path,
and the httpx API over the same aiohttp session.

    .venv/bin/python benchmarks/adapter_bench.py [--requests 4000] [--rounds 3] [--concurrency 32]

The fake upstream of benchmarks/api_bench.py (SIMULATED canned answer, plain and SSE) runs pinned to
CPU 1; this process is pinned to CPU 0 and calls `OpenAICompatAdapter.complete` / `open_stream`:
"native" on a `make_client("native")` client (the `H1Pool` of adapters/h1.py, the default), "aiohttp"
on a `make_client("aiohttp")` client (the aiohttp session fast path), "httpx" on the same client with
the fast path off (`aiohttp_session` returns None, so the call goes through `httpx.AsyncClient` on
the httpx-aiohttp transport), interleaved round by round. Reported: CPU time of this process per
call (independent of machine load) and calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_bench
from policyengine.adapters import openai_compat
from policyengine.adapters.base import CallOptions
from policyengine.adapters.http import make_client

from policyengine.types import ModelSpec, Provider

PATHS = ("httpx", "aiohttp", "native")


async def run(port: int, n: int, rounds: int, conc: int, paths: tuple[str, ...] = PATHS) -> None:
    client = make_client("aiohttp")
    native_client = make_client("native")
    adapters = {"httpx": openai_compat.OpenAICompatAdapter(client),
                "aiohttp": openai_compat.OpenAICompatAdapter(client),
                "native": openai_compat.OpenAICompatAdapter(native_client)}
    base = f"http://127.0.0.1:{port}/v1"
    spec = ModelSpec(name="m", provider=Provider.vllm, base_url=base)
    opts = CallOptions(base_url=base)
    body = {"model": "auto", "messages": [{"role": "user", "content": "Summarise my last ticket."}]}
    fast = openai_compat.aiohttp_session

    async def one(adapter: openai_compat.OpenAICompatAdapter, stream: bool) -> None:
        if stream:
            s = await adapter.open_stream(spec, body, opts)
            async for _ in s:
                pass
            await s.aclose()
        else:
            await adapter.complete(spec, body, opts)

    async def batch(adapter: openai_compat.OpenAICompatAdapter, count: int, stream: bool) -> None:
        async def worker(k: int) -> None:
            for _ in range(k):
                await one(adapter, stream)
        await asyncio.gather(*(worker(count // conc) for _ in range(conc)))

    try:
        for stream in (False, True):
            for r in range(rounds):
                for name in paths:
                    openai_compat.aiohttp_session = (lambda c: None) if name == "httpx" else fast
                    await batch(adapters[name], conc * 10, stream)  # warm the pool
                    c0, t0 = time.process_time(), time.perf_counter()
                    await batch(adapters[name], n, stream)
                    c1, t1 = time.process_time(), time.perf_counter()
                    print(f"{'stream' if stream else 'plain '} round {r + 1} {name:7s}: "
                          f"{1e6 * (c1 - c0) / n:6.0f} us CPU/call  {n / (t1 - t0):6.0f} calls/s", flush=True)
    finally:
        openai_compat.aiohttp_session = fast
        await client.aclose()
        await native_client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--cpu", default="0")
    ap.add_argument("--upstream-cpu", default="1")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ",".join(PATHS))
    a = ap.parse_args()
    os.sched_setaffinity(0, {int(a.cpu)})
    port = api_bench.free_port()
    up = subprocess.Popen(["taskset", "-c", a.upstream_cpu, sys.executable, api_bench.__file__, "--upstream",
                           "--port", str(port)], start_new_session=True)
    try:
        api_bench.wait_port(port, up)
        import uvloop

        uvloop.run(run(port, a.requests, a.rounds, a.concurrency, tuple(a.paths.split(","))))
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(10)


if __name__ == "__main__":
    main()
