"""What the console's pages read, always within one tenant (the session's).

`recent_rows` reads the tenant's decision log newest first (bounded); `effects_over_time`
buckets its decisions by effect; `model_stats` summarises the attempts of its chat outcome
rows per model (calls, answers, failures by class, skips, mean answer latency). Follow-up
rows (`FOLLOW_UP_KINDS`: `chat_outcome`, `chat_verdict`, `mcp_outcome`) carry a chat's attempts;
the decisions themselves are every other kind.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from policyengine.dispatch.explain import outcome
from policyengine.store import FOLLOW_UP_KINDS, DecisionQuery

FOLLOW_UPS = FOLLOW_UP_KINDS  # rows completing a decision (chat outcome / verdict, MCP outcome): not decisions
EFFECTS = ("allow", "deny", "require_approval", "escalate")
MAX_ROWS = 2000  # a chart reads at most this many rows (newest first)


async def recent_rows(rt: Any, tenant: str, *, kind: str | None = None, since: float | None = None,
                      limit: int = MAX_ROWS) -> list[Any]:
    """The tenant's rows (optionally of one kind, since a time), newest first, at most `limit`."""
    rows: list[Any] = []
    before = None
    while len(rows) < limit:
        n = min(1000, limit - len(rows))
        page = await rt.decisions.query(DecisionQuery(tenant=tenant, kind=kind, since=since, before_seq=before,
                                                      limit=n))
        rows += page
        if len(page) < n:
            break
        before = page[-1].seq
    return rows


@dataclass
class Buckets:
    """Decisions per effect per time bucket: `labels[i]` is bucket i's start, `series[effect][i]` its count."""

    labels: list[str] = field(default_factory=list)
    series: dict[str, list[int]] = field(default_factory=dict)
    total: int = 0


def effects_over_time(rows: list[Any], *, buckets: int = 12, now: float | None = None,
                      start: float | None = None) -> Buckets:
    """Count `rows` (decision rows; follow-ups are left out) by effect in `buckets` equal time slices
    from `start` (default: the oldest row) to `now`."""
    rows = [r for r in rows if r.kind not in FOLLOW_UPS]
    out = Buckets(series={e: [0] * buckets for e in EFFECTS})
    now = time.time() if now is None else now
    if not rows:
        return out
    start = min(r.ts for r in rows) if start is None else min(start, min(r.ts for r in rows))
    width = max(1.0, (now - start) / buckets)
    fmt = "%H:%M:%S" if width < 60 else ("%H:%M" if width < 86400 / 2 else "%d %b %H:%M")
    out.labels = [time.strftime(fmt, time.gmtime(start + i * width)) for i in range(buckets)]
    for r in rows:
        i = min(buckets - 1, max(0, math.floor((r.ts - start) / width)))
        out.series.setdefault(r.effect, [0] * buckets)[i] += 1
        out.total += 1
    return out


@dataclass
class ModelStats:
    """One model's attempts in the rows read: calls made, answers, failures by class, skips, latency."""

    model: str
    calls: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    latency_ms_sum: float = 0.0

    @property
    def failovers(self) -> int:
        """Calls that failed (any class) and made the chain move on or stop."""
        return sum(self.failed.values())

    @property
    def mean_latency_ms(self) -> float | None:
        """Mean latency of the answered calls (None when none answered)."""
        return self.latency_ms_sum / self.answered if self.answered else None


def model_stats(rows: list[Any]) -> list[ModelStats]:
    """Per model, from the attempts of chat outcome/verdict rows, sorted by model name."""
    stats: dict[str, ModelStats] = {}
    for r in rows:
        if r.kind not in FOLLOW_UPS:
            continue
        for a in orjson.loads(r.record).get("attempts") or []:
            s = stats.get(a.get("model")) or stats.setdefault(a.get("model"), ModelStats(a.get("model")))
            o = outcome(a)
            if o == "skipped":
                s.skipped += 1
                continue
            s.calls += 1
            if o == "ok":
                s.answered += 1
                s.latency_ms_sum += float(a.get("latency_ms") or 0.0)
            elif o != "cancelled":
                s.failed[o] = s.failed.get(o, 0) + 1
    return [stats[k] for k in sorted(stats, key=str)]
