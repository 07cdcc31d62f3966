"""Prometheus metrics, one registry per runtime (so several services can live in one process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", bound=Any)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up in a dict: prometheus_client's `labels()`
    validates the values and takes a lock on every call, several times per request on the hot
    paths. Label values here are model names, effects, outcomes: a bounded set, which the
    registry keeps for the life of the process anyway."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        """The child metric for these label values (created once, then looked up)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class Metrics:
    """Every counter, gauge and histogram the service exports, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.decisions = Labelled(Counter("policyengine_decisions", "Decisions made, by effect and kind",
                                          ["effect", "kind"], registry=r))
        self.chat_requests = Labelled(Counter("policyengine_chat_requests",
                                              "Chat requests by the model that answered and the outcome",
                                              ["model", "outcome"], registry=r))
        self.attempts = Labelled(Counter("policyengine_dispatch_attempts",
                                         "Upstream attempts by model and error class (ok = success)",
                                         ["model", "error_class"], registry=r))
        self.cooldowns_open = Gauge("policyengine_cooldowns_open", "Models/keys currently cooling down",
                                    registry=r)
        self.request_latency = Labelled(Histogram("policyengine_request_latency_seconds",
                                                  "Service latency by route", ["route"], buckets=LATENCY_BUCKETS,
                                                  registry=r))
        self.upstream_latency = Labelled(Histogram("policyengine_upstream_latency_seconds",
                                                   "Latency of upstream model calls by model", ["model"],
                                                   buckets=LATENCY_BUCKETS, registry=r))
        self.log_batch = Histogram("policyengine_decision_log_batch_rows",
                                   "Rows per decision-log commit (group commit)",
                                   buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.log_wal_bytes = Gauge("policyengine_decision_log_wal_bytes",
                                   "SQLite: the decision log's WAL file size now (bounded by sqlite_wal_max_mb)",
                                   registry=r)
        self.policy_reloads = Counter("policyengine_policy_reloads", "Policy reloads by outcome", ["outcome"],
                                      registry=r)
        self.limit_checks = Labelled(Counter(
            "policyengine_limit_checks", "Limit reservations by outcome (ok, exceeded, rerouted, held, failed_open, "
            "failed_closed)", ["outcome"], registry=r))
        self.limit_exceeded = Labelled(Counter("policyengine_limit_exceeded",
                                               "Requests at a limit, by what it counts and what the policy did",
                                               ["kind", "action"], registry=r))
        self.limit_notices = Labelled(Counter("policyengine_limit_notices", "Limit threshold notices sent, by channel",
                                              ["channel"], registry=r))
        self.tokens = Labelled(Counter("policyengine_tokens", "Tokens used by model and where the count came from "
                                       "(upstream usage, or counted)", ["model", "source"], registry=r))
        self.spend = Labelled(Counter("policyengine_spend", "Money spent (usage x the model's cost), by model and "
                                      "currency", ["model", "currency"], registry=r))
        self.policy_info = Gauge("policyengine_policy_info", "The policy set serving (value 1)",
                                 ["name", "version", "hash"], registry=r)

    def set_wal_source(self, fn: Callable[[], float]) -> None:
        """Make `policyengine_decision_log_wal_bytes` report `fn()` at each scrape."""
        self.log_wal_bytes.set_function(fn)

    def set_cooldown_source(self, fn: Callable[[], float]) -> None:
        """Make `policyengine_cooldowns_open` report `fn()` at each scrape (it replaces any earlier source)."""
        self.cooldowns_open.set_function(fn)
