"""Shared by evaluate and chat: build the Action from a request, decide, log, hold.

The order is fixed: evaluate -> commit the decision row (group commit) -> hold
for approval when the effect asks for it -> respond. A response never leaves
before its decision row is committed; if the log cannot commit, the request
fails with 503 and the decision is not acted on. (A streamed chat queues its row
before opening the upstream and waits for both before its first byte: on a
failed commit the upstream's answer is discarded unread.)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
import uuid
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from policyengine.api.auth import Principal
from policyengine.api.errors import ApiError, validation_message
from policyengine.store import DecisionLogError, LogEntry
from policyengine.types import Action, Decision

if TYPE_CHECKING:  # the evaluator imports nothing from the API; this only types the calls
    from policyengine.evaluator import CompiledPolicy

log = logging.getLogger("policyengine.api.decide")

HELD = ("require_approval", "escalate")
# Key attributes that pin a field of the action: an app key cannot claim another tier.
PINNED = ("tenant_tier", "channel", "actor_role")


def make_action(data: dict[str, Any], principal: Principal) -> Action:
    """Validate `data` as an Action for this caller; the tenant always comes from the API key."""
    tenant = data.get("tenant")
    if tenant is not None and tenant != principal.tenant:
        raise ApiError(403, f"tenant {tenant!r} does not match this API key's tenant {principal.tenant!r}",
                       code="tenant_mismatch", param="tenant")
    data = {**data, "tenant": principal.tenant}
    for attr in PINNED:
        if attr in principal.attributes:
            data[attr] = principal.attributes[attr]
    if "tenant_tier" not in data and "tier" in principal.attributes:
        data["tenant_tier"] = principal.attributes["tier"]
    try:
        return Action.model_validate(data)
    except ValidationError as exc:
        msg, param = validation_message(list(exc.errors()))
        raise ApiError(422, f"invalid action: {msg}", code="invalid_action", param=param)


# Signals that run the embedding model (tens of ms): computed in a worker thread, never on the loop.
SLOW_SIGNALS = frozenset({"sentiment"})


def _slow(policy: CompiledPolicy, action: Action) -> bool:
    # signals_needed leaves out values the caller supplied: those cost nothing here
    return bool(action.text) and not SLOW_SIGNALS.isdisjoint(policy.signals_needed(action))


async def evaluate(services: Any, policy: CompiledPolicy, action: Action) -> Decision:
    """Evaluate inline (microseconds); in a worker thread when a rule needs an embedding-model signal."""
    try:
        if _slow(policy, action):
            return await asyncio.to_thread(policy.evaluate, action, services.signals)
        return policy.evaluate(action, services.signals)
    except (ValueError, TypeError, KeyError) as exc:
        raise ApiError(422, f"cannot evaluate this action: {exc}", code="evaluation_error")


def dump(action: Action, decision: Decision) -> tuple[dict[str, Any], dict[str, Any]]:
    """The action and the decision as the log records them."""
    return action.model_dump(mode="json", exclude_defaults=True), decision.model_dump(mode="json")


def _unavailable(decision_id: str, exc: Exception) -> ApiError:
    log.error("decision %s not committed: %s", decision_id, exc)
    return ApiError(503, "the decision log is unavailable; the decision was not recorded and must not "
                         "be acted on", code="decision_log_unavailable", retry=True)


class PendingCommit:
    """A decision row on its way into the log. `await` it before acting on the decision: it
    returns once the row is committed, or raises the 503 `ApiError` when it cannot be."""

    __slots__ = ("_decision_id", "_effect", "_fut", "_kind", "_services")

    def __init__(self, fut: asyncio.Future[Any], services: Any, effect: str, kind: str, decision_id: str) -> None:
        self._fut, self._services, self._effect, self._kind = fut, services, effect, kind
        self._decision_id = decision_id

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    async def wait(self) -> None:
        try:
            await self._fut
        except DecisionLogError as exc:
            raise _unavailable(self._decision_id, exc)
        self._services.metrics.decisions.labels(self._effect, self._kind).inc()

    def abandon(self) -> None:
        """Nobody will wait for it (the request failed meanwhile): the row still commits; a failure
        is logged instead of raised."""
        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.error("decision %s not committed: %s", self._decision_id, fut.exception())
        self._fut.add_done_callback(done)


def begin_commit(services: Any, *, kind: str, principal: Principal, action: Action, decision: Decision,
                 decision_id: str, model: str | None = None, attempts: list[dict[str, Any]] | None = None,
                 latency_ms: float | None = None, extra: dict[str, Any] | None = None, ts: float | None = None,
                 dumped: tuple[dict[str, Any], dict[str, Any]] | None = None) -> PendingCommit:
    """Queue one decision row for the group commit; await the result before acting on the decision.
    `dumped`: `dump(action, decision)` made earlier for the same request (a streamed chat logs two
    rows of the same action and decision; the dicts are only read)."""
    action_d, decision_d = dumped or dump(action, decision)
    entry = LogEntry(kind=kind, tenant=principal.tenant, actor=action.actor, session_id=action.session_id,
                     action=action_d, decision=decision_d, model=model, attempts=attempts or [],
                     latency_ms=latency_ms, key_id=principal.key_id, extra=extra or {}, id=decision_id,
                     ts=ts or time.time())
    try:
        fut = services.decision_log.submit(entry)
    except DecisionLogError as exc:
        raise _unavailable(decision_id, exc)
    return PendingCommit(fut, services, decision.effect, kind, decision_id)


async def commit(services: Any, **kw: Any) -> None:
    """Commit one decision row (`begin_commit`'s arguments); returns once it is committed."""
    await begin_commit(services, **kw).wait()


def follow_up(services: Any, *, kind: str, follows: str, decision_id: str, principal: Principal, action: Action,
              decision_d: dict[str, Any], model: str | None, attempts: list[dict[str, Any]], latency_ms: float,
              extra: dict[str, Any]) -> None:
    """Queue the row that completes decision `follows` (a streamed chat's outcome), without waiting.

    It is written after the response has ended, through the same group commit and hash chain;
    the decision itself was committed before the first byte. A log that is not running is
    reported, not raised: the client already has its answer.
    """
    entry = LogEntry(kind=kind, tenant=principal.tenant, actor=action.actor, session_id=action.session_id,
                     action={}, decision=decision_d, model=model, attempts=attempts, latency_ms=latency_ms,
                     key_id=principal.key_id, extra=extra, id=decision_id, ts=time.time(), follows=follows)
    try:
        services.decision_log.enqueue(entry)
    except DecisionLogError as exc:
        log.error("outcome of decision %s not logged: %s", follows, exc)


async def hold(services: Any, *, principal: Principal, action: Action, decision: Decision, decision_id: str,
               callback_url: str | None = None, answers: dict[str, str] | None = None,
               request_id: str | None = None) -> dict[str, Any] | None:
    """Create the approval for a held decision; None when the approvals package is not running."""
    if decision.effect not in HELD or services.approvals is None:
        return None
    try:
        res = await services.approvals.hold(action=action, decision=decision, principal=principal,
                                            callback_url=callback_url, answers=answers,
                                            decision_id=decision_id, request_id=request_id)
    except Exception as exc:
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            raise ApiError(status, str(exc), code="approval_rejected")
        if type(exc).__name__ in ("ApprovalInvalid",):
            raise ApiError(422, str(exc), code="approval_rejected")
        log.exception("approval hold failed for decision %s", decision_id)
        raise ApiError(503, f"the decision {decision_id} was recorded ({decision.effect}) but the approval "
                            f"could not be created: {type(exc).__name__}", code="approvals_unavailable",
                       extra={"decision_id": decision_id}, retry=True)
    return res.model_dump(mode="json") if hasattr(res, "model_dump") else dict(res)


class _Ids:
    """UUID-shaped decision ids: 64 random bits per process + a counter (no syscall per id).

    Unique across replicas with overwhelming probability, ordered within a process.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._n = 0

    def next(self) -> str:
        pid = os.getpid()
        if pid != self._pid:  # new process (fork): new random prefix
            self._pid, self._prefix, self._n = pid, secrets.token_hex(8), 0
        self._n += 1
        return str(uuid.UUID(self._prefix + f"{self._n:016x}"))


_ids = _Ids()


def new_decision_id() -> str:
    return _ids.next()


def outcome_id(decision_id: str) -> str:
    """The id of a streamed chat's outcome row, derived from its decision id (so it can be found):
    `str(uuid.uuid5(uuid.UUID(decision_id), "outcome"))`, computed without building UUID objects
    (a third of the cost, benchmarks/inprocess_bench.py; the tests check both agree)."""
    h = bytearray(hashlib.sha1(bytes.fromhex(decision_id.replace("-", "")) + b"outcome").digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
