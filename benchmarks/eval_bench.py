"""Evaluation benchmark: policyengine's evaluator vs Cedar (cedarpy, Rust) in the same run.

    .venv/bin/python benchmarks/eval_bench.py [--quick]

Prints median and p99 per decision for
  * the support-desk policy set (policies/support-desk) over a mix of actions, and
  * generated policy sets of 10, 1,000 and 10,000 rules,
with the same decisions made by cedarpy on an equivalent Cedar policy set (parsed
once into a PolicySet, entities parsed once), then the 10k/10 ratios. Every
decision of both engines is compared; the run fails if they disagree.

Cedar has no routing, signals or approval effect, so the equivalence is:
authorize -> permit; deny -> forbid; require approval / escalate -> forbid
(told apart by which policy determined the Deny). Cedar gets the signals
(sentiment, confidence, litigation mention) precomputed in its context; our
evaluator gets the text and matches the lexicon itself. Routes (chat) are timed
for policyengine only. GC is disabled while timing (as `timeit` does).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cedarpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policyengine.dsl import compile_sources, load_policy_set  # noqa: E402
from policyengine.types import Action  # noqa: E402

ENTITIES = cedarpy.Entities.from_json_str("[]")


# --------------------------------------------------------------------------- timing


def measure(fn: Callable[[Any], Any], inputs: list[Any], rounds: int) -> tuple[float, float]:
    """Median and p99 (microseconds) of single calls, inputs taken round-robin."""
    for x in inputs * 20:  # warm-up
        fn(x)
    samples: list[int] = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for x in inputs:
                t0 = clock()
                fn(x)
                samples.append(clock() - t0)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples) / 1000, samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000


def cedar_effect(result: Any, kinds: dict[str, str]) -> str:
    if result.decision == cedarpy.Decision.Allow:
        return "allow"
    fired = {kinds.get(r, "?") for r in result.diagnostics.reasons}
    for k in ("deny", "escalate", "require_approval"):
        if k in fired:
            return k
    return "deny"  # default deny


def cedar_request(action: str, context: dict[str, Any]) -> dict[str, Any]:
    return {"principal": 'User::"agent"', "action": f'Action::"{action}"', "resource": 'Ticket::"t1"',
            "context": context}


def pence(amount: str) -> tuple[int, str]:
    n, cur = amount.split()
    return round(float(n) * 100), cur


# --------------------------------------------------------------------------- support desk

SUPPORT_DESK_CEDAR = """
permit(principal, action in [Action::"classify_ticket", Action::"draft_response", Action::"route_department",
                             Action::"refund"], resource);
forbid(principal, action == Action::"refund", resource)
  when { !(context has amount) || context.currency != "GBP" || context.amount > 10000 };
forbid(principal, action in [Action::"send_email", Action::"modify_database", Action::"escalate_legal",
                             Action::"respond_press"], resource);
forbid(principal, action == Action::"delete_account", resource);
forbid(principal, action, resource) when { context.sentiment.lessThan(decimal("0.3")) };
forbid(principal, action, resource) when { context.mentions_litigation };
forbid(principal, action, resource) when { context.confidence.lessThan(decimal("0.7")) };
"""
# policy ids are assigned in order: policy0, policy1, ...
SUPPORT_DESK_KINDS = {"policy0": "allow", "policy1": "require_approval", "policy2": "require_approval",
                      "policy3": "deny", "policy4": "escalate", "policy5": "escalate", "policy6": "escalate"}

SUPPORT_DESK_CASES: list[tuple[str, dict[str, Any]]] = [
    ("classify_ticket", {"text": "Where is my parcel? It was due Monday.", "sentiment": 0.8, "confidence": 0.9}),
    ("draft_response", {"text": "Thanks, that fixed it", "sentiment": 0.9, "confidence": 0.95}),
    ("draft_response", {"text": "This is the third time I write", "sentiment": 0.21, "confidence": 0.9}),
    ("refund", {"amount": "40 GBP", "text": "refund please", "sentiment": 0.6, "confidence": 0.9}),
    ("refund", {"amount": "150 GBP", "text": "refund please", "sentiment": 0.6, "confidence": 0.9}),
    ("refund", {"amount": "150 USD", "text": "refund please", "sentiment": 0.6, "confidence": 0.9}),
    ("route_department", {"text": "My solicitor will contact you", "sentiment": 0.5, "confidence": 0.9}),
    ("send_email", {"text": "Dear customer", "sentiment": 0.7, "confidence": 0.9}),
    ("classify_ticket", {"text": "unsure", "sentiment": 0.6, "confidence": 0.42}),
    ("delete_account", {"text": "delete me", "sentiment": 0.5, "confidence": 0.9}),
    ("wire_transfer", {"text": "send money", "sentiment": 0.5, "confidence": 0.9}),
]


def support_desk_inputs(policy: Any) -> tuple[list[Action], list[dict[str, Any]]]:
    ours: list[Action] = []
    cedar: list[dict[str, Any]] = []
    rx = policy.lexicon_res["litigation"]
    for name, c in SUPPORT_DESK_CASES:
        fields = {"amount": c["amount"]} if "amount" in c else {}
        ours.append(Action(action=name, text=c["text"], fields=fields,
                           signals={"sentiment": c["sentiment"], "confidence": c["confidence"]}))
        ctx: dict[str, Any] = {
            "sentiment": {"__extn": {"fn": "decimal", "arg": f"{c['sentiment']:.4f}"}},
            "confidence": {"__extn": {"fn": "decimal", "arg": f"{c['confidence']:.4f}"}},
            "mentions_litigation": rx.search(c["text"]) is not None,
        }
        if "amount" in c:
            ctx["amount"], ctx["currency"] = pence(c["amount"])
        cedar.append(cedar_request(name, ctx))
    return ours, cedar


# --------------------------------------------------------------------------- generated sets

MODELS = """policy "generated" version 1
model m0 { provider vllm base_url env("M0_URL") cost 0 context 32768 }
model m1 { provider vllm base_url env("M1_URL") cost 0 context 8192 }
model m2 { provider bedrock region "eu-west-2" model_id "x" cost 0.003 per 1k tokens }
route default -> m0 fallback [m1, m2]
"""


def generated(n: int) -> tuple[str, str, dict[str, str]]:
    """n rules: 90% standing orders over n*0.3 actions (authorize / approval / deny per action),
    10% per-tenant routes. Returns (policy text, cedar text, cedar policy id -> kind)."""
    lines = [MODELS]
    cedar: list[str] = []
    kinds: dict[str, str] = {}
    n_routes = max(1, n // 10)
    n_actions = max(1, (n - n_routes) // 3)
    for j in range(n_actions):
        limit = 50 + (j % 20) * 10
        lines.append(f"authorize act_{j}")
        lines.append(f"require approval for act_{j} when amount > {limit} GBP")
        lines.append(f'deny act_{j} when tenant == "blocked_{j}"')
        base = len(cedar)
        cedar.append(f'permit(principal, action == Action::"act_{j}", resource);')
        cedar.append(f'forbid(principal, action == Action::"act_{j}", resource) when '
                     f'{{ !(context has amount) || context.currency != "GBP" || context.amount > {limit * 100} }};')
        cedar.append(f'forbid(principal, action == Action::"act_{j}", resource) when {{ context.tenant == "blocked_{j}" }};')
        kinds[f"policy{base}"] = "allow"
        kinds[f"policy{base + 1}"] = "require_approval"
        kinds[f"policy{base + 2}"] = "deny"
    for k in range(n_routes):
        lines.append(f'route when tenant == "t{k}" -> m{k % 2} fallback [m2]')
    return "\n".join(lines) + "\n", "\n".join(cedar) + "\n", kinds


GEN_CASES: list[tuple[str, str, str]] = [
    # action, tenant, amount -- every action exists at every size
    ("act_0", "acme", "20 GBP"),
    ("act_1", "acme", "500 GBP"),
    ("act_2", "blocked_2", "20 GBP"),
    ("act_1", "acme", "20 USD"),
    ("act_unknown", "acme", "20 GBP"),
]


def generated_inputs() -> tuple[list[Action], list[dict[str, Any]], list[Action]]:
    ours, cedar = [], []
    for name, tenant, amount in GEN_CASES:
        ours.append(Action(action=name, tenant=tenant, fields={"amount": amount}))
        a, cur = pence(amount)
        cedar.append(cedar_request(name, {"tenant": tenant, "amount": a, "currency": cur}))
    chats = [Action(action="chat", tenant="t0"), Action(action="chat", tenant="nobody")]
    return ours, cedar, chats


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (CI smoke run)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()
    rounds = 200 if args.quick else 2000
    rows: list[dict[str, Any]] = []

    def row(name: str, ours: tuple[float, float], cedar: tuple[float, float] | None, extra: str = "") -> None:
        rows.append({"scenario": name, "ours_median_us": ours[0], "ours_p99_us": ours[1],
                     "cedar_median_us": cedar[0] if cedar else None, "cedar_p99_us": cedar[1] if cedar else None})
        c = f"{cedar[0]:9.2f} {cedar[1]:9.2f} {cedar[0] / ours[0]:8.2f}x" if cedar else f"{'-':>9} {'-':>9} {'-':>9}"
        print(f"{name:<34} {ours[0]:9.2f} {ours[1]:9.2f} {c}  {extra}")

    import os
    from importlib.metadata import version

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, cedarpy {version('cedarpy')}, rounds={rounds}, "
          f"cpus={os.cpu_count()}, load average {load:.1f}")
    print(f"{'scenario':<34} {'ours med':>9} {'ours p99':>9} {'cedar med':>9} {'cedar p99':>9} {'cedar/ours':>9}  (microseconds per decision)")

    # support desk
    policy = load_policy_set([ROOT / "policies" / "support-desk"])
    ours_in, cedar_in = support_desk_inputs(policy)
    ps = cedarpy.PolicySet.from_str(SUPPORT_DESK_CEDAR)
    for a, c in zip(ours_in, cedar_in, strict=True):
        mine = policy.evaluate(a).effect
        theirs = cedar_effect(cedarpy.is_authorized(c, ps, ENTITIES), SUPPORT_DESK_KINDS)
        if mine != theirs:
            print(f"DISAGREE on {a.action} {a.fields}: ours {mine}, cedar {theirs}")
            return 1
    row("support-desk (11 actions)", measure(policy.evaluate, ours_in, rounds),
        measure(lambda r: cedarpy.is_authorized(r, ps, ENTITIES), cedar_in, rounds), "decisions agree")
    chats = [Action(action="chat", use_case=u, tenant_tier=t, prompt_tokens=p)
             for u, t, p in (("code", None, None), ("legal", None, 50_000), (None, "enterprise", 1000), (None, None, None))]
    row("support-desk chat routing", measure(policy.evaluate, chats, rounds), None, "routing only: no Cedar equivalent")

    # generated sets
    medians: dict[int, tuple[float, float]] = {}
    for n in (10, 1_000, 10_000):
        text, cedar_text, kinds = generated(n)
        t0 = time.perf_counter()
        gp = compile_sources({"generated.policy": text})
        compile_s = time.perf_counter() - t0
        gps = cedarpy.PolicySet.from_str(cedar_text)
        g_ours, g_cedar, g_chat = generated_inputs()
        for a, c in zip(g_ours, g_cedar, strict=True):
            mine = gp.evaluate(a).effect
            theirs = cedar_effect(cedarpy.is_authorized(c, gps, ENTITIES), kinds)
            if mine != theirs:
                print(f"DISAGREE at n={n} on {a.action} {a.tenant} {a.fields}: ours {mine}, cedar {theirs}")
                return 1
        r = max(20, rounds // (1 if n < 10_000 else 4))
        ours_m = measure(gp.evaluate, g_ours, rounds)
        cedar_m = measure(lambda q, gps=gps: cedarpy.is_authorized(q, gps, ENTITIES), g_cedar, r)
        medians[n] = (ours_m[0], cedar_m[0])
        row(f"generated {n:>6,} rules", ours_m, cedar_m, f"compile {compile_s * 1000:.0f} ms")
        row(f"generated {n:>6,} rules: chat route", measure(gp.evaluate, g_chat, rounds), None,
            f"{max(1, n // 10)} tenant routes")
    ours_ratio = medians[10_000][0] / medians[10][0]
    cedar_ratio = medians[10_000][1] / medians[10][1]
    print(f"\n10,000 / 10 rules, median per decision: policyengine {ours_ratio:.2f}x, cedar {cedar_ratio:.2f}x")
    sd = rows[0]["ours_median_us"]
    print(f"targets: support-desk median {sd:.2f} us (< 10 us: {'met' if sd < 10 else 'MISSED'}); "
          f"10k/10 ratio {ours_ratio:.2f} (<= 2: {'met' if ours_ratio <= 2 else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ratio_10k_10": {"ours": ours_ratio, "cedar": cedar_ratio}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
