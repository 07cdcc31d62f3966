"""In-process figures behind the service's smaller design choices, each measured side by side.

    .venv/bin/python benchmarks/inprocess_bench.py [--only gc|lexicon|outcome_id|ids|writer|tools|ablation] [--requests 3200]

* gc: CPU per gateway request (plain, stream, evaluate), the app driven through its ASGI call in
  this process (no HTTP server) against the fake upstream of api_bench.py on CPU 1, with
  CPython's default GC thresholds vs what the service sets at start (`gc.freeze()`, young
  generation at `gc_gen0_threshold`); alternating rounds, this process pinned to CPU 0.
* lexicon: `LexiconMatcher.find_all` per call on texts with no hit and with hits, against the
  algorithm it replaced (kept verbatim as the reference in tests/signals/test_mentions_fastpath.py).
* outcome_id: `gateway.outcome_id` vs `str(uuid.uuid5(uuid.UUID(id), "outcome"))`.
* ids: `gateway.new_decision_id` (blake2b keyed per process over a counter, UUIDv4-shaped) vs the
  ids it replaced (64 random bits per process + a counter in a `uuid.UUID`, kept here verbatim),
  and `str(uuid.uuid4())` (a syscall per id) for scale.
* writer: CPU per decision row of the log writer's transaction by batch size, with and without
  the `(tenant, action)` / `(tenant, effect)` indexes.
* tools: what judging the tool calls of an answer adds (policyengine.gateway.tools): CPU per chat
  request through the app's ASGI call, a plain answer vs an answer with 1 and 4 tool calls
  (each an Action decided by the policy and a decision row committed before the answer), the
  same simulated upstream on CPU 1 for both, alternating rounds; the added CPU per tool call.
* ablation: where a plain chat's CPU goes, by subtraction: CPU per request through the app's
  ASGI call at c=32 (SQLite FULL, the fake upstream on CPU 1) as shipped, with the decision rows
  not written (`Call.record` a confirmed commit, `Call.outcome` nothing), with the model chain not
  walked (`ChainDispatcher.complete` a canned answer, no upstream call), and with both; a fresh
  app per case, cases alternating. A measurement only: no case but the first is a valid gateway.
* tracing: CPU per request (plain chat, evaluate) with tracing off and on (opentelemetry-sdk,
  a BatchSpanProcessor into an in-memory exporter), the app through its ASGI call, alternating
  rounds: what the spans cost, and that off costs nothing measurable.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import api_bench as ab  # noqa: E402  (the fake upstream and the bench policy)

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Summarise my last ticket."}]}
EVALUATE = {"action": "classify_ticket", "actor": "bench", "fields": {"ticket": 42}}


# ----------------------------------------------------------------------------- gc

TOOLS = [{"type": "function", "function": {"name": "classify_ticket", "parameters": {"type": "object"}}}]


async def _gateway_cpu(app, kind: str, n: int, rounds: int, tune: bool) -> list[float]:
    body = (EVALUATE if kind == "evaluate" else {**CHAT, "tools": TOOLS} if kind == "tools"
            else {**CHAT, **({"stream": True} if kind == "stream" else {})})
    raw = json.dumps(body).encode()
    path = "/v1/evaluate" if kind == "evaluate" else "/v1/chat/completions"
    one = ab.asgi_one(app, raw, path)

    out = []
    before = gc.get_threshold()
    for _ in range(200):
        await one()
    if not tune:  # the app tuned the GC at start: put CPython's defaults back for this case
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(n // 32):
            await asyncio.gather(*(one() for _ in range(32)))
        out.append((time.process_time() - t) * 1000 / n)
    gc.set_threshold(*before)
    return out


def _bench_setup(prefix: str) -> tuple[Path, subprocess.Popen]:
    """This process pinned to CPU 0; a work directory holding api_bench.py's policy (`work / "p"`);
    api_bench.py's fake upstream started on CPU 1 and named in the environment with the bench
    token. The caller terminates the upstream."""
    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "p").mkdir()
    (work / "p" / "bench.policy").write_text(ab.POLICY)
    port = ab.free_port()
    up = subprocess.Popen(["taskset", "-c", "1", sys.executable, ab.__file__, "--upstream", "--port", str(port)],
                          start_new_session=True)
    ab.wait_port(port, up)
    os.environ.update(PE_BENCH_UPSTREAM=f"http://127.0.0.1:{port}/v1", PE_BENCH_TOKEN=ab.TOKEN)
    return work, up


def bench_gc(n: int, rounds: int) -> None:
    import uvloop

    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings

    work, up = _bench_setup("pe-inproc-")
    try:
        for kind in ("plain", "stream", "evaluate"):
            res: dict[str, list[float]] = {"default": [], "tuned": []}
            for tune in (False, True, False, True):  # alternating: each case twice, fresh app each time
                db = work / f"{kind}-{tune}-{len(res['tuned'])}.db"
                settings = Settings(database_url=f"sqlite:///{db}", policy_path=[str(work / "p")],
                                    sqlite_synchronous="NORMAL", key_cache_ttl_s=30,
                                    seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench",
                                                       roles=["app"])])
                app = create_app(settings)

                async def run(app=app, tune=tune, kind=kind) -> list[float]:
                    async with app.router.lifespan_context(app):
                        return await _gateway_cpu(app, kind, n, rounds, tune)

                res["tuned" if tune else "default"] += uvloop.run(run())
            d, t = statistics.median(res["default"]), statistics.median(res["tuned"])
            print(f"[gc/{kind}] CPU per request, median of {len(res['default'])} rounds x {n}: default GC "
                  f"{d:.3f} ms, tuned {t:.3f} ms ({(1 - t / d) * 100:.0f}% less CPU)", flush=True)
    finally:
        up.terminate()
        up.wait(10)


# ----------------------------------------------------------------------------- tools

_SIM = """
import asyncio, sys
from policyengine.simulate.server import SimServer
async def main():
    sim = SimServer("qwen-72b", port=int(sys.argv[1]))
    sim.tool_plan = [("classify_ticket", {"ticket": 42, "queue": "billing"})] * int(sys.argv[2])
    await sim.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def bench_tools_decide() -> float:
    """Median µs to decide one tool call (parse, build its Action, evaluate, reason): no I/O."""
    from types import SimpleNamespace

    from policyengine.dsl import compile_sources
    from policyengine.gateway.call import Call
    from policyengine.gateway.tools import decide_tool_call
    from policyengine.settings import Settings
    from policyengine.types import Action, Principal

    os.environ.setdefault("PE_BENCH_UPSTREAM", "http://127.0.0.1:9/v1")
    policy = compile_sources({"bench.policy": ab.POLICY})
    rt = SimpleNamespace(settings=Settings(), signals=None)
    who = Principal(tenant="bench", key_id="k", subject="bench", roles=frozenset({"app"}), groups=frozenset())
    chat = Action(action="chat", tenant="bench", text="Summarise my last ticket.", session_id="s-1")
    call = Call(rt, who, chat, policy, None, policy.evaluate(chat), kind="chat", t0=time.perf_counter())  # type: ignore[arg-type]
    tc = {"id": "call_1", "type": "function",
          "function": {"name": "classify_ticket", "arguments": '{"ticket": 42, "queue": "billing"}'}}
    us = _per_call_us(lambda: decide_tool_call(call, 0, tc), 2000)
    print(f"[tools/decide] deciding one tool call (parse, Action, evaluate, reason; no I/O): {us:.1f} us "
          f"(target under 50 us: {'met' if us < 50 else 'MISSED'})", flush=True)
    return us


def bench_tools(n: int, rounds: int) -> None:
    import uvloop

    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings

    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="pe-tools-"))
    (work / "p").mkdir()
    (work / "p" / "bench.policy").write_text(ab.POLICY)
    os.environ["PE_BENCH_TOKEN"] = ab.TOKEN
    per_calls: dict[int, float] = {}
    for k in (1, 4):
        port = ab.free_port()
        up = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", _SIM, str(port), str(k)],
                              start_new_session=True)
        ab.wait_port(port, up)
        os.environ["PE_BENCH_UPSTREAM"] = f"http://127.0.0.1:{port}/v1"
        try:
            res: dict[str, list[float]] = {"plain": [], "tools": []}
            for kind in ("plain", "tools", "plain", "tools"):
                db = work / f"{k}-{kind}-{len(res[kind])}.db"
                settings = Settings(database_url=f"sqlite:///{db}", policy_path=[str(work / "p")],
                                    sqlite_synchronous="NORMAL", key_cache_ttl_s=30,
                                    seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"])])
                app = create_app(settings)

                async def run(app=app, kind=kind) -> list[float]:
                    async with app.router.lifespan_context(app):
                        return await _gateway_cpu(app, kind, n, rounds, True)

                res[kind] += uvloop.run(run())
            plain, tools = statistics.median(res["plain"]), statistics.median(res["tools"])
            per_calls[k] = (tools - plain) * 1000 / k
            print(f"[tools/{k} call{'s' if k > 1 else ''}] CPU per chat request, median of {len(res['plain'])} "
                  f"rounds x {n}: plain answer {plain:.3f} ms, answer with {k} tool call(s) {tools:.3f} ms; "
                  f"added per tool call {per_calls[k]:.1f} us (decided + its row committed)", flush=True)
        finally:
            up.terminate()
            up.wait(10)
    print(f"[tools] end to end, each call decided and its decision row committed before the answer: "
          f"{max(per_calls.values()):.0f} us per tool call at most (the row is the larger part: see --only writer)",
          flush=True)


# ----------------------------------------------------------------------------- tracing

def bench_tracing(n: int, rounds: int) -> None:
    """CPU per request (plain chat, evaluate) with tracing off vs on (opentelemetry-sdk, a
    BatchSpanProcessor into an exporter that counts the spans and drops them: what making and
    batching the spans costs, without OTLP's encoding and network)."""
    import uvloop
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Counting(SpanExporter):
        def __init__(self) -> None:
            self.n = 0

        def export(self, spans) -> SpanExportResult:  # type: ignore[no-untyped-def]
            self.n += len(spans)
            return SpanExportResult.SUCCESS

        def get_finished_spans(self) -> range:
            return range(self.n)

    from policyengine import tracing
    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings

    work, up = _bench_setup("pe-trace-")
    try:
        for kind in ("plain", "evaluate"):
            res: dict[str, list[float]] = {"off": [], "on": []}
            spans = 0
            for case in ("off", "on", "off", "on"):  # alternating: each case twice, fresh app each time
                exporter = Counting()
                provider = None
                if case == "on":
                    provider = TracerProvider()
                    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
                tracing.use(provider)
                db = work / f"{kind}-{case}-{len(res[case])}.db"
                settings = Settings(database_url=f"sqlite:///{db}", policy_path=[str(work / "p")],
                                    sqlite_synchronous="NORMAL", key_cache_ttl_s=30,
                                    seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"])])
                app = create_app(settings)

                async def run(app=app, kind=kind) -> list[float]:
                    async with app.router.lifespan_context(app):
                        return await _gateway_cpu(app, kind, n, rounds, True)

                res[case] += uvloop.run(run())
                if provider is not None:
                    provider.force_flush()
                    spans = len(exporter.get_finished_spans())
                    provider.shutdown()
                tracing.use(None)
            off, on = statistics.median(res["off"]), statistics.median(res["on"])
            print(f"[tracing/{kind}] CPU per request, median of {len(res['off'])} rounds x {n}: tracing off "
                  f"{off:.3f} ms, on {on:.3f} ms (+{(on - off) * 1000:.0f} us, {on / off:.2f}x); "
                  f"{spans / (200 + n * rounds):.1f} spans per request", flush=True)
    finally:
        up.terminate()
        up.wait(10)


# ----------------------------------------------------------------------------- micro

def _per_call_us(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def bench_lexicon() -> None:
    from policyengine.signals.mentions import LexiconMatcher
    from tests.signals.test_mentions_fastpath import reference_find_all

    phrases = ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]
    m = LexiconMatcher()
    texts = {"short, no hit": "Summarise my last ticket.",
             "2,000 chars, no hit": ("Please summarise the ticket history and the refund status. " * 35)[:2000],
             "2,000 chars, hits and typos": ("My solicter says we will take legal action and see you in court. "
                                             "The lawsiut is ready. " * 25)[:2000]}
    for name, text in texts.items():
        assert m.find_all(text, "lit", phrases) == reference_find_all(m, text, "lit", phrases)
        new = _per_call_us(lambda t=text: m.find_all(t, "lit", phrases), 200)
        old = _per_call_us(lambda t=text: reference_find_all(m, t, "lit", phrases), 200)
        print(f"[lexicon/{name}] find_all {new:.1f} us vs the replaced algorithm {old:.1f} us ({old / new:.1f}x)")


def bench_outcome_id() -> None:
    from policyengine.gateway import outcome_id

    d = str(uuid.uuid4())
    assert outcome_id(d) == str(uuid.uuid5(uuid.UUID(d), "outcome"))
    new = _per_call_us(lambda: outcome_id(d), 20_000)
    old = _per_call_us(lambda: str(uuid.uuid5(uuid.UUID(d), "outcome")), 20_000)
    print(f"[outcome_id] {new:.2f} us vs uuid5 {old:.2f} us ({old / new:.1f}x)")


class _CounterIds:
    """The decision ids before #13, verbatim: 64 random bits per process + a counter (sequential,
    so a tenant could count everyone's traffic)."""

    def __init__(self) -> None:
        self._pid, self._prefix, self._n = -1, "", 0

    def next(self) -> str:
        pid = os.getpid()
        if pid != self._pid:
            import secrets

            self._pid, self._prefix, self._n = pid, secrets.token_hex(8), 0
        self._n += 1
        return str(uuid.UUID(self._prefix + f"{self._n:016x}"))


def bench_ids() -> None:
    from policyengine.gateway import new_decision_id

    old_ids = _CounterIds()
    new = _per_call_us(new_decision_id, 100_000)
    old = _per_call_us(old_ids.next, 100_000)
    v4 = _per_call_us(lambda: str(uuid.uuid4()), 100_000)
    print(f"[ids] new_decision_id {new:.2f} us (keyed blake2b) vs {old:.2f} us before (counter in a uuid.UUID), "
          f"uuid4 {v4:.2f} us")


def bench_writer() -> None:
    from policyengine.store import DecisionLogger, LogEntry, upgrade

    decision = {"action": "chat", "effect": "allow", "policy_hash": "h" * 64, "policy_name": "bench",
                "routing": {"chain": ["qwen-72b", "gemma-27b"]},
                "rules": [{"rule_id": "bench.policy:8", "kind": "route", "source": "route default -> qwen-72b",
                           "because": ["no earlier route matched: default route"]}]}
    for drop in ((), ("ix_decisions_tenant_action", "ix_decisions_tenant_effect")):
        path = Path(tempfile.mkdtemp(prefix="pe-writer-")) / "w.db"
        upgrade(f"sqlite:///{path}")
        with sqlite3.connect(path) as con:
            for ix in drop:
                con.execute(f"DROP INDEX {ix}")
        logger = DecisionLogger(f"sqlite:///{path}", sqlite_synchronous="NORMAL")
        rec = logger.build_record(LogEntry(kind="chat", tenant="bench", decision=decision, model="qwen-72b",
                                           action={"action": "chat", "text": "Summarise my last ticket."}))
        figures = []
        for batch in (1, 8, 32):
            rows = [dict(rec, id=f"{batch}-{i}") for i in range(3200)]
            t = time.process_time()
            for i in range(0, len(rows), batch):
                logger._append(rows[i:i + batch])
            figures.append(f"batch {batch}: {(time.process_time() - t) * 1e6 / len(rows):.1f}")
        label = "without the two tenant indexes" if drop else "as shipped"
        print(f"[writer/{label}] us CPU per row (SQLite NORMAL): " + ", ".join(figures))


# ----------------------------------------------------------------------------- ablation

ABLATIONS = ("as shipped", "no outcome row", "no decision rows", "no chain walk", "neither")


def _ablate(case: str) -> None:
    """Patch this process for `case` (see the module docstring); the patches stay for its life."""
    if case == "no outcome row":
        from policyengine.gateway import call as call_mod

        call_mod.Call.outcome = lambda self, **kw: None  # type: ignore[method-assign]
    if case in ("no decision rows", "neither"):
        from policyengine.gateway import call as call_mod

        call_mod.Call.record = lambda self, **kw: call_mod.PendingCommit.confirmed(self)  # type: ignore[method-assign]
        call_mod.Call.outcome = lambda self, **kw: None  # type: ignore[method-assign]
    if case in ("no chain walk", "neither"):
        from policyengine.dispatch import dispatcher as dispatcher_mod
        from policyengine.dispatch.results import DispatchResult

        usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        answer = {"id": "x", "object": "chat.completion", "created": 0, "model": "bench",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Simulated answer."},
                               "finish_reason": "stop"}], "usage": usage}

        async def complete(self, body, routing, **kw):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0)
            return DispatchResult.model_construct(response=dict(answer), model=routing.chain[0], key_id=None,
                                                  attempts=[], usage=usage, latency_ms=0.1, finish_reason="stop",
                                                  continued_from=[], error=None, complete=True)

        dispatcher_mod.ChainDispatcher.complete = complete  # type: ignore[method-assign]


def bench_ablation(n: int, rounds: int, only: list[str] | None = None) -> None:
    """Each case in a child process of its own (the patches cannot be undone), twice, alternating."""
    cases = [c for c in ABLATIONS if c in (only or ABLATIONS)]
    res: dict[str, list[float]] = {c: [] for c in cases}
    for _ in range(2):
        for case in cases:
            out = subprocess.run([sys.executable, __file__, "--ablation-case", case, "--requests", str(n),
                                  "--rounds", str(rounds)], capture_output=True, text=True, check=True).stdout
            res[case] += json.loads(out.strip().splitlines()[-1])
    base = statistics.median(res["as shipped"])
    for case in cases:
        m = statistics.median(res[case])
        print(f"[ablation/{case}] CPU per plain chat, median of {len(res[case])} rounds x {n}: {m * 1000:.1f} us"
              + ("" if case == "as shipped" else f" ({(base - m) * 1000:.1f} us less)"), flush=True)


def _ablation_child(case: str, n: int, rounds: int) -> None:
    import uvloop

    from policyengine.api import create_app
    from policyengine.settings import SeedKey, Settings

    _ablate(case)
    work, up = _bench_setup("pe-ablation-")
    try:
        settings = Settings(database_url=f"sqlite:///{work / 'pe.db'}", policy_path=[str(work / "p")],
                            key_cache_ttl_s=30,
                            seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"])])
        app = create_app(settings)

        async def run() -> list[float]:
            async with app.router.lifespan_context(app):
                return await _gateway_cpu(app, "plain", n, rounds, True)

        print(json.dumps(uvloop.run(run())))
    finally:
        up.terminate()
        up.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["gc", "lexicon", "outcome_id", "ids", "writer", "tools", "tracing", "ablation"])
    ap.add_argument("--ablation-case", choices=ABLATIONS, help=argparse.SUPPRESS)
    ap.add_argument("--case", action="append", choices=ABLATIONS,
                    help="ablation: run only these cases (repeatable; 'as shipped' is always the baseline)")
    ap.add_argument("--requests", type=int, default=3200, help="requests per gc round")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.ablation_case:
        _ablation_child(a.ablation_case, a.requests, a.rounds)
        return
    if a.only in (None, "lexicon"):
        bench_lexicon()
    if a.only in (None, "outcome_id"):
        bench_outcome_id()
    if a.only in (None, "ids"):
        bench_ids()
    if a.only in (None, "writer"):
        bench_writer()
    if a.only in (None, "gc"):
        bench_gc(a.requests, a.rounds)
    if a.only in (None, "tools"):
        bench_tools_decide()
        bench_tools(a.requests, a.rounds)
    if a.only in (None, "tracing"):
        bench_tracing(a.requests, a.rounds)
    if a.only in (None, "ablation"):
        bench_ablation(a.requests, a.rounds, ["as shipped", *a.case] if a.case else None)


if __name__ == "__main__":
    main()
