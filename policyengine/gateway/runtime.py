"""`Runtime`: everything a gateway path reaches, in one typed object.

One Runtime serves one process: the settings, the database and its repositories, the
decision log, the policy set serving (with its dispatcher), the shared cooldown/breaker
state, the signal provider, the scheduler, the metrics, the key cache and, once its
lifespan has started, the approvals service. `build_runtime` makes one from settings;
nothing in it is started (the service's lifespan starts and stops it, in that order).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from policyengine.dispatch import ChainDispatcher, DispatchSettings
from policyengine.gateway.keys import KeyCache
from policyengine.gateway.limits import Limiter
from policyengine.gateway.metrics import Metrics
from policyengine.gateway.policies import PolicyHolder
from policyengine.settings import Settings
from policyengine.signals import DefaultSignalProvider
from policyengine.signals.base import SignalProvider
from policyengine.state import StateStore, make_limit_store, make_state_store
from policyengine.store import ApiKeyRepo, Database, DecisionLogger, DecisionRepo, PolicyVersionRepo
from policyengine.types import Action, Decision, Principal

if TYPE_CHECKING:
    from policyengine.evaluator import CompiledPolicy
    from policyengine.signals.divergence import DivergenceScorer

__all__ = ["ApprovalsPort", "Runtime", "build_runtime"]


class ApprovalsPort(Protocol):
    """What the gateway needs of the approvals service: create a held decision's approval.

    Raises `policyengine.approvals.errors.ApprovalError` (a `PolicyEngineError`) when the
    request itself is wrong (e.g. a refused callback URL); any other exception means the
    service is unavailable.
    """

    async def get(self, approval_id: str, *, tenant: str | None = ..., for_key: str | None = None) -> Any:
        """The approval (an ApprovalView), refused as not found in another tenant."""
        ...

    async def wait(self, approval_id: str, timeout_s: float, *, tenant: str | None = ...,
                   for_key: str | None = None) -> Any:
        """The approval once decided, or as it is after `timeout_s`."""
        ...

    async def find_request(self, tenant: str | None, request_id: str, *, for_key: str | None = None) -> Any:
        """The approval a request with this id (Idempotency-Key) created, or None."""
        ...

    async def hold(self, *, action: Action, decision: Decision, principal: Principal | None = None,
                   callback_url: str | None = None, answers: dict[str, str] | None = None,
                   decision_id: str | None = None, request_id: str | None = None) -> Any:
        """Create the pending approval bound to exactly `action` under the held `decision`, and notify its reviewers."""
        ...


@dataclass
class Runtime:
    """The process's services. Fields are set once by `build_runtime`; `approvals` is set by the
    approvals lifespan when it starts and cleared when it stops; `signals_warmup` is the
    background load of the embedding model, when the policy needs it."""

    settings: Settings
    db: Database
    log: DecisionLogger
    policies: PolicyHolder
    state: StateStore
    signals: SignalProvider
    scheduler: AsyncIOScheduler
    metrics: Metrics
    keys: ApiKeyRepo
    key_cache: KeyCache
    decisions: DecisionRepo
    policy_versions: PolicyVersionRepo
    approvals: ApprovalsPort | None = None
    limiter: Limiter | None = None  # the limit and budget counters (policyengine.gateway.limits)
    # sends limit threshold notices (`send(kind, target, payload, key=...)`): the approvals' notifier, once it runs
    limit_sender: Any = None
    signals_warmup: asyncio.Future[Any] | None = None
    _scorer: DivergenceScorer | None = field(default=None, repr=False)

    def divergence_scorer(self) -> DivergenceScorer:
        """The dual-model divergence scorer, made on first use (it loads the embedding model)."""
        if self._scorer is None:
            # the embedding stack: imported on first use
            from policyengine.signals.divergence import DivergenceScorer

            self._scorer = DivergenceScorer()
        return self._scorer


def _dispatcher_factory(state: StateStore, settings: Settings) -> Any:
    dispatch_settings = DispatchSettings.model_validate(settings.dispatch)

    def make(policy: CompiledPolicy) -> ChainDispatcher:
        return ChainDispatcher(policy.models, state, settings=dispatch_settings, outbound=settings.outbound_rules().model)

    return make


def build_runtime(settings: Settings) -> Runtime:
    """A Runtime for `settings`, not yet started."""
    db = Database.open(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    metrics = Metrics()
    policy_versions = PolicyVersionRepo(db.sessionmaker)

    async def on_loaded(policy: CompiledPolicy, by: str | None) -> None:
        await policy_versions.record_loaded(hash=policy.hash, name=policy.name, version=policy.version,
                                            sources=dict(policy.sources), loaded_by=by)
        metrics.policy_info.clear()
        metrics.policy_info.labels(policy.name, str(policy.version), policy.hash).set(1)

    state = make_state_store(settings.redis_url, prefix=settings.redis_prefix)
    keys = ApiKeyRepo(db.sessionmaker)
    decision_log = DecisionLogger(settings.database_url, redact=settings.redact_fields,
                                  redaction_salt=settings.redaction_salt(), max_batch=settings.log_max_batch,
                                  sqlite_synchronous=settings.sqlite_synchronous,
                                  on_batch=metrics.log_batch.observe,
                                  follow_up_delay_s=settings.log_follow_up_delay_s,
                                  wal_max_bytes=int(settings.sqlite_wal_max_mb * 1024 * 1024))
    metrics.set_wal_source(lambda: float(decision_log.wal_size() or 0))
    return Runtime(
        settings=settings, db=db, log=decision_log,
        policies=PolicyHolder(settings.policy_path, _dispatcher_factory(state, settings), on_loaded=on_loaded),
        state=state, signals=DefaultSignalProvider(), scheduler=AsyncIOScheduler(timezone="UTC"), metrics=metrics,
        keys=keys, key_cache=KeyCache(keys, settings.key_cache_ttl_s), decisions=DecisionRepo(db.sessionmaker),
        policy_versions=policy_versions,
        limiter=Limiter(make_limit_store(settings.limits_redis_url or settings.redis_url, prefix=settings.redis_prefix),
                        default_completion_tokens=settings.limits_default_completion_tokens),
    )
