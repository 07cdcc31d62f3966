"""Deployments behind one model: balancing strategies, hedging, and the balancer's own cost, side by side.

1. Balancing. Three deployments of one model, each a local server in its own process
   (`policyengine.simulate.fastserver`, SIMULATED): `slow` answers in 150 ms, `flaky` in 10 ms but
   30% of its answers are an instant 500 with vLLM's engine-crash body, `healthy` in 10 ms. The same
   plain chat requests go through a ChainDispatcher with `balance round_robin` and one with
   `balance latency` (EWMA of latency x load, least expected wait), in interleaved rounds at a fixed concurrency.
   Reported: client latency p50/p99, client-visible error rate, failed upstream attempts per
   request, and each deployment's share of the calls.
2. Hedging. Two deployments, streaming: `tail` gives its first token in 10 ms except on 10% of
   streams, where it waits 600 ms; `fast` always 10 ms. `balance round_robin`; hedging off, then
   `hedge after 100ms budget 10%`, then `budget 2%`, interleaved. Reported: time to first token
   p50/p99, and the extra load (hedged calls / requests) against the budget.
3. The balancer's cost per pick: `Balancer.order` + `started` + `finished` over three deployments,
   each strategy, in-process (no I/O): microseconds per request (target < 20 us).

    .venv/bin/python benchmarks/balance_bench.py [--requests 1500] [--rounds 3] [--concurrency 8] [--picks 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dispatch_common import summary, upstream

from policyengine.dispatch import ChainDispatcher, DispatchError, DispatchSettings
from policyengine.dispatch.balance import Balancer, targets_of
from policyengine.state import MemoryStateStore
from policyengine.types import Deployment, ModelSpec, Provider, Routing

BODY = {"model": "bench", "messages": [{"role": "user", "content": "Summarise the refund policy."}]}


def fleet_spec(urls: dict[str, str], balance: str) -> ModelSpec:
    return ModelSpec(name="bench", provider=Provider.vllm, balance=balance,
                     deployments=tuple(Deployment(name=n, base_url=u) for n, u in urls.items()))


class Tally:
    """Latencies, client errors, failed attempts and calls per deployment of one configuration."""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.errors = 0
        self.failed_attempts = 0
        self.calls: Counter[str] = Counter()
        self.requests = 0

    def attempts(self, attempts: list) -> None:
        for a in attempts:
            if a.skipped or a.reason == "hedge_cancelled":
                if a.reason == "hedge_cancelled":
                    self.calls[a.deployment or "-"] += 1
                continue
            self.calls[a.deployment or "-"] += 1
            if a.status != 200:
                self.failed_attempts += 1


async def run_plain(d: ChainDispatcher, routing: Routing, n: int, conc: int, t: Tally) -> None:
    it = iter(range(n))

    async def worker() -> None:
        for _ in it:
            t0 = time.perf_counter()
            t.requests += 1
            try:
                r = await d.complete(BODY, routing)
            except DispatchError as e:
                t.errors += 1
                t.attempts(e.attempts)
                continue
            t.lat.append(time.perf_counter() - t0)
            t.attempts(r.attempts)

    await asyncio.gather(*(worker() for _ in range(conc)))


async def run_stream(d: ChainDispatcher, routing: Routing, n: int, conc: int, t: Tally) -> None:
    it = iter(range(n))

    async def worker() -> None:
        for _ in it:
            t0 = time.perf_counter()
            t.requests += 1
            s = d.stream({**BODY, "stream": True}, routing)
            first: float | None = None
            try:
                async for ch in s:
                    if first is None and any((c.get("delta") or {}).get("content") for c in ch.get("choices") or ()):
                        first = time.perf_counter() - t0
            except DispatchError as e:
                t.errors += 1
                t.attempts(e.attempts)
                continue
            if first is None:
                t.errors += 1
            else:
                t.lat.append(first)
            t.attempts(s.result.attempts if s.result else [])

    await asyncio.gather(*(worker() for _ in range(conc)))


def row(name: str, t: Tally, base: dict | None = None) -> str:
    s = summary(t.lat)
    share = ", ".join(f"{k} {v / max(1, sum(t.calls.values())):.0%}" for k, v in sorted(t.calls.items()))
    ratio = f"  p99 x{s['p99_ms'] / base['p99_ms']:.2f}" if base else ""
    return (f"  {name:<26} p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms{ratio}  client errors "
            f"{t.errors / max(1, t.requests):.2%}  failed attempts/req {t.failed_attempts / max(1, t.requests):.3f}"
            f"  calls: {share}")


async def balancing(args: argparse.Namespace) -> None:
    print(f"1. balancing: 3 deployments (slow 150 ms, flaky 10 ms + 30% instant 500, healthy 10 ms), "
          f"{args.rounds} rounds x {args.requests // args.rounds} requests per strategy, concurrency {args.concurrency}")
    with contextlib.ExitStack() as st:
        urls = {"slow": st.enter_context(upstream(latency_ms=150, cpu=None)),
                "flaky": st.enter_context(upstream(latency_ms=10, cpu=None, extra=("--fail-rate", "0.3", "--seed", "1"))),
                "healthy": st.enter_context(upstream(latency_ms=10, cpu=None))}
        tallies = {s: Tally() for s in ("round_robin", "latency")}
        ds = {s: ChainDispatcher({"bench": fleet_spec(urls, s)}, MemoryStateStore(), settings=DispatchSettings())
              for s in tallies}
        routing = Routing(chain=["bench"])
        try:
            for d in ds.values():  # warm-up: connections, and the latency balancer's first estimates
                await run_plain(d, routing, 60, args.concurrency, Tally())
            per = args.requests // args.rounds
            for _ in range(args.rounds):
                for s, d in ds.items():
                    await run_plain(d, routing, per, args.concurrency, tallies[s])
        finally:
            for d in ds.values():
                await d.aclose()
    rr = summary(tallies["round_robin"].lat)
    print(row("round_robin", tallies["round_robin"]))
    print(row("latency (EWMA, least wait)", tallies["latency"], rr))
    lat = summary(tallies["latency"].lat)
    print(f"  => latency-aware vs round-robin: p99 {rr['p99_ms'] / lat['p99_ms']:.1f}x lower, "
          f"p50 {rr['p50_ms'] / lat['p50_ms']:.2f}x")


async def hedging(args: argparse.Namespace) -> None:
    n = args.requests // args.rounds
    print(f"2. hedging (streams): deployments tail (first token 10 ms, 600 ms on 10% of streams) and fast (10 ms), "
          f"round_robin, {args.rounds} rounds x {n} streams per setting, concurrency {args.concurrency}")
    with contextlib.ExitStack() as st:
        urls = {"tail": st.enter_context(upstream(latency_ms=10, cpu=None, extra=(
                    "--slow-rate", "0.1", "--slow-ms", "600", "--seed", "2"))),
                "fast": st.enter_context(upstream(latency_ms=10, cpu=None))}
        configs = {"no hedging": Routing(chain=["bench"]),
                   "hedge after 100ms budget 10%": Routing(chain=["bench"], hedge_after=0.1, hedge_budget=0.1),
                   "hedge after 100ms budget 2%": Routing(chain=["bench"], hedge_after=0.1, hedge_budget=0.02)}
        tallies = {c: Tally() for c in configs}
        ds = {c: ChainDispatcher({"bench": fleet_spec(urls, "round_robin")}, MemoryStateStore(),
                                 settings=DispatchSettings()) for c in configs}
        try:
            for d in ds.values():
                await run_stream(d, Routing(chain=["bench"]), 40, args.concurrency, Tally())
            for _ in range(args.rounds):
                for c, d in ds.items():
                    await run_stream(d, configs[c], n, args.concurrency, tallies[c])
            counts = {c: d.hedges.counts() for c, d in ds.items()}
        finally:
            for d in ds.values():
                await d.aclose()
    base = summary(tallies["no hedging"].lat)
    for c, t in tallies.items():
        hedges = sum(v["hedges"] for v in counts[c].values())
        reqs = sum(v["requests"] for v in counts[c].values())
        extra = f"  extra load {hedges / reqs:.1%} of requests (budget {configs[c].hedge_budget:.0%})" if reqs else ""
        print(row(f"{c}", t, None if c == "no hedging" else base) + extra)
    h = summary(tallies["hedge after 100ms budget 10%"].lat)
    print(f"  => hedging (budget 10%) vs none: TTFT p99 {base['p99_ms'] / h['p99_ms']:.1f}x lower "
          f"({base['p99_ms']:.0f} -> {h['p99_ms']:.0f} ms)")


def pick_cost(args: argparse.Namespace) -> None:
    print(f"3. balancer cost per request (order + started + finished, 3 deployments, {args.picks} picks each)")
    spec = ModelSpec(name="m", provider=Provider.vllm, deployments=tuple(
        Deployment(name=f"d{i}", base_url=f"http://127.0.0.1:{9000 + i}/v1", weight=1 + i) for i in range(3)))
    tg = targets_of(spec)
    for strategy in ("weighted", "round_robin", "least_outstanding", "latency"):
        b = Balancer()
        for i, t in enumerate(tg):
            b.finished(t.state_id, 10.0 * (i + 1))
        n = args.picks
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            first = b.order(strategy, tg)[0]
            b.started(first.state_id)
            b.finished(first.state_id, 12.0 + (i & 7))
        wall = (time.perf_counter() - t0) / n * 1e6
        cpu = (time.process_time() - c0) / n * 1e6
        print(f"  {strategy:<18} {cpu:6.2f} us CPU per request ({wall:6.2f} us wall)  "
              f"({'met' if cpu < 20 else 'NOT met'}: target < 20 us)")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--picks", type=int, default=200_000)
    args = p.parse_args()
    logging.getLogger("policyengine.dispatch").setLevel(logging.ERROR)  # breaker open/close notices
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"balance_bench: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; upstreams SIMULATED (fastserver), one process each")
    await balancing(args)
    await hedging(args)
    pick_cost(args)


if __name__ == "__main__":
    asyncio.run(main())
