"""Spread one model's requests over its deployments: weighted, round-robin, least outstanding, latency-aware.

A `Target` is one deployment of one model made callable: a `ModelSpec` copy carrying the
deployment's base_url, keys and region, and the `state_id` its cooldowns and breaker are
kept under (`<model>@<deployment>`; a model without declared deployments is one implicit
deployment whose state id is the model name, so its state is what it always was).

The `Balancer` keeps per-replica, in-process load figures (outstanding requests and an EWMA
of latency per deployment): writing them to Redis on every request would cost a round trip
each way, while what must agree across replicas (cooldowns, breakers, stickiness, health)
already lives in the shared `StateStore`. Ordering is pure Python over a handful of
deployments; `benchmarks/balance_bench.py` measures its cost per request.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from policyengine.types import Deployment, ModelSpec


@dataclass(slots=True)
class Target:
    """One deployment of one model, ready to call: `spec` carries the deployment's endpoint and keys."""

    model: str
    deployment: str | None  # None: the model's implicit single deployment
    state_id: str  # cooldown/breaker name: "<model>@<deployment>", or the model name for the implicit one
    spec: ModelSpec
    weight: float = 1.0
    max_concurrency: int | None = None


@dataclass(slots=True)
class DeploymentStats:
    """This replica's load on one deployment: requests in flight and a latency EWMA in ms (None: never measured)."""

    outstanding: int = 0
    ewma_ms: float | None = None
    samples: int = 0
    updated: float = 0.0  # time.monotonic() of the last sample


@dataclass
class Balancer:
    """Orders a model's deployments for one request (first = the one to call; the rest = failover order).

    Guarantees: the order is a permutation of the targets given; a sticky deployment that is
    among them comes first; a deployment at its `max_concurrency` on this replica is moved
    behind every one that is not (the dispatcher then skips it). `alpha` is the EWMA weight
    of a new sample. For `latency`, a deployment's expected wait is its latency EWMA x
    (1 + `load_factor` x requests in flight), divided by its weight: LLM servers batch, so a
    request in flight adds a fraction of the latency, not all of it (set 1.0 for servers that
    answer one request at a time). A failed call counts as its time plus `fail_penalty_ms` (a
    deployment that fails fast must not look fast; the penalty stands for the retry elsewhere).
    An estimate more than a second old fades (x e^(-age / `decay_s`)), so a deployment that was
    avoided is tried again and re-measured instead of being starved for good. With at most
    `full_scan_max` deployments the one with the least expected wait is called; with more, the
    better of two drawn at random (power of two choices: many deployments do not all herd onto one).
    """

    alpha: float = 0.3
    load_factor: float = 0.25
    fail_penalty_ms: float = 500.0
    decay_s: float = 30.0
    full_scan_max: int = 4
    rng: random.Random = field(default_factory=random.Random)
    stats: dict[str, DeploymentStats] = field(default_factory=dict)
    _rr: dict[str, int] = field(default_factory=dict)

    def stat(self, state_id: str) -> DeploymentStats:
        """The (created on first use) load figures of deployment `state_id`."""
        s = self.stats.get(state_id)
        if s is None:
            s = self.stats[state_id] = DeploymentStats()
        return s

    def started(self, state_id: str) -> None:
        """A request to `state_id` is now in flight."""
        self.stat(state_id).outstanding += 1

    def finished(self, state_id: str, latency_ms: float | None, *, failed: bool = False) -> None:
        """A request to `state_id` ended; `latency_ms` (time to answer or first token) feeds the EWMA when
        given (None: a cancelled call, no sample). `failed`: the sample is `latency_ms + fail_penalty_ms`."""
        s = self.stats.get(state_id) or self.stat(state_id)
        if s.outstanding > 0:
            s.outstanding -= 1
        if latency_ms is not None:
            if failed:
                latency_ms += self.fail_penalty_ms
            now = time.monotonic()
            if s.ewma_ms is None:
                s.ewma_ms = latency_ms
            else:
                e = _faded(s, now, self.decay_s)
                s.ewma_ms = e + self.alpha * (latency_ms - e)
            s.updated = now
            s.samples += 1

    def at_capacity(self, t: Target) -> bool:
        """True when this replica has `t.max_concurrency` requests in flight to `t`."""
        return t.max_concurrency is not None and self.stat(t.state_id).outstanding >= t.max_concurrency

    def _score(self, t: Target, now: float) -> float:
        # expected wait: latency estimate scaled by the requests in flight; unmeasured = 0 (explore first)
        s = self.stats.get(t.state_id) or self.stat(t.state_id)
        if s.ewma_ms is None:
            return 0.0
        return _faded(s, now, self.decay_s) * (1.0 + self.load_factor * s.outstanding) / t.weight

    def order(self, strategy: str, targets: list[Target], sticky: str | None = None) -> list[Target]:
        """`targets` in the order to try them under `strategy` (see the class docstring)."""
        n = len(targets)
        if n <= 1:
            return targets
        if strategy == "least_outstanding":
            rnd = self.rng.random
            out = sorted(targets, key=lambda t: (self.stat(t.state_id).outstanding / t.weight, rnd()))
        elif strategy == "latency":
            # the first by expected wait (below); the rest follow by score (failover goes to the next best)
            now = time.monotonic()
            scores = [self._score(t, now) for t in targets]
            rnd = self.rng.random
            if n <= self.full_scan_max:
                # few deployments: the least expected wait of all (P2C would pick the worse of the two
                # bad ones in 1/3 of the picks among three); ties broken at random
                k, best = 0, scores[0]
                for i in range(1, n):
                    if scores[i] < best or (scores[i] == best and rnd() < 0.5):
                        k, best = i, scores[i]
            else:  # power of two choices: sample two, call the one with the lower expected wait
                a = int(rnd() * n)
                b = int(rnd() * (n - 1))
                b += b >= a  # two distinct indices, uniformly
                k = a if scores[a] <= scores[b] else b
            rest = sorted((i for i in range(n) if i != k), key=scores.__getitem__)
            out = [targets[k], *(targets[i] for i in rest)]
        elif strategy == "round_robin":
            i = self._rr.get(targets[0].model, 0)
            self._rr[targets[0].model] = i + 1
            i %= n
            out = targets[i:] + targets[:i]
        else:  # weighted: the first is drawn by weight, the rest keep their declared order
            total = sum(t.weight for t in targets)
            x = self.rng.random() * total
            k = n - 1
            for j, t in enumerate(targets):
                x -= t.weight
                if x < 0:
                    k = j
                    break
            out = [targets[k], *targets[:k], *targets[k + 1:]]
        if sticky is not None:
            for j, t in enumerate(out):
                if t.deployment == sticky:
                    if j:
                        out = [t, *out[:j], *out[j + 1:]]
                    break
        if any(t.max_concurrency is not None for t in out):
            out.sort(key=self.at_capacity)  # stable: full ones last, order otherwise kept
        return out


def _faded(s: DeploymentStats, now: float, decay_s: float) -> float:
    """`s`'s latency estimate, faded when its last sample is more than a second old."""
    age = now - s.updated
    e = s.ewma_ms or 0.0
    return e if age < 1.0 else e * math.exp(-age / decay_s)


def targets_of(spec: ModelSpec) -> list[Target]:
    """The callable deployments of `spec`, in declared order (one implicit one when none are declared)."""
    if not spec.deployments:
        return [Target(model=spec.name, deployment=None, state_id=spec.name, spec=spec)]
    return [_target(spec, d) for d in spec.deployments]


def _target(spec: ModelSpec, d: Deployment) -> Target:
    upd: dict = {"deployments": ()}
    if d.base_url is not None:
        upd["base_url"] = d.base_url
    if d.keys:
        upd["keys"] = d.keys
    if d.region is not None:
        upd["region"] = d.region
    return Target(model=spec.name, deployment=d.name, state_id=f"{spec.name}@{d.name}",
                  spec=spec.model_copy(update=upd), weight=d.weight, max_concurrency=d.max_concurrency)


__all__ = ["Balancer", "DeploymentStats", "Target", "targets_of"]
