"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.decisions = Counter("policyengine_decisions", "Decisions made, by effect and kind",
                                 ["effect", "kind"], registry=r)
        self.chat_requests = Counter("policyengine_chat_requests",
                                     "Chat requests by the model that answered and the outcome",
                                     ["model", "outcome"], registry=r)
        self.attempts = Counter("policyengine_dispatch_attempts",
                                "Upstream attempts by model and error class (ok = success)",
                                ["model", "error_class"], registry=r)
        self.cooldowns_open = Gauge("policyengine_cooldowns_open", "Models/keys currently cooling down",
                                    registry=r)
        self.request_latency = Histogram("policyengine_request_latency_seconds",
                                         "Service latency by route", ["route"], buckets=LATENCY_BUCKETS,
                                         registry=r)
        self.upstream_latency = Histogram("policyengine_upstream_latency_seconds",
                                          "Latency of upstream model calls by model", ["model"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.log_batch = Histogram("policyengine_decision_log_batch_rows",
                                   "Rows per decision-log commit (group commit)",
                                   buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.policy_reloads = Counter("policyengine_policy_reloads", "Policy reloads by outcome", ["outcome"],
                                      registry=r)
        self.policy_info = Gauge("policyengine_policy_info", "The policy set serving (value 1)",
                                 ["name", "version", "hash"], registry=r)

    def set_cooldown_source(self, fn: Callable[[], float]) -> None:
        self.cooldowns_open.set_function(fn)
