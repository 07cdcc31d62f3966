"""Lint and compile time against the number of rules, and evaluate latency during a large reload.

    .venv/bin/python benchmarks/lint_bench.py                      # 1k, 10k, 50k rules + the reload run
    .venv/bin/python benchmarks/lint_bench.py --sizes 1000,10000 --reload-rules 8000
    .venv/bin/python benchmarks/lint_bench.py --profile 10000      # cProfile of check + compile, top 25

Part 1 generates policy sets of N rules that test the same fields (`amount`, `tenant.tier`,
`tenant.id`, `region`, `user.role`, `use_case`, signals) and mix every kind the checker
looks at: approvals (with currencies that disagree now and then: W223), denies (an
unconditional one now and then, which makes a later approval dead: W238), authorizations
(repeats: W231; 40 shared actions, `tool_N` named twice and thousands of `once_N` named once,
which W232 compares with the established ones), escalations with and without an action list,
verifications, model choices, routes keyed on `tenant.id` / `use_case` (a share of them
shadowed by an earlier one: W214) and a few unkeyed routes. The sets have warnings only, so
they compile. It times parse, check (lint) and compile separately
(best of --repeat runs), prints µs per rule for each stage and the ratio of the time per
rule at the largest size to that at the smallest (target: <= 1.5, and 50k rules in < 30 s).

Part 2 serves a policy from a `PolicyHolder` in an asyncio loop that makes a request every
millisecond (`CompiledPolicy.evaluate`, then a hand-off to a writer thread, as the decision
log's group commit does) and measures each request's latency from when it was due, first
with no reload (the baseline), then while `PolicyHolder.reload()` loads a --reload-rules rule
set, once the way it did before #15.14 (all of it in a worker thread: `thread`, though with
this change's linear checks and deferred full collections) and once the way it does now
(`process`: parse and lint in a child process, compile on the loop in slices); p50 / p99 /
max of each, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import pstats
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import policyengine.dsl as dsl  # noqa: E402
from policyengine.dsl import parse  # noqa: E402
from policyengine.dsl.checker import check_files  # noqa: E402
from policyengine.dsl.compiler import compile_files  # noqa: E402
from policyengine.evaluator import CompiledPolicy  # noqa: E402
from policyengine.types import Action  # noqa: E402

HEADER = """\
policy "bench" version 1
model qwen-72b { provider vllm base_url env("QWEN_URL") cost 0 }
model gemma-27b { provider ollama base_url env("GEMMA_URL") cost 0 }
model kimi-large { provider openai base_url env("KIMI_URL") cost 0.0006 per 1k tokens }
lexicon litigation ["lawsuit", "sue", "solicitor"]
route default -> qwen-72b fallback [gemma-27b]
"""
HOLD = '{ reviewers group "refunds" notify slack "#refunds" timeout 8h -> deny }'
ACTIONS = [f"act_{k}" for k in range(40)]
RULES_PER_FILE = 1000


def rule(i: int) -> str:
    """Rule i of a generated set (one line); the kinds cycle every 20 rules."""
    k = i % 20
    a = ACTIONS[i % len(ACTIONS)]
    b = ACTIONS[(i * 7 + 3) % len(ACTIONS)]
    if k in (0, 10):
        cur = "USD" if i % 997 == 0 else "GBP"
        return f'require approval for refund, {a} when amount > {i} {cur} and tenant.tier == "t{i}" {HOLD}'
    if k in (1, 11):
        return f'deny refund, {b} when region == "r{i}"'
    if k in (2, 12):
        return f'route when tenant.id == "t{i}" -> qwen-72b fallback [gemma-27b]'
    if k == 3:
        return f'authorize {a}, tool_{i // 40} when user.role == "u{i}"'  # each tool_ named twice
    if k == 4:
        return f'escalate for refund, {a} when sentiment < 0.3 and tenant.id == "t{i}" {HOLD}'
    if k == 5:
        return f'route when use_case in ["c{i}", "d{i}"] and tenant.tier == "t{i}" -> gemma-27b'
    if k == 6:
        # shadowed by the route 4 rules earlier (same tenant.id test, plus one more)
        return f'route when tenant.id == "t{i - 4}" and region == "r{i}" -> kimi-large'
    if k == 7:
        return f'escalate when confidence < 0.5 and tenant.id == "t{i}" {{ on chat review }}'
    if k == 8:
        return f'authorize {a}, once_{i} when amount < {i} GBP and region in ["r{i}", "s{i}"]'  # W232 candidates
    if k == 9:
        if i % 1000 == 9:
            return f"deny gone_{i}"  # always denied: the approval 10 rules on never applies (W238)
        return f'allow model choice [qwen-72b, gemma-27b] when user.role == "power{i}"'
    if k == 13:
        return f'deny {a} when tenant.tier == "t{i}" and amount > {i} GBP'
    if k == 14:
        return (f'verify for {b} when use_case == "legal{i}" with qwen-72b, gemma-27b '
                f'{{ escalate when divergence > 0.25 otherwise tag "ok" }}')
    if k == 15:
        return f'escalate for {a} when text mentions litigation and region == "r{i}"'
    if k == 16:
        if i % 1000 == 16:
            return f"authorize {a}, {a}"  # W231 twice in the rule (and already authorized)
        return f'authorize {a} when tenant.id == "t{i}" or user.role == "admin{i}"'
    if k == 17:
        if i % 2000 == 17:
            return f'route when amount > {i} GBP -> gemma-27b'  # an unkeyed route
        return f'route when use_case == "c{i - 12}" and tenant.tier == "t{i - 12}" -> qwen-72b'  # W214
    if k == 18:
        if i % 5000 == 18:
            return f"authorize {a[:-1]}x{a[-1]}_typo"  # named once, close to nothing: no W232
        return f'require approval for {b} when duration > {i % 90 + 1}m and user.role == "u{i}" {HOLD}'
    if i % 1000 == 19:
        return f"require approval for gone_{i - 10} {HOLD}"
    return f'deny {b} when amount > {i * 10} GBP and tenant.id == "t{i}" and not (region == "r{i}")'


def generate(n: int) -> dict[str, str]:
    """{file: text}: the header file, then N rules in files of RULES_PER_FILE."""
    sources = {"00-header.policy": HEADER}
    for f in range(0, n, RULES_PER_FILE):
        lines = [rule(i) for i in range(f, min(n, f + RULES_PER_FILE))]
        sources[f"{f // RULES_PER_FILE + 1:03d}-rules.policy"] = "\n".join(lines) + "\n"
    return sources


def stages(sources: dict[str, str]) -> tuple[dict[str, float], int, CompiledPolicy]:
    """Seconds spent in parse, check and compile (compile = compile_files + CompiledPolicy.from_ir),
    the three under one `deferred_full_gc()` as `compile_sources` runs them (when it has one)."""
    defer = getattr(dsl, "deferred_full_gc", contextlib.nullcontext)
    with defer():
        t0 = time.perf_counter()
        files = [parse(text, path) for path, text in sources.items()]
        t1 = time.perf_counter()
        diags = check_files(files)
        t2 = time.perf_counter()
        policy = CompiledPolicy.from_ir(compile_files(files))
        t3 = time.perf_counter()
    if any(d.is_error for d in diags):
        raise SystemExit(f"generated set has errors: {[d for d in diags if d.is_error][:3]}")
    return {"parse": t1 - t0, "check": t2 - t1, "compile": t3 - t2}, len(diags), policy


def part1(sizes: list[int], repeat: int) -> None:
    print(f"{'rules':>7} {'stage':>8} {'total s':>9} {'µs/rule':>9}   diagnostics")
    per_rule: dict[int, dict[str, float]] = {}
    for n in sizes:
        src = generate(n)
        best: dict[str, float] = {}
        ndiag = 0
        for _ in range(repeat if n <= 10_000 else 1):
            gc.collect()
            t, ndiag, _policy = stages(src)
            best = {k: min(v, best.get(k, v)) for k, v in t.items()}
        best["lint+compile"] = best["check"] + best["compile"]
        best["all"] = best["parse"] + best["lint+compile"]
        per_rule[n] = {k: v / n * 1e6 for k, v in best.items()}
        for k, v in best.items():
            print(f"{n:>7} {k:>8} {v:>9.2f} {per_rule[n][k]:>9.1f}   {ndiag if k == 'check' else ''}", flush=True)
    lo, hi = min(sizes), max(sizes)
    if lo != hi:
        print(f"\ntime per rule at {hi} / at {lo} (target <= 1.5):")
        for k in per_rule[lo]:
            print(f"  {k:>12}: {per_rule[hi][k] / per_rule[lo][k]:.2f}x")


def profile(n: int) -> None:
    src = generate(n)
    files = [parse(text, path) for path, text in src.items()]
    pr = cProfile.Profile()
    pr.enable()
    check_files(files)
    CompiledPolicy.from_ir(compile_files(files))
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(25)


# --------------------------------------------------------------------------- part 2


def _commit() -> None:
    """What the decision log's writer thread does per request, in miniature."""


async def _requests(policy_of, stop: asyncio.Event, out: list[float], writer: ThreadPoolExecutor,
                    interval: float = 0.001) -> None:
    """One request every `interval` s: evaluate, then hand the row to a writer thread and wait for
    it (as `/v1/evaluate` does with the group commit). A sample = done - when it was due (ms)."""
    loop = asyncio.get_running_loop()
    actions = [Action(action="refund", fields={"amount": "150 GBP", "region": "r1"}),
               Action(action="act_3", fields={"amount": "5 GBP", "region": "r2"})]
    clock = time.perf_counter
    due = clock()
    i = 0
    while not stop.is_set():
        policy_of().evaluate(actions[i % 2])
        await loop.run_in_executor(writer, _commit)
        i += 1
        out.append((clock() - due) * 1000)
        due += interval
        delay = due - clock()
        if delay < 0:  # missed ticks: the next request is due now (do not count a backlog)
            due = clock()
            delay = 0
        await asyncio.sleep(delay)


def _pct(xs: list[float]) -> str:
    xs = sorted(xs)
    if not xs:
        return "no samples"
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return f"p50 {statistics.median(xs):6.2f} ms  p99 {p(0.99):7.2f} ms  max {xs[-1]:8.2f} ms  ({len(xs)} requests)"


async def _thread_load(paths):  # the reload before #15.14: all of it in a worker thread
    from policyengine.gateway import policies

    return await asyncio.to_thread(policies._load, paths)


async def _part2(n: int, modes: list[str]) -> tuple[list[float], dict[str, tuple[list[float], float]]]:
    from policyengine.gateway import policies
    from policyengine.gateway.policies import PolicyHolder

    writer = ThreadPoolExecutor(1)
    with tempfile.TemporaryDirectory() as d:
        small = Path(d) / "small"
        big = Path(d) / "big"
        for folder, src in ((small, generate(200)), (big, generate(n))):
            folder.mkdir()
            for name, text in src.items():
                (folder / name).write_text(text)
        base: list[float] = []
        stop = asyncio.Event()
        holder = PolicyHolder([str(small)])
        assert (await holder.reload()).ok
        t = asyncio.create_task(_requests(lambda: holder.current, stop, base, writer))
        await asyncio.sleep(3.0)
        stop.set()
        await t
        runs: dict[str, tuple[list[float], float]] = {}
        real = policies._load_async
        for mode in modes:
            policies._load_async = _thread_load if mode == "thread" else real  # type: ignore[assignment]
            holder = PolicyHolder([str(small)])
            assert (await holder.reload()).ok
            during: list[float] = []
            stop = asyncio.Event()
            t = asyncio.create_task(_requests(lambda: holder.current, stop, during, writer))  # noqa: B023
            holder.paths = [str(big)]
            t0 = time.perf_counter()
            res = await holder.reload()
            took = time.perf_counter() - t0
            stop.set()
            await t
            assert res.ok, res.error
            runs[mode] = (during, took)
        policies._load_async = real
    writer.shutdown()
    return base, runs


def part2(n: int, modes: list[str]) -> None:
    base, runs = asyncio.run(_part2(n, modes))
    print(f"\nevaluate latency (due -> done: evaluate + a hand-off to a writer thread), one request per ms, "
          f"during a {n}-rule reload:")
    print(f"  {'no reload':<28}: {_pct(base)}")
    for mode, (during, took) in runs.items():
        what = "thread (before)" if mode == "thread" else "process + sliced compile"
        print(f"  {what + f', {took:.1f} s':<28}: {_pct(during)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size up to 10k (best of); 1 above")
    ap.add_argument("--reload-rules", type=int, default=20_000, help="0: skip part 2")
    ap.add_argument("--reload-modes", default="thread,process",
                    help="thread: the whole load in a worker thread (before); process: the service's reload now")
    ap.add_argument("--profile", type=int, default=0, help="cProfile check+compile of N rules, then exit")
    args = ap.parse_args()
    if args.profile:
        profile(args.profile)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        part1(sizes, args.repeat)
    if args.reload_rules:
        part2(args.reload_rules, args.reload_modes.split(","))


if __name__ == "__main__":
    main()
