"""The hedge budget: how many extra (hedged) requests a dispatcher may start.

A token bucket per route: every request adds `fraction` of a token (up to `burst`), a hedge
spends one. Over any long run, hedges <= fraction x requests + burst, so hedging never adds
more than that share of load, however slow the upstreams get. Per dispatcher replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    requests: int = 0
    hedges: int = 0


@dataclass
class HedgeBudget:
    """Token buckets keyed by route (rule id and fraction); see the module docstring for the bound."""

    burst: float = 2.0
    _buckets: dict[tuple[str | None, float], _Bucket] = field(default_factory=dict)

    def _bucket(self, route: str | None, fraction: float) -> _Bucket:
        b = self._buckets.get((route, fraction))
        if b is None:
            b = self._buckets[(route, fraction)] = _Bucket(tokens=0.0)
        return b

    def on_request(self, route: str | None, fraction: float) -> None:
        """Count one hedge-eligible request: it earns `fraction` of a hedge."""
        b = self._bucket(route, fraction)
        b.requests += 1
        b.tokens = min(self.burst, b.tokens + fraction)

    def try_take(self, route: str | None, fraction: float) -> bool:
        """Spend one hedge when the bucket holds one; False (no hedge) otherwise."""
        b = self._bucket(route, fraction)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            b.hedges += 1
            return True
        return False

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests and hedges started so far, per route (for status and tests)."""
        return {f"{r or '-'}:{f:g}": {"requests": b.requests, "hedges": b.hedges} for (r, f), b in self._buckets.items()}


__all__ = ["HedgeBudget"]
