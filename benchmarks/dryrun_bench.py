"""Dry-run throughput and memory over a large generated decision log (SQLite).

    .venv/bin/python benchmarks/dryrun_bench.py                 # 1,000,000 decisions
    .venv/bin/python benchmarks/dryrun_bench.py --rows 200000    # quicker

1. Generates N logged decisions the way the service logs them: realistic support
   desk traffic (unique texts and sessions, continuous sentiment / confidence /
   divergence, refund amounts in pence, a few USD refunds, litigation threats),
   each evaluated for real by `policies/support-desk`, written to the store's
   `decisions` table (canonical JSON records, hash chain) in SQLite. The file is
   reused by later runs with the same N and seed.
2. Runs the real CLI, `policyengine dry-run --policy <candidate> --against sqlite:///...`,
   in a subprocess, with the refund threshold moved from 100 to 50 GBP, and reads
   the rate from its JSON report and the peak RSS of the child process.
3. Runs the same over a quarter of the log to show memory does not grow with N,
   and exact mode (every distinct input evaluated) on a slice for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICY = ROOT / "policies" / "support-desk"
WORDS = ["order", "parcel", "delivery", "invoice", "account", "password", "refund", "late", "broken", "damaged", "missing", "charge", "subscription", "upgrade", "cancel", "address", "payment", "card", "receipt", "warranty", "replacement"]
LITIGATION = ("I will sue you", "my solicitor will be in touch", "see you in court", "legal action follows")


def gen_action(rng: random.Random, i: int) -> dict:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))) + f" (ticket {i})"
    if rng.random() < 0.02:
        text += ". " + rng.choice(LITIGATION)
    sig = {"sentiment": round(rng.betavariate(5, 2), 4), "confidence": round(rng.betavariate(9, 1.2), 4)}
    a: dict = {"tenant": rng.choice(("acme", "globex", "initech")), "actor": f"user-{rng.randint(1, 5000)}",
               "text": text, "signals": sig}
    r = rng.random()
    if r < 0.40:
        a["action"] = "chat"
        a["use_case"] = rng.choices((None, "code", "summarisation", "legal", "compliance", "medical"),
                                    (50, 20, 15, 5, 5, 5))[0]
        a["tenant_tier"] = rng.choices(("standard", "enterprise"), (80, 20))[0]
        a["session_id"] = f"s-{rng.randint(1, 10**9)}"
        a["actor_role"] = rng.choices(("agent", "power"), (90, 10))[0]
        if a["actor_role"] == "power" and rng.random() < 0.5:
            a["requested_model"] = rng.choice(("qwen-72b", "gemma-27b"))
        if a["use_case"] in ("legal", "medical") and rng.random() < 0.9:
            sig["divergence"] = round(rng.random() * 0.5, 4)
        a["prompt_tokens"] = rng.randint(20, 6000)
    elif r < 0.60:
        a["action"] = "classify_ticket"
    elif r < 0.75:
        a["action"] = "draft_response"
    elif r < 0.90:
        a["action"] = "refund"
        cur = "USD" if rng.random() < 0.03 else "GBP"
        a["fields"] = {"amount": f"{rng.randint(100, 30000) / 100:.2f} {cur}", "order": f"o-{i}"}
    elif r < 0.95:
        a["action"] = "send_email"
        a["fields"] = {"to": f"customer{i}@example.com"}
    elif r < 0.97:
        a["action"] = "delete_account"
    else:
        a["action"] = rng.choice(("wire_transfer", "export_data", "change_plan"))
    return {k: v for k, v in a.items() if v is not None}


def generate(url: str, rows: int, seed: int) -> float:
    import sqlalchemy as sa

    from policyengine.dsl import load_policy_set
    from policyengine.store import DecisionLogger, LogEntry, canonical_json, row_hash, upgrade
    from policyengine.store.models import DecisionChain, DecisionRecord
    from policyengine.types import Action

    upgrade(url)
    policy = load_policy_set([str(POLICY)])
    builder = DecisionLogger(url, sqlite_synchronous="OFF")  # only build_record() is used
    rng = random.Random(seed)
    engine = sa.create_engine(url)
    started = time.perf_counter()
    prev, seq, ts = "0" * 64, 0, 1_780_000_000.0
    with engine.begin() as conn:
        head = conn.execute(sa.select(DecisionChain.seq, DecisionChain.head_hash)).first()
        if head is not None:
            seq, prev = head
        batch: list[dict] = []
        for i in range(rows):
            action = Action.model_validate(gen_action(rng, i))
            d = policy.evaluate(action)
            ts += rng.random() * 0.05
            entry = LogEntry(kind="chat" if action.action == "chat" else "evaluate", tenant=action.tenant or "acme",
                             action=action.model_dump(mode="json", exclude_defaults=True),
                             decision=d.model_dump(mode="json"), actor=action.actor, session_id=action.session_id,
                             id=f"d-{i:07d}", ts=ts)
            rec = builder.build_record(entry)
            text = canonical_json(rec)
            seq += 1
            h = row_hash(prev, text)
            batch.append({"seq": seq, "id": rec["id"], "ts": rec["ts"], "kind": rec["kind"], "tenant": rec["tenant"],
                          "actor": rec["actor"], "session_id": rec["session_id"], "action": rec["action"],
                          "effect": rec["effect"], "model": rec["model"], "policy_hash": rec["policy_hash"],
                          "record": text, "prev_hash": prev, "row_hash": h})
            prev = h
            if len(batch) == 20_000:
                conn.execute(sa.insert(DecisionRecord), batch)
                batch.clear()
                print(f"  generated {i + 1:,} / {rows:,}", end="\r", file=sys.stderr)
        if batch:
            conn.execute(sa.insert(DecisionRecord), batch)
        conn.execute(sa.update(DecisionChain).where(DecisionChain.id == 1).values(seq=seq, head_hash=prev))
    engine.dispose()
    return time.perf_counter() - started


def candidate_policy(tmp: Path) -> Path:
    dest = tmp / "candidate"
    shutil.copytree(POLICY, dest, ignore=shutil.ignore_patterns("*.tests.yaml"))
    orders = dest / "10-orders.policy"
    text = orders.read_text()
    assert "amount > 100 GBP" in text
    orders.write_text(text.replace("amount > 100 GBP", "amount > 50 GBP"))
    return dest


def run_cli(args: list[str]) -> tuple[dict, float]:
    """Run `policyengine dry-run ...` in a child process; -> (JSON report, wall seconds)."""
    started = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).with_name("policyengine")), *args],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise SystemExit(f"dry-run failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--exact-slice", type=int, default=100_000, help="rows replayed in exact mode for the ratio")
    ap.add_argument("--db-dir", default=str(Path(tempfile.gettempdir()) / "policyengine-bench"))
    args = ap.parse_args()
    db_dir = Path(args.db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    db = db_dir / f"decisions-{args.rows}-{args.seed}.db"
    url = f"sqlite:///{db}"
    if not db.exists():
        print(f"generating {args.rows:,} logged decisions into {db} ...", file=sys.stderr)
        partial = db.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        secs = generate(f"sqlite:///{partial}", args.rows, args.seed)
        partial.rename(db)
        print(f"generated in {secs:.0f}s ({args.rows / secs:,.0f}/s); {db.stat().st_size / 1e6:,.0f} MB",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cand = candidate_policy(Path(tmp))
        base = ["dry-run", "--policy", str(cand), "--against", url, "--format", "json", "--no-progress"]
        full, wall_full = run_cli(base)
        quarter_n = args.rows // 4
        quarter, wall_q = run_cli([*base, "--limit", str(quarter_n)])
        n_exact = min(args.exact_slice, args.rows)
        grouped_slice, wall_g = run_cli([*base, "--limit", str(n_exact)])
        exact_slice, wall_e = run_cli([*base, "--limit", str(n_exact), "--exact"])
    print(f"\ndry-run, refund threshold 100 -> 50 GBP, SQLite log of {args.rows:,} decisions (machine: "
          f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores)\n")
    rows = [
        ("full log, grouped (default)", full, wall_full),
        (f"first {quarter_n:,}, grouped", quarter, wall_q),
        (f"first {n_exact:,}, grouped", grouped_slice, wall_g),
        (f"first {n_exact:,}, --exact", exact_slice, wall_e),
    ]
    print(f"{'run':34} {'decisions':>10} {'replay/s':>10} {'per CPU-s':>10} {'wall s':>7} {'distinct':>9} "
          f"{'changed':>8} {'peak RSS MB':>12}")
    for name, rep, wall in rows:
        per_cpu = rep["total"] / rep["cpu_s"] if rep.get("cpu_s") else 0.0
        print(f"{name:34} {rep['total']:>10,} {rep['rate_per_s']:>10,.0f} {per_cpu:>10,.0f} {wall:>7.1f} "
              f"{rep['unique_inputs']:>9,} {rep['changed']:>8,} {rep['peak_rss_mb']:>12.0f}")
    ratio = grouped_slice["rate_per_s"] / exact_slice["rate_per_s"]
    same = (grouped_slice["by_effect"] == exact_slice["by_effect"] and grouped_slice["changed"] == exact_slice["changed"])
    print(f"\ngrouped / exact speed-up on the same {n_exact:,} rows: {ratio:.1f}x; identical results: {same}")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
          f"{os.cpu_count()} CPUs (figures are wall-clock; 'per CPU-s' is decisions per CPU-second)")
    print(f"peak RSS, full log vs a quarter of it: {full['peak_rss_mb']:.0f} MB vs {quarter['peak_rss_mb']:.0f} MB")
    eff = [g for g in full["groups"] if g["kind"] == "effect"]
    for g in eff:
        print(f"  {g['old']} -> {g['new']}: {g['count']:,}  caused by: {g['causes'][0]['rule'] if g['causes'] else '-'}")
    target = 50_000
    print(f"\ntarget >= {target:,} decisions/s: {'met' if full['rate_per_s'] >= target else 'NOT met'} "
          f"({full['rate_per_s']:,.0f}/s)")


if __name__ == "__main__":
    main()
