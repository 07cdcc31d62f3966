"""Upstream HTTP clients side by side: httpx's default transport, httpx-aiohttp's (both under the
httpx API), the aiohttp session called directly, and the native HTTP/1.1 client (adapters/h1.py).

Each client posts chat completions to a fast simulated upstream running in its own process
(pinned to another core), at concurrency 1 and 32, plain (JSON answer) and streamed (22 SSE
events read as they come), interleaving the clients in rounds so that machine noise hits all
alike. Reported per client: req/s, latency, and CPU time of this process per request.

    .venv/bin/python benchmarks/transport_bench.py [--requests 3000] [--rounds 3] [--loop uvloop]
        [--clients httpx,aiohttp,aiohttp-direct,native] [--modes plain,stream]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dispatch_common import pin_self, summary, upstream
from policyengine.adapters.http import aiohttp_session, make_client, native_pool

BODY = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": "Summarise the refund policy."}]})
STREAM_BODY = orjson.dumps({"model": "bench", "stream": True,
                            "messages": [{"role": "user", "content": "Summarise the refund policy."}]})
HEADERS = {"content-type": "application/json"}
CLIENTS = ("httpx", "aiohttp", "aiohttp-direct", "native")


def make_call(kind: str, url: str, stream: bool):
    """(one request, read to the end and checked; close)"""
    body = STREAM_BODY if stream else BODY
    client = make_client("native" if kind == "native" else "httpx" if kind == "httpx" else "aiohttp")

    if kind == "native":
        pool = native_pool(client)
        assert pool is not None

        async def call() -> None:
            r = await pool.request("POST", url, HEADERS, body, 5.0)
            if stream:
                async for _ in r.iter_bytes():
                    pass
            else:
                orjson.loads(await r.read())
            assert r.status == 200
    elif kind == "aiohttp-direct":
        session = aiohttp_session(client)
        assert session is not None

        async def call() -> None:
            async with session.post(url, data=body, headers=HEADERS) as r:
                if stream:
                    async for _ in r.content.iter_any():
                        pass
                else:
                    orjson.loads(await r.read())
                assert r.status == 200
    else:
        async def call() -> None:
            if stream:
                async with client.stream("POST", url, content=body, headers=HEADERS) as r:
                    async for _ in r.aiter_bytes():
                        pass
                    r.raise_for_status()
            else:
                r = await client.post(url, content=body, headers=HEADERS)
                r.raise_for_status()
                orjson.loads(r.content)

    return call, client.aclose


async def run(kind: str, url: str, n: int, conc: int, stream: bool) -> tuple[float, list[float], float]:
    call: Callable[[], Awaitable[None]]
    call, close = make_call(kind, url, stream)
    lat: list[float] = []
    try:
        for _ in range(min(50, n)):  # warm the pool
            await call()
        per_worker = n // conc

        async def worker() -> None:
            for _ in range(per_worker):
                t = time.perf_counter()
                await call()
                lat.append(time.perf_counter() - t)

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await close()
    return len(lat) / elapsed, lat, cpu / max(1, len(lat)) * 1e6


async def main(n: int, rounds: int, clients: tuple[str, ...], modes: tuple[str, ...]) -> None:
    pin_self(0)
    with upstream(cpu=1) as base:
        url = base + "/chat/completions"
        results: dict[tuple[str, str, int], list[tuple[float, list[float], float]]] = {}
        for r in range(rounds):
            for mode in modes:
                for conc in (1, 32):
                    for kind in clients:
                        res = await run(kind, url, n if conc > 1 else n // 3, conc, mode == "stream")
                        results.setdefault((mode, kind, conc), []).append(res)
                        print(f"round {r + 1} {mode:6s} c={conc:<3d} {kind:15s} {res[0]:7.0f} req/s "
                              f"{res[2]:6.0f} us CPU/req", flush=True)
    print(f"\n{'mode':<7}{'client':<16}{'conc':>5}{'req/s (best)':>14}{'req/s (median)':>16}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'cpu us/req':>12}")
    med_rate: dict[tuple[str, str, int], float] = {}
    med_cpu: dict[tuple[str, str, int], float] = {}
    for mode in modes:
        for conc in (1, 32):
            for kind in clients:
                rs = results[(mode, kind, conc)]
                rates = sorted(x for x, _, _ in rs)
                cpus = sorted(c for _, _, c in rs)
                s = summary([v for _, ls, _ in rs for v in ls])
                med_rate[(mode, kind, conc)] = rates[len(rates) // 2]
                med_cpu[(mode, kind, conc)] = cpus[len(cpus) // 2]
                print(f"{mode:<7}{kind:<16}{conc:>5}{rates[-1]:>14.0f}{rates[len(rates) // 2]:>16.0f}"
                      f"{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{cpus[len(cpus) // 2]:>12.0f}")
    if "native" in clients:
        for mode in modes:
            for conc in (1, 32):
                for kind in clients:
                    if kind != "native":
                        print(f"{mode} c={conc}: native vs {kind}: "
                              f"{med_rate[(mode, 'native', conc)] / med_rate[(mode, kind, conc)]:.2f}x req/s, "
                              f"{med_cpu[(mode, 'native', conc)] / med_cpu[(mode, kind, conc)]:.2f}x CPU/req")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the service runs on uvloop")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--modes", default="plain,stream")
    a = ap.parse_args()
    coro = main(a.requests, a.rounds, tuple(a.clients.split(",")), tuple(a.modes.split(",")))
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
