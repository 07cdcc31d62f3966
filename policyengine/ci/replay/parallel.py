"""Replay on several processes: each replays every k-th logged decision, the reports are merged.

Compiled policies hold closures and cannot be pickled, so workers are forked
(they inherit the compiled policies); where fork is unavailable the replay
runs in one process. Results do not depend on the number of workers, except
which examples are kept when a change group has more than `max_examples`
(the earliest by time are kept).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from policyengine.ci.replay.engine import _peak_rss_mb, replay
from policyengine.ci.replay.report import CauseCount, ChangeGroup, DryRunReport, Transition

_JOB: dict[str, Any] = {}


def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _work(index: int) -> DryRunReport:
    job = _JOB
    counter = job["counter"]
    src = job["source"].shard(index, job["workers"])
    sink_fh = None
    on_change = None
    if job["changes_out"] is not None:
        sink_fh = open(f"{job['changes_out']}.part{index}", "wb")  # noqa: SIM115 - closed below

        def on_change(change: dict[str, Any]) -> None:
            sink_fh.write(orjson.dumps(change, default=str) + b"\n")

    def progress(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    try:
        return replay(job["policy"], src, baseline=job["baseline"], exact=job["exact"], only_policy=job["only_policy"],
                      rematch_lexicons=job["rematch"],
                      max_examples=job["max_examples"], source=job["describe"], since=job["since"],
                      on_change=on_change, progress=progress)
    finally:
        if sink_fh is not None:
            sink_fh.close()
        close = getattr(src, "close", None)
        if close:
            close()


def replay_parallel(policy: Any, source: Any, *, workers: int, baseline: Any = None, exact: bool = False,
                    only_policy: str | None = None, rematch_lexicons: frozenset[str] | set[str] = frozenset(),
                    max_examples: int = 5, since: str | None = None, changes_out: Path | None = None,
                    progress: Callable[[int], None] | None = None) -> DryRunReport:
    """Like `replay`, on `workers` forked processes; `source` must have `.shard(i, k)`."""
    if "fork" not in mp.get_all_start_methods():  # pragma: no cover - not Linux/macOS
        raise RuntimeError("parallel replay needs the fork start method")
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    _JOB.update(policy=policy, baseline=baseline, exact=exact, only_policy=only_policy, rematch=rematch_lexicons, max_examples=max_examples, since=since,
                source=source, workers=workers, counter=counter, describe=source.describe(),
                changes_out=str(changes_out) if changes_out else None)
    started = time.perf_counter()
    try:
        with ctx.Pool(workers) as pool:
            pending = pool.map_async(_work, range(workers))
            seen = 0
            while not pending.ready():
                pending.wait(0.25)
                if progress is not None:
                    now = counter.value
                    if now > seen:
                        progress(now - seen)
                        seen = now
            parts: list[DryRunReport] = pending.get()
            if progress is not None and counter.value > seen:
                progress(counter.value - seen)
    finally:
        _JOB.clear()
    if changes_out is not None:
        with open(changes_out, "wb") as out:
            for i in range(workers):
                part = Path(f"{changes_out}.part{i}")
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out)
                part.unlink()
    merged = merge_reports(parts, max_examples=max_examples)
    merged.elapsed_s = time.perf_counter() - started
    merged.rate_per_s = merged.total / merged.elapsed_s if merged.elapsed_s > 0 else 0.0
    merged.peak_rss_mb = max([p.peak_rss_mb or 0.0 for p in parts] + [_peak_rss_mb() or 0.0])
    return merged


def _sum_dicts(ds: list[dict[str, int]]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for d in ds:
        c.update(d)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def merge_reports(parts: list[DryRunReport], *, max_examples: int) -> DryRunReport:
    first = parts[0]
    out = DryRunReport(policy=first.policy, baseline=first.baseline, source=first.source, since=first.since,
                       grouping=first.grouping, rematched_lexicons=first.rematched_lexicons)
    for f in ("total", "replayed", "compared", "changed", "other_policy", "unrecorded", "redacted", "signals_computed", "errors",
              "unique_inputs", "cpu_s"):
        setattr(out, f, sum(getattr(p, f) for p in parts))
    out.changed_share = out.changed / out.compared if out.compared else 0.0
    out.by_kind = _sum_dicts([p.by_kind for p in parts])
    out.new_effects = _sum_dicts([p.new_effects for p in parts])
    out.signals_computed_names = _sum_dicts([p.signals_computed_names for p in parts])
    out.logged_policy_hashes = _sum_dicts([p.logged_policy_hashes for p in parts])
    eff: Counter[tuple[str, str]] = Counter()
    chains: Counter[tuple[str, str]] = Counter()
    for p in parts:
        eff.update({(t.old, t.new): t.count for t in p.by_effect})
        chains.update({(t.old, t.new): t.count for t in p.chain_changes})
    out.by_effect = [Transition(old=o, new=n, count=c) for (o, n), c in sorted(eff.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.chain_changes = [Transition(old=o, new=n, count=c)
                         for (o, n), c in sorted(chains.items(), key=lambda kv: (-kv[1], kv[0]))[:50]]
    groups: dict[tuple[str, str, str], ChangeGroup] = {}
    causes: dict[tuple[str, str, str], Counter[str]] = {}
    for p in parts:
        for g in p.groups:
            key = (g.kind, g.old, g.new)
            m = groups.get(key)
            if m is None:
                m = groups[key] = ChangeGroup(kind=g.kind, old=g.old, new=g.new, count=0)
                causes[key] = Counter()
            m.count += g.count
            m.examples.extend(g.examples)
            causes[key].update({c.rule: c.count for c in g.causes})
    order = {"effect": 0, "approval": 1, "chain": 2, "tags": 3, "limits": 4}
    for key, g in groups.items():
        g.examples.sort(key=lambda e: (e.ts if e.ts is not None else 0.0, e.id))
        if max_examples >= 0:
            del g.examples[max_examples:]
        g.causes = [CauseCount(rule=r, count=c) for r, c in sorted(causes[key].items(), key=lambda rc: (-rc[1], rc[0]))]
    out.groups = sorted(groups.values(), key=lambda g: (order.get(g.kind, 9), -g.count, g.old, g.new))
    out.error_examples = [e for p in parts for e in p.error_examples][:10]
    fired: Counter[str] = Counter()
    sh: Counter[tuple[str, str]] = Counter()
    for p in parts:
        fired.update({c.rule: c.count for c in p.shadow_rules})
        sh.update({(t.old, t.new): t.count for t in p.shadow_effects})
    out.shadow_rules = [CauseCount(rule=r, count=c) for r, c in sorted(fired.items(), key=lambda kv: (-kv[1], kv[0]))]
    out.shadow_effects = [Transition(old=o, new=n, count=c) for (o, n), c in sorted(sh.items(), key=lambda kv: (-kv[1], kv[0]))]
    return out
