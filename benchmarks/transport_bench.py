"""httpx's default async transport vs httpx-aiohttp's, under the same httpx API.

Each client posts chat completions to a fast simulated upstream running in its
own process (pinned to another core), at concurrency 1 and 32, interleaving the
two transports in rounds so that machine noise hits both alike.

    .venv/bin/python benchmarks/transport_bench.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dispatch_common import pin_self, summary, upstream
from policyengine.adapters.http import make_client

BODY = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": "Summarise the refund policy."}]})


async def run(transport: str, url: str, n: int, conc: int) -> tuple[float, list[float], float]:
    client = make_client(transport)
    lat: list[float] = []
    try:
        for _ in range(min(50, n)):  # warm the pool
            (await client.post(url, content=BODY, headers={"content-type": "application/json"})).raise_for_status()
        sem_n = n // conc

        async def worker() -> None:
            for _ in range(sem_n):
                t = time.perf_counter()
                r = await client.post(url, content=BODY, headers={"content-type": "application/json"})
                r.raise_for_status()
                orjson.loads(r.content)
                lat.append(time.perf_counter() - t)

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await client.aclose()
    return len(lat) / elapsed, lat, cpu / max(1, len(lat)) * 1e6


async def main(n: int, rounds: int) -> None:
    pin_self(0)
    with upstream(cpu=1) as base:
        url = base + "/chat/completions"
        results: dict[tuple[str, int], list[tuple[float, list[float], float]]] = {}
        for _ in range(rounds):
            for conc in (1, 32):
                for tr in ("httpx", "aiohttp"):
                    results.setdefault((tr, conc), []).append(await run(tr, url, n if conc > 1 else n // 3, conc))
    print(f"{'transport':<10}{'conc':>6}{'req/s (best)':>14}{'req/s (median)':>16}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'cpu us/req':>12}")
    best = {}
    for (tr, conc), rs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rates = sorted(r for r, _, _ in rs)
        cpus = sorted(c for _, _, c in rs)
        lat = [x for _, ls, _ in rs for x in ls]
        s = summary(lat)
        best[(tr, conc)] = rates[len(rates) // 2]
        print(f"{tr:<10}{conc:>6}{rates[-1]:>14.0f}{rates[len(rates) // 2]:>16.0f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
              f"{cpus[len(cpus) // 2]:>12.0f}")
    for conc in (1, 32):
        print(f"aiohttp/httpx throughput ratio at concurrency {conc}: "
              f"{best[('aiohttp', conc)] / best[('httpx', conc)]:.2f}x")
    for tr in ("httpx", "aiohttp"):
        print(f"{tr}: concurrency 32 vs 1 throughput: {best[(tr, 32)] / best[(tr, 1)]:.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.requests, a.rounds))
