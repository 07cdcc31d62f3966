"""What every request handler and plugin reaches through `app.state.services`.

Plugins (the approvals package) register an async `hook(services)` in
`STARTUP_HOOKS` (module level, before `create_app`) or in
`services.startup_hooks`; hooks run in the lifespan after the store, policies
and dispatcher are up, and may set `services.approvals` and add
`services.shutdown_hooks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from policyengine.api.metrics import Metrics
from policyengine.api.policies import PolicyHolder
from policyengine.settings import Settings
from policyengine.store import ApiKeyRepo, Database, DecisionLogger, DecisionRepo, PolicyVersionRepo

Hook = Callable[["Services"], Awaitable[None]]

# Module-level registry: a plugin imported before create_app() appends here.
STARTUP_HOOKS: list[Hook] = []


@dataclass
class Services:
    settings: Settings
    db: Database
    decision_log: DecisionLogger
    policies: PolicyHolder
    state: Any  # policyengine.state.StateStore
    signals: Any  # policyengine.signals.base.SignalProvider | None
    scheduler: Any  # apscheduler AsyncIOScheduler (started in lifespan)
    metrics: Metrics
    keys: ApiKeyRepo
    decisions: DecisionRepo
    policy_versions: PolicyVersionRepo
    approvals: Any | None = None  # filled by the approvals package's startup hook
    startup_hooks: list[Hook] = field(default_factory=list)
    shutdown_hooks: list[Hook] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def dispatcher(self) -> Any:
        """The dispatcher for the policy currently serving (swapped atomically on reload)."""
        return self.policies.dispatcher
