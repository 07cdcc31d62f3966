"""The limit check beside the plain chat path, measured side by side in one run.

    .venv/bin/python benchmarks/limits_bench.py [--requests 3200] [--rounds 5] [--no-redis] [--no-app]
                                                [--baseline DIR]

* check/memory: what a request adds when three limits count it (a request limit per user, a token
  limit per key on the model, a budget per tenant): building its counters, the all-or-nothing
  reservation and the settlement, in this process (`MemoryLimitStore`). Target: under 30 us.
* check/redis: the same against the real Redis (127.0.0.1:6379), wall time per request and Redis
  round trips per request, counted two ways: the store's own count of script calls
  (`RedisLimitStore.round_trips`, this process only) and Redis' `INFO commandstats` (EVALSHA calls,
  server-wide: another client on the same Redis would add to it). Two stores in the same run:
  settlements held and sent with the next reservation (the default: 1 round trip per request), and
  `hold_settlements=False` (each settlement its own call: 2 per request, the earlier design).
* limits library, for the code comment in policyengine/state/limits.py: `limits`'
  `FixedWindowRateLimiter.hit` (memory and Redis) for the same three limits: three hits per
  request and nothing to settle with the real amount (it cannot reserve an estimate and correct
  it later). Skipped unless `limits` is importable (PE_BENCH_LIMITS_PATH may name a directory
  holding it: it is not a dependency).
* chat/plain vs chat/limited: CPU per chat request through the app's ASGI call (no HTTP server),
  the fake upstream of api_bench.py on CPU 1, the bench policy without limits vs the same policy
  with the three limits (in-memory counters): both apps in one process taking turns batch by
  batch (32 concurrent requests), so the machine's load hits both alike; the median of the
  rounds' paired differences is what the limits cost on the whole path. CPU of the event-loop
  thread (`time.thread_time`): the decision log's SQLite thread commits batches asynchronously, so
  its work would land in whichever app's batch happens to be running.
* --baseline DIR: DIR holds another checkout of the project (e.g. `git archive <commit>` unpacked,
  with its adapters/notifier symlinks): its own limits_bench.py runs first (`--no-app`), then the
  chat path is measured for DIR and for this tree in alternating subprocesses, and printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
if "--tree" in sys.argv:  # one side of --baseline: that tree's policyengine
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()))

import api_bench as ab  # noqa: E402  (the fake upstream and the bench policy)

LIMITS = '''
limit requests 1000000 per minute per user
limit tokens 1000000000 per hour per key on model qwen-72b
budget 1000000 GBP per day per tenant
'''
PRICED = ab.POLICY.replace('model qwen-72b  { provider vllm base_url env("PE_BENCH_UPSTREAM") cost 0',
                           'model qwen-72b  { provider vllm base_url env("PE_BENCH_UPSTREAM") cost 1 GBP per 1m tokens')
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Summarise my last ticket."}], "max_tokens": 64}


def _policy():
    from policyengine.dsl import compile_sources

    os.environ.setdefault("PE_BENCH_UPSTREAM", "http://127.0.0.1:9/v1")
    return compile_sources({"bench.policy": PRICED + LIMITS})


async def _check_loop(store, n: int, clock=time.process_time) -> float:
    """Mean us per request of counters + reserve + settle over n requests (CPU time by default: the
    machine may be shared; wall time for Redis, where the round trip is the cost). Each request's
    answer is a little shorter than its estimate (a real answer rarely uses all of max_tokens)."""
    from policyengine.gateway.limits import Limiter
    from policyengine.types import Action, Principal

    policy = _policy()
    limiter = Limiter(store)
    action = Action(action="chat", tenant=f"bench-{uuid.uuid4().hex[:6]}", actor="bob")
    who = Principal(tenant=action.tenant or "", key_id="k1", subject="bench", roles=frozenset({"app"}),
                    groups=frozenset())
    hits = policy.evaluate(action).limits
    assert len(hits) == 3, hits
    tokens = limiter.estimate_tokens(BODY)
    t = clock()
    for _ in range(n):
        entries = limiter.counters(policy, hits, action, who, tokens)
        res = await store.reserve([c for _, c in entries])
        assert res.ok
        await store.settle([(c, c.amount, c.amount - (c.amount > 1)) for _, c in entries])
    await store.flush()
    return (clock() - t) * 1e6 / n


async def _commands(redis, name: str) -> int:
    info = await redis.info("commandstats")
    return int((info.get(f"cmdstat_{name}") or {}).get("calls", 0))


async def bench_check(n: int, rounds: int, redis_url: str | None) -> dict[str, float]:
    from policyengine.state.limits import MemoryLimitStore

    out: dict[str, float] = {}
    mem = [await _check_loop(MemoryLimitStore(), n) for _ in range(rounds)]
    out["memory"] = statistics.median(mem)
    print(f"[check/memory] 3 limits, counters + reserve + settle: {out['memory']:.1f} us CPU per request "
          f"(median of {rounds} x {n}; target under 30 us: {'met' if out['memory'] < 30 else 'MISSED'})", flush=True)
    if redis_url:
        from policyengine.state.limits_redis import RedisLimitStore

        prefix = f"pe-bench-{uuid.uuid4().hex[:6]}:"
        stores = {"held": RedisLimitStore(redis_url, prefix=prefix),
                  "at once": RedisLimitStore(redis_url, prefix=prefix, hold_settlements=False)}
        r = stores["held"]._redis
        try:
            m = max(200, n // 8)
            wall: dict[str, list[float]] = {k: [] for k in stores}
            trips: dict[str, list[float]] = {k: [] for k in stores}
            cmds: dict[str, list[float]] = {k: [] for k in stores}
            for store in stores.values():
                await _check_loop(store, 10)  # scripts loaded
            for _ in range(rounds):  # the two designs alternate
                for name, store in stores.items():
                    before, rt0 = await _commands(r, "evalsha"), store.round_trips
                    wall[name].append(await _check_loop(store, m, time.perf_counter))
                    trips[name].append((store.round_trips - rt0) / m)
                    cmds[name].append((await _commands(r, "evalsha") - before) / m)
            for name in stores:
                med = statistics.median(wall[name])
                print(f"[check/redis, settlements {name}] 3 limits, reserve + settle against Redis: {med:.1f} us per "
                      f"request (median of {rounds} x {m}); {statistics.median(trips[name]):.3f} Redis round trips "
                      f"per request (script calls), Redis counted {statistics.median(cmds[name]):.3f} EVALSHA per "
                      "request", flush=True)
            out["redis"] = statistics.median(wall["held"])
            out["redis_trips"] = statistics.median(trips["held"])
            out["redis_at_once"] = statistics.median(wall["at once"])
            out["redis_trips_at_once"] = statistics.median(trips["at once"])
        finally:
            keys = [k async for k in r.scan_iter(match=prefix + "*")]
            if keys:
                await r.delete(*keys)
            for store in stores.values():
                await store.aclose()
    return out


async def bench_limits_library(n: int, rounds: int, redis_url: str | None) -> None:
    path = os.environ.get("PE_BENCH_LIMITS_PATH")
    if path:
        sys.path.insert(0, path)
    try:
        from limits import parse
        from limits.aio.storage import MemoryStorage, RedisStorage
        from limits.aio.strategies import FixedWindowRateLimiter
    except ImportError:
        print("[limits library] skipped: `limits` is not importable (set PE_BENCH_LIMITS_PATH)", flush=True)
        return
    items = [parse("1000000/minute"), parse("1000000000/hour"), parse("1000000000/day")]

    async def loop(lim, m: int, clock=time.process_time) -> float:
        t = clock()
        for i in range(m):
            for j, item in enumerate(items):
                assert await lim.hit(item, "bench", str(j), cost=1 if j == 0 else 90 + i % 3)
        return (clock() - t) * 1e6 / m

    mem = FixedWindowRateLimiter(MemoryStorage())
    us = statistics.median([await loop(mem, n) for _ in range(rounds)])
    print(f"[limits library/memory] FixedWindowRateLimiter.hit x 3 limits: {us:.1f} us CPU per request "
          "(no reservation to settle: the real cost cannot replace the estimate)", flush=True)
    if redis_url:
        storage = RedisStorage(redis_url.replace("redis://", "async+redis://"), implementation="redispy",
                               key_prefix=f"pe-bench-{uuid.uuid4().hex[:6]}")
        red = FixedWindowRateLimiter(storage)
        m = max(200, n // 8)
        us = statistics.median([await loop(red, m, time.perf_counter) for _ in range(rounds)])
        print(f"[limits library/redis] FixedWindowRateLimiter.hit x 3 limits: {us:.1f} us per request "
              "(one round trip per limit and hit: 3 per request, and a settlement would need more)", flush=True)


def bench_app(n: int, rounds: int, *, quiet: bool = False) -> dict[str, list[float]]:
    """CPU ms per chat request, plain vs with the three limits: both apps live in this process and
    take turns batch by batch (32 concurrent requests each), so a change in the machine's load hits
    both alike; each round is n requests of each, and its paired difference is what the limits cost."""
    import uvloop

    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings

    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="pe-limits-"))
    for kind, text in (("plain", PRICED), ("limited", PRICED + LIMITS)):
        (work / kind).mkdir()
        (work / kind / "bench.policy").write_text(text)
    port = ab.free_port()
    up = subprocess.Popen(["taskset", "-c", "1", sys.executable, ab.__file__, "--upstream", "--port", str(port)],
                          start_new_session=True)
    ab.wait_port(port, up)
    os.environ.update(PE_BENCH_UPSTREAM=f"http://127.0.0.1:{port}/v1", PE_BENCH_TOKEN=ab.TOKEN)
    raw = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "Summarise my last ticket."}]}).encode()
    res: dict[str, list[float]] = {"plain": [], "limited": [], "delta": []}
    try:
        apps = {}
        for kind in ("plain", "limited"):
            settings = Settings(database_url=f"sqlite:///{work / kind}.db", policy_path=[str(work / kind)],
                                sqlite_synchronous="NORMAL", key_cache_ttl_s=30,
                                seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"])])
            apps[kind] = create_app(settings)

        async def run() -> None:
            async with apps["plain"].router.lifespan_context(apps["plain"]), \
                    apps["limited"].router.lifespan_context(apps["limited"]):
                ones = {k: ab.asgi_one(a, raw) for k, a in apps.items()}
                for k in ones:  # warm up
                    for _ in range(200):
                        await ones[k]()
                for _ in range(rounds * 2):
                    cpu = {"plain": 0.0, "limited": 0.0}
                    for b in range(n // 32):
                        for k in (("plain", "limited") if b % 2 else ("limited", "plain")):
                            t = time.thread_time()
                            await asyncio.gather(*(ones[k]() for _ in range(32)))
                            cpu[k] += time.thread_time() - t
                    per = {k: v * 1000 / (n // 32 * 32) for k, v in cpu.items()}
                    res["plain"].append(per["plain"])
                    res["limited"].append(per["limited"])
                    res["delta"].append(per["limited"] - per["plain"])

        uvloop.run(run())
    finally:
        up.terminate()
        up.wait(10)
    if not quiet:
        plain, limited = statistics.median(res["plain"]), statistics.median(res["limited"])
        print(f"[chat] CPU per chat request through the app, {len(res['plain'])} rounds x {n} of each, batches of 32 "
              f"taking turns: plain {plain * 1000:.0f} us, with 3 limits (in memory) {limited * 1000:.0f} us; paired "
              f"difference median +{statistics.median(res['delta']) * 1000:.0f} us "
              f"(rounds: {', '.join(f'{d * 1000:+.0f}' for d in res['delta'])})", flush=True)
    return res


def bench_baseline(base: Path, n: int, rounds: int, redis: bool) -> None:
    """The baseline tree's own bench (check and Redis), then the chat path for both trees in
    alternating subprocesses (each its own process: two versions of the package cannot share one)."""
    print(f"[before] {base}: its own benchmarks/limits_bench.py --no-app", flush=True)
    cmd = [sys.executable, str(base / "benchmarks" / "limits_bench.py"), "--no-app", "--requests", str(n),
           "--rounds", str(rounds), *([] if redis else ["--no-redis"])]
    env = {**os.environ, "PYTHONPATH": str(base)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("["):
            print(f"[before] {line}", flush=True)
    got: dict[str, dict[str, list[float]]] = {"before": {"plain": [], "limited": [], "delta": []},
                                              "after": {"plain": [], "limited": [], "delta": []}}
    for _ in range(2):
        for name, tree in (("before", base), ("after", ROOT)):
            cmd = [sys.executable, __file__, "--app-json", "--tree", str(tree), "--requests", str(n),
                   "--rounds", str(rounds)]
            proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
                                  timeout=1800)
            line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            if not line:
                raise SystemExit(f"{name} run failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
            for k, v in json.loads(line[-1]).items():
                got[name][k] += v
    delta = {}
    for name in ("before", "after"):
        g = got[name]
        delta[name] = statistics.median(g["delta"]) * 1000
        print(f"[chat, {name}] CPU per chat request, {len(g['plain'])} rounds x {n} of each (batches taking turns): "
              f"plain {statistics.median(g['plain']) * 1000:.0f} us, with 3 limits "
              f"{statistics.median(g['limited']) * 1000:.0f} us; paired difference median +{delta[name]:.0f} us, "
              f"rounds {', '.join(f'{d * 1000:+.0f}' for d in sorted(g['delta']))}", flush=True)
    print(f"[chat, before/after] the 3 limits cost +{delta['before']:.0f} us before, +{delta['after']:.0f} us after "
          f"(target under 30 us: {'met' if delta['after'] < 30 else 'MISSED'})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--no-app", action="store_true")
    ap.add_argument("--baseline", type=Path, help="another checkout to compare the chat path with")
    ap.add_argument("--app-json", action="store_true", help=argparse.SUPPRESS)  # one side of --baseline
    ap.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.app_json:
        print(json.dumps(bench_app(args.requests, args.rounds, quiet=True)), flush=True)
        return
    redis_url = None if args.no_redis else os.environ.get("PE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    print(f"load average {ab.loadavg()}", flush=True)
    check = asyncio.run(bench_check(args.requests, args.rounds, redis_url))
    asyncio.run(bench_limits_library(args.requests, args.rounds, redis_url))
    if args.baseline:
        bench_baseline(args.baseline.resolve(), args.requests, args.rounds, redis_url is not None)
    elif not args.no_app:
        res = bench_app(args.requests, args.rounds)
        plain, delta = statistics.median(res["plain"]), statistics.median(res["delta"])
        print(f"[summary] limit check {check['memory']:.1f} us in memory = {check['memory'] / (plain * 1000):.3f} of "
              f"the plain chat path's {plain * 1000:.0f} us; measured on the path +{delta * 1000:.0f} us"
              + (f"; Redis {check['redis']:.0f} us wall, {check['redis_trips']:.2f} round trips per request "
                 f"({check['redis_trips_at_once']:.2f} with each settlement sent at once)"
                 if "redis" in check else ""), flush=True)
    print(f"load average {ab.loadavg()}", flush=True)


if __name__ == "__main__":
    main()
