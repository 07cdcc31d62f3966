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

import random
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


@dataclass
class Balancer:
    """Orders a model's deployments for one request (first = the one to call; the rest = failover order).

    Guarantees: the order is a permutation of the targets given; a sticky deployment that is
    among them comes first; a deployment at its `max_concurrency` on this replica is moved
    behind every one that is not (the dispatcher then skips it). `alpha` is the EWMA weight
    of a new sample.
    """

    alpha: float = 0.3
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

    def finished(self, state_id: str, latency_ms: float | None) -> None:
        """A request to `state_id` ended; `latency_ms` (time to answer or first token) feeds the EWMA when given.
        A failure should pass a penalised latency (the dispatcher passes the time it took, at least its timeout share)."""
        s = self.stat(state_id)
        s.outstanding = max(0, s.outstanding - 1)
        if latency_ms is not None:
            s.ewma_ms = latency_ms if s.ewma_ms is None else s.ewma_ms + self.alpha * (latency_ms - s.ewma_ms)
            s.samples += 1

    def at_capacity(self, t: Target) -> bool:
        """True when this replica has `t.max_concurrency` requests in flight to `t`."""
        return t.max_concurrency is not None and self.stat(t.state_id).outstanding >= t.max_concurrency

    def _score(self, t: Target) -> float:
        # expected wait: latency estimate scaled by the queue in front of us; unmeasured = 0 (explore first)
        s = self.stat(t.state_id)
        return (s.ewma_ms or 0.0) * (s.outstanding + 1) / t.weight

    def order(self, strategy: str, targets: list[Target], sticky: str | None = None) -> list[Target]:
        """`targets` in the order to try them under `strategy` (see the class docstring)."""
        n = len(targets)
        if n <= 1:
            return targets
        if strategy == "least_outstanding":
            rnd = self.rng.random
            out = sorted(targets, key=lambda t: (self.stat(t.state_id).outstanding / t.weight, rnd()))
        elif strategy == "latency":
            # power of two choices: sample two, call the one with the lower expected wait;
            # the rest follow by score (failover goes to the next best)
            a, b = self.rng.sample(range(n), 2)
            first = targets[a] if self._score(targets[a]) <= self._score(targets[b]) else targets[b]
            rest = sorted((t for t in targets if t is not first), key=self._score)
            out = [first, *rest]
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
