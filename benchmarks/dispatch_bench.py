"""ChainDispatcher overhead and failover cost, measured side by side in one run.

1. Overhead: the same chat request sent (a) straight to a fast simulated upstream
   with the same pooled httpx+aiohttp client the adapters use, and (b) through
   `ChainDispatcher.complete` (in-memory state). Added latency p50/p99 at concurrency 1,
   throughput at concurrency 1 and 32. This process is pinned to one core, the
   upstream runs in its own process on the other.
2. Failover: chain [broken, fallback] vs chain [fallback] alone, where the broken
   primary answers 500 at once, or refuses connections; the breaker is disabled so
   every request really tries the primary. Reported: time added beyond the
   fallback's own latency (no backoff is involved: a crash fails over at once).

    .venv/bin/python benchmarks/dispatch_bench.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dispatch_common import free_port, pin_self, summary, upstream
from policyengine.adapters.http import make_client

from policyengine.dispatch import ChainDispatcher, DispatchSettings
from policyengine.state import BreakerConfig, MemoryStateStore
from policyengine.types import ModelSpec, Provider, Routing

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Summarise the refund policy."}]}


async def drive(call, n: int, conc: int) -> tuple[float, list[float]]:
    for _ in range(min(50, n)):
        await call()
    lat: list[float] = []
    per = max(1, n // conc)

    async def worker() -> None:
        for _ in range(per):
            t = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return len(lat) / (time.perf_counter() - t0), lat


def spec(name: str, url: str) -> ModelSpec:
    return ModelSpec(name=name, provider=Provider.vllm, base_url=url, model_id="bench")


async def overhead(n: int, rounds: int, redis_url: str | None = None) -> dict:
    with upstream(cpu=1) as url:
        client = make_client("aiohttp")
        payload = orjson.dumps(BODY)

        async def direct():
            r = await client.post(url + "/chat/completions", content=payload,
                                  headers={"content-type": "application/json", "accept": "application/json"})
            r.raise_for_status()
            return orjson.loads(r.content)

        d = ChainDispatcher({"m": spec("m", url)}, MemoryStateStore())
        routing = Routing(chain=["m"])

        async def dispatched():
            return await d.complete(BODY, routing)

        paths = [("direct", direct), ("dispatched", dispatched)]
        dr = None
        if redis_url:
            import uuid

            from policyengine.state import RedisStateStore

            dr = ChainDispatcher({"m": spec("m", url)}, RedisStateStore(redis_url, prefix=f"pe-bench-{uuid.uuid4().hex[:8]}:"))

            async def dispatched_redis():
                return await dr.complete(BODY, routing)

            paths.append(("disp+redis", dispatched_redis))
        res: dict = {}
        for _ in range(rounds):
            for conc in (1, 32):
                for name, fn in paths:
                    c0 = time.process_time()
                    rate, lat = await drive(fn, n if conc > 1 else n // 3, conc)
                    cpu_us = (time.process_time() - c0) / (len(lat) + min(50, n)) * 1e6
                    res.setdefault((name, conc), []).append((rate, lat, cpu_us))
        await client.aclose()
        await d.aclose()
        if dr is not None:
            await dr.state.aclose()
            await dr.aclose()
    return res


async def streaming(n: int) -> dict:
    """Time to first content token and to the end of a 20-chunk stream, direct SSE vs dispatched."""
    from httpx_sse import EventSource

    with upstream(cpu=1) as url:
        client = make_client("aiohttp")
        payload = orjson.dumps({**BODY, "stream": True})
        d = ChainDispatcher({"m": spec("m", url)}, MemoryStateStore())
        routing = Routing(chain=["m"])

        async def direct() -> tuple[float, float]:
            t = time.perf_counter()
            first = None
            async with client.stream("POST", url + "/chat/completions", content=payload,
                                     headers={"content-type": "application/json"}) as r:
                async for ev in EventSource(r).aiter_sse():
                    if ev.data == "[DONE]":
                        break
                    c = orjson.loads(ev.data)
                    if first is None and c["choices"] and c["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - t
            return first, time.perf_counter() - t

        async def dispatched() -> tuple[float, float]:
            t = time.perf_counter()
            first = None
            async for c in d.stream(BODY, routing):
                if first is None and c.get("choices") and c["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - t
            return first, time.perf_counter() - t

        res: dict[str, tuple[list[float], list[float]]] = {"direct": ([], []), "dispatched": ([], [])}
        for _ in range(30):
            await direct()
            await dispatched()
        for _ in range(n):
            for name, fn in (("direct", direct), ("dispatched", dispatched)):
                f, total = await fn()
                res[name][0].append(f)
                res[name][1].append(total)
        await client.aclose()
        await d.aclose()
    return {k: (summary(v[0]), summary(v[1])) for k, v in res.items()}


async def failover(n: int) -> dict:
    settings = DispatchSettings(breaker=BreakerConfig(threshold=10**9))
    out = {}
    with upstream(cpu=1, latency_ms=20) as fb_url, upstream(cpu=1, status=500) as bad_url:
        refused = f"http://127.0.0.1:{free_port()}/v1"
        for label, primary_url in (("500 at once", bad_url), ("connection refused", refused)):
            d = ChainDispatcher({"bad": spec("bad", primary_url), "fb": spec("fb", fb_url)}, MemoryStateStore(),
                           settings=settings)
            chain, alone = Routing(chain=["bad", "fb"]), Routing(chain=["fb"])
            lat_chain, lat_alone = [], []
            for _ in range(20):
                await d.complete(BODY, chain)
                await d.complete(BODY, alone)
            for _ in range(n):  # interleaved so noise hits both alike
                t = time.perf_counter()
                r = await d.complete(BODY, chain)
                lat_chain.append(time.perf_counter() - t)
                assert r.model == "fb" and r.attempts[0].model == "bad"
                t = time.perf_counter()
                await d.complete(BODY, alone)
                lat_alone.append(time.perf_counter() - t)
            await d.aclose()
            out[label] = (summary(lat_alone), summary(lat_chain))
    return out


async def main(n: int, rounds: int, nf: int, redis_url: str | None) -> None:
    pin_self(0)
    res = await overhead(n, rounds, redis_url)
    med = {k: sorted(v, key=lambda x: x[0])[len(v) // 2] for k, v in res.items()}
    cpu = {k: sorted(x[2] for x in v)[len(v) // 2] for k, v in res.items()}
    print("== dispatch overhead (healthy call, one client core) ==")
    print("   cpu us/req = this process's CPU time per request (robust to other load on the machine);")
    print("   1-core req/s = 1e6 / cpu us/req, the throughput one dedicated core would sustain")
    print(f"{'path':<12}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}{'1-core req/s':>14}")
    for conc in (1, 32):
        for name in [p for p in ("direct", "dispatched", "disp+redis") if (p, conc) in med]:
            rate, lat, _ = med[(name, conc)]
            s = summary(lat)
            c = cpu[(name, conc)]
            print(f"{name:<12}{conc:>5}{rate:>9.0f}{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}{c:>12.0f}{1e6 / c:>14.0f}")
    print(f"dispatcher CPU added per request at concurrency 32: {cpu[('dispatched', 32)] - cpu[('direct', 32)]:+.0f} us")
    d1, x1 = summary(med[("direct", 1)][1]), summary(med[("dispatched", 1)][1])
    print(f"added latency at concurrency 1: p50 {x1['p50_ms'] - d1['p50_ms']:+.3f} ms, "
          f"p99 {x1['p99_ms'] - d1['p99_ms']:+.3f} ms")
    for conc in (1, 32):
        print(f"throughput dispatched/direct at concurrency {conc}: "
              f"{med[('dispatched', conc)][0] / med[('direct', conc)][0]:.2f} "
              f"({med[('dispatched', conc)][0]:.0f} vs {med[('direct', conc)][0]:.0f} req/s)")
    print("\n== streaming (20 content chunks, concurrency 1) ==")
    st = await streaming(max(50, nf))
    for name, (ttft, total) in st.items():
        print(f"{name:<12} first token p50 {ttft['p50_ms']:.3f} ms p99 {ttft['p99_ms']:.3f} ms; "
              f"whole stream p50 {total['p50_ms']:.3f} ms p99 {total['p99_ms']:.3f} ms")
    print(f"added time to first token p50 {st['dispatched'][0]['p50_ms'] - st['direct'][0]['p50_ms']:+.3f} ms, "
          f"whole stream p50 {st['dispatched'][1]['p50_ms'] - st['direct'][1]['p50_ms']:+.3f} ms")
    print("\n== failover added time (fallback answers in ~20 ms; no backoff involved) ==")
    for label, (alone, chain) in (await failover(nf)).items():
        print(f"primary {label:<20} fallback alone p50 {alone['p50_ms']:.2f} ms, via failover p50 "
              f"{chain['p50_ms']:.2f} ms -> added p50 {chain['p50_ms'] - alone['p50_ms']:+.2f} ms, "
              f"p99 {chain['p99_ms'] - alone['p99_ms']:+.2f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--failover-requests", type=int, default=200)
    ap.add_argument("--redis", default=None, help="also measure dispatch with Redis state, e.g. redis://127.0.0.1:6379/0")
    a = ap.parse_args()
    asyncio.run(main(a.requests, a.rounds, a.failover_requests, a.redis))
