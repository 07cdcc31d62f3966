"""Prometheus metrics for approvals, registered on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ApprovalMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.transitions = Counter(
            "policyengine_approval_transitions", "Approval lifecycle events (created, approved, rejected, timed_out, "
            "escalated, reminded, cancelled, refused)", ["kind"], registry=r,
        )
        self.deliveries = Counter(
            "policyengine_approval_deliveries", "Notification / callback delivery attempts by kind and outcome "
            "(delivered, retry, dead)", ["kind", "outcome"], registry=r,
        )
        self.pending = Gauge("policyengine_approvals_pending", "Approvals waiting for a reviewer", registry=r)
        self.dead = Gauge("policyengine_approval_deliveries_dead", "Outbox entries that gave up (need attention)",
                          registry=r)

    def transition(self, kind: str) -> None:
        self.transitions.labels(kind).inc()

    def delivery(self, kind: str, outcome: str) -> None:
        self.deliveries.labels(kind, outcome).inc()
