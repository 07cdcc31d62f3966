"""`Call`: one request's context on its way through a gateway path, and its decision rows.

A Call is opened once per request (`open_call`): the caller's Principal, the Action, the
policy snapshot (policy + dispatcher, read once so a reload mid-request cannot mix them),
the Decision the policy made, its unguessable id, and the request's clocks. Every path
(policyengine.gateway.paths) writes its rows through the Call, in the one order the package
docstring states; nothing else in the service writes decision rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Generator
from typing import Any

from pydantic import ValidationError

from policyengine import tracing
from policyengine.dispatch import ChainDispatcher
from policyengine.errors import describe_validation
from policyengine.evaluator import CompiledPolicy
from policyengine.gateway.errors import (
    DecisionLogUnavailable,
    EvaluationFailed,
    InvalidAction,
    TenantMismatch,
    UntrustedInput,
)
from policyengine.gateway.runtime import Runtime
from policyengine.signals.intent import has_intent_model  # already loaded by the runtime's provider
from policyengine.store import DecisionLogError, LogEntry
from policyengine.store.logger import VERDICT_KIND
from policyengine.types import Action, Decision, Principal

__all__ = ["HELD", "Call", "PendingCommit", "make_action", "merged_record", "new_decision_id", "open_call",
           "outcome_id"]

log = logging.getLogger("policyengine.gateway")

HELD = ("require_approval", "escalate")
# Key attributes that pin a field of the action: an app key cannot claim another tier.
PINNED = ("tenant_tier", "channel", "actor_role")
# Signals that run the embedding model (tens of ms): computed in a worker thread, never on the loop.
SLOW_SIGNALS = frozenset({"sentiment"})


def _runs_a_model(names: frozenset[str] | set[str]) -> bool:
    """Does computing `names` run the embedding model: sentiment, or a lexicon mention read by its
    intent model (`by intent`, `by both`, or no mode on a lexicon with one)? Those are evaluated in
    a worker thread, never on the event loop."""
    for name in names:
        if name in SLOW_SIGNALS:
            return True
        if name.startswith("mentions:"):
            parts = name.split(":")
            if (len(parts) == 3 and parts[2] in ("intent", "both")) or (len(parts) == 2 and has_intent_model(parts[1])):
                return True
    return False


def _trusted(principal: Principal, attribute: str, name: str) -> bool:
    """Whether the key's `attribute` (`trusted_signals` / `trusted_fields`) allows the request to
    set `name`: `true` (or the string "true" / "*") allows everything; a list, or a
    comma-separated string as `keys create --attr` stores it, allows the names it holds, and a
    family name allows its members (`mentions` allows `mentions:litigation`)."""
    v = principal.attributes.get(attribute)
    if v is True:
        return True
    if isinstance(v, str):
        v = [p.strip() for p in v.split(",")]
    if not isinstance(v, list | tuple):
        return False
    allowed = {str(x) for x in v}
    return bool(allowed & {"*", "true", name, name.partition(":")[0]})


def _signal_names(signals: dict[str, Any]) -> list[str]:
    """The signal names a request's `signals` object sets (`mentions: {LEX: ...}` sets `mentions:LEX`)."""
    names: list[str] = []
    for k, v in signals.items():
        if k == "mentions" and isinstance(v, dict):
            names.extend(f"mentions:{lex}" for lex in v)
        else:
            names.append(str(k))
    return names


def _pinned(principal: Principal, attr: str) -> Any:
    v = principal.attributes.get(attr)
    if v is None and attr == "tenant_tier":
        v = principal.attributes.get("tier")
    return v


def make_action(data: dict[str, Any], principal: Principal, *, channel: str | None = None) -> Action:
    """Validate `data` as an Action for this caller.

    `channel`, when given, is the action's channel unless the key pins one or the request
    claims one (the transport's own name, e.g. `mcp`).

    The tenant always comes from the API key (a different one is refused). The key's
    attributes are authoritative: a key that pins `tenant_tier` (or `tier`), `channel` or
    `actor_role` sets it, and a request may claim a value of its own only when the key's
    `trusted_fields` attribute names the field; precomputed `signals` (which win over the
    computed ones, e.g. `sentiment`, `mentions:litigation`) only when its `trusted_signals`
    attribute allows them. Anything else is refused with `UntrustedInput` (403) naming the
    attribute. Raises `InvalidAction` naming the first fields at fault.
    """
    tenant = data.get("tenant")
    if tenant is not None and tenant != principal.tenant:
        raise TenantMismatch(f"tenant {tenant!r} does not match this API key's tenant {principal.tenant!r}",
                             param="tenant")
    data = {**data, "tenant": principal.tenant}
    for attr in PINNED:
        pinned = _pinned(principal, attr)
        claimed = data.get(attr)
        if claimed is not None and claimed != pinned and not _trusted(principal, "trusted_fields", attr):
            why = (f"this API key sets {attr} to {pinned!r}" if pinned is not None
                   else f"this API key does not let requests set {attr}")
            raise UntrustedInput(f"{attr} {claimed!r} refused: {why} (the key attribute trusted_fields must "
                                 f"name {attr!r} for a request to set it)", param=attr,
                                 extra={"attribute": "trusted_fields"})
        if pinned is not None:
            data[attr] = pinned
    if channel is not None and data.get("channel") is None:
        data["channel"] = channel
    signals = data.get("signals")
    if isinstance(signals, dict) and signals:
        refused = [n for n in _signal_names(signals) if not _trusted(principal, "trusted_signals", n)]
        if refused:
            raise UntrustedInput(f"precomputed signals refused ({', '.join(refused[:5])}): this API key may not "
                                 "supply signals (the key attribute trusted_signals must allow them)",
                                 param="signals", extra={"attribute": "trusted_signals"})
    try:
        return Action.model_validate(data)
    except ValidationError as exc:
        msg, param = describe_validation(list(exc.errors()))
        raise InvalidAction(f"invalid action: {msg}", param=param)


class _Ids:
    """UUID-shaped decision ids that cannot be guessed or counted: a keyed PRF over a counter.

    Each id is blake2b (keyed with 32 random bytes per process, re-keyed after a fork) of the
    process's next counter value, 16 bytes with the UUID version-4 and RFC 4122 variant bits
    set. Distinct counter values give distinct ids under one key; two processes have
    different keys; without the key nothing about one id (its order, how many came before,
    which process made it) can be read from another. No syscall per id, and about half the cost
    of the counter-in-a-`uuid.UUID` ids it replaced (1.9 vs 3.5 us on an idle core;
    benchmarks/inprocess_bench.py --only ids).
    """

    def __init__(self) -> None:
        self._pid = -1
        self._n = 0
        self._base = hashlib.blake2b(digest_size=16)

    def next(self) -> str:
        """The next id."""
        pid = os.getpid()
        if pid != self._pid:  # new process (fork): new key, so no two processes share a sequence
            self._pid, self._n = pid, 0
            self._base = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=16)
        self._n += 1
        h = self._base.copy()
        h.update(self._n.to_bytes(8, "little"))
        x = h.hexdigest()
        return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{'89ab'[int(x[16], 16) & 3]}{x[17:20]}-{x[20:]}"


_ids = _Ids()


def new_decision_id() -> str:
    """A fresh decision id (UUID-shaped, version 4, unguessable, unique across replicas)."""
    return _ids.next()


def outcome_id(decision_id: str) -> str:
    """The id of a decision's outcome row, derived from its decision id (so it can be found):
    `str(uuid.uuid5(uuid.UUID(decision_id), "outcome"))`, computed without building UUID objects
    (a third of the cost, benchmarks/inprocess_bench.py; the tests check both agree)."""
    h = bytearray(hashlib.sha1(bytes.fromhex(decision_id.replace("-", "")) + b"outcome").digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _unavailable(call: Call, exc: Exception) -> DecisionLogUnavailable:
    log.error("decision %s not committed: %s", call.decision_id, exc)
    return DecisionLogUnavailable("the decision log is unavailable; the decision was not recorded and must "
                                  "not be acted on", decision_id=call.decision_id)


class PendingCommit:
    """A row on its way into the log. `await` it before acting on the decision it records: it
    returns once the row is committed, or raises `DecisionLogUnavailable` when it cannot be."""

    __slots__ = ("_call", "_counted", "_fut")

    def __init__(self, fut: asyncio.Future[Any], call: Call, counted: bool) -> None:
        self._fut, self._call, self._counted = fut, call, counted

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    async def wait(self) -> None:
        """Wait for the commit; raises `DecisionLogUnavailable` when it failed."""
        try:
            await self._fut
        except DecisionLogError as exc:
            raise _unavailable(self._call, exc)
        if self._counted:
            self._call.runtime.metrics.decisions.labels(self._call.decision.effect, self._call.kind).inc()

    @classmethod
    def confirmed(cls, call: Call) -> PendingCommit:
        """A commit that already happened (the row was recorded and confirmed earlier)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return cls(fut, call, False)

    def abandon(self) -> None:
        """Nobody will wait for it (the request failed meanwhile): the row still commits; a failure
        is logged instead of raised."""
        decision_id = self._call.decision_id

        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                log.error("decision %s not committed: %s", decision_id, fut.exception())

        self._fut.add_done_callback(done)


class Call:
    """One request's context: who, what, the policy snapshot, the decision and its id.

    `decision` may be replaced by a path before the decision row is recorded (e.g. a model
    choice the allowlist refuses turns it into a deny); after `record()` it is what the log
    says. `dumped` is the action and decision as the log records them, made once.
    `resume_id` / `hold_wait_s` say how a held chat resumes (policyengine.gateway.held).
    """

    __slots__ = ("_decision", "_dumped", "action", "admission", "decision_id", "dispatcher", "hold_wait_s", "kind",
                 "policy", "principal", "request_id", "response_model", "resume_id", "runtime", "t0", "trace", "ts")

    def __init__(self, runtime: Runtime, principal: Principal, action: Action, policy: CompiledPolicy,
                 dispatcher: ChainDispatcher | None, decision: Decision, *, kind: str, t0: float,
                 request_id: str | None = None) -> None:
        self.runtime, self.principal, self.action = runtime, principal, action
        self.policy, self.dispatcher, self._decision = policy, dispatcher, decision
        self.kind, self.t0, self.ts, self.request_id = kind, t0, time.time(), request_id
        self.decision_id = new_decision_id()
        self._dumped: tuple[dict[str, Any], dict[str, Any]] | None = None
        # a held chat: the approval the request says it resumes, and how long it may wait for a
        # reviewer (seconds, already capped by the transport); set by the transport
        self.resume_id: str | None = None
        self.hold_wait_s: float = 0.0
        # what this call holds on the limit counters (policyengine.gateway.limits.admit), until charged
        self.admission: Any = None
        # tracing (policyengine.tracing): the decision span's context, parent of the attempt spans
        # (None when tracing is off), and the upstream's own name for the model that answered
        self.trace: Any = None
        self.response_model: str | None = None

    @property
    def decision(self) -> Decision:
        """The decision this call acts on."""
        return self._decision

    @decision.setter
    def decision(self, decision: Decision) -> None:
        self._decision, self._dumped = decision, None

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (time.perf_counter() - self.t0) * 1000

    def dumped(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The action and the current decision as JSON dicts (made once; only read afterwards)."""
        if self._dumped is None:
            self._dumped = (self.action.model_dump(mode="json", exclude_defaults=True),
                            self.decision.model_dump(mode="json"))
        return self._dumped

    def record(self, *, extra: dict[str, Any], model: str | None = None,
               attempts: list[dict[str, Any]] | None = None) -> PendingCommit:
        """Queue the decision row (step 2 of the commit order); await the result before acting."""
        action_d, decision_d = self.dumped()
        entry = LogEntry(kind=self.kind, tenant=self.principal.tenant, actor=self.action.actor,
                         session_id=self.action.session_id, action=action_d, decision=decision_d, model=model,
                         attempts=attempts or [], latency_ms=self.elapsed_ms(), key_id=self.principal.key_id,
                         extra=extra, id=self.decision_id, ts=self.ts)
        return self._submit(entry, counted=True)

    def outcome(self, *, outcome: str, model: str | None, attempts: list[dict[str, Any]],
                decision: Decision | None = None, wait: bool = False, kind: str = "chat_outcome",
                **extra: Any) -> PendingCommit | None:
        """The row that completes the decision row with what only the answer tells (step 6).

        By default it is queued and never awaited (it rides along with the next commit; a
        log that is not running is reported, not raised: the client already has its answer).
        With `wait=True` (a decision made after the answers: dual-model verification) it is
        a commit to await before acting, like the decision row. `decision`, when given, is
        the decision the answers led to: the row is then a verdict (`kind=chat_verdict`) with
        that decision's rules, signals and obligations; otherwise (`kind=chat_outcome`) it
        repeats only the original decision's effect, routing and tags. `kind` names another
        follow-up kind (one of `FOLLOW_UP_KINDS`, e.g. `mcp_outcome`) for a row that is not a chat's.
        """
        if tracing.enabled():
            tracing.attempts(self.trace, attempts, self.policy.models, model=model, usage=extra.get("usage"),
                             response_model=self.response_model,
                             operation="embeddings" if self.action.action == "embeddings" else "chat")
        decision_d = decision.model_dump(mode="json") if decision is not None else self.dumped()[1]
        entry = LogEntry(kind=kind if decision is None else VERDICT_KIND, tenant=self.principal.tenant, actor=self.action.actor,
                         session_id=self.action.session_id, action={}, decision=decision_d, model=model,
                         attempts=attempts, latency_ms=self.elapsed_ms(), key_id=self.principal.key_id,
                         extra={"outcome": outcome, "decision_id": self.decision_id, **extra},
                         id=outcome_id(self.decision_id), ts=time.time(), follows=self.decision_id)
        if wait:
            return self._submit(entry, counted=False)
        try:
            self.runtime.log.enqueue(entry)
        except DecisionLogError as exc:
            log.error("outcome of decision %s not logged: %s", self.decision_id, exc)
        return None

    def _submit(self, entry: LogEntry, *, counted: bool) -> PendingCommit:
        try:
            fut = self.runtime.log.submit(entry)
        except DecisionLogError as exc:
            raise _unavailable(self, exc)
        return PendingCommit(fut, self, counted)


async def evaluate(runtime: Runtime, policy: CompiledPolicy, action: Action) -> Decision:
    """The policy's decision on `action`: inline (microseconds), or in a worker thread when a rule
    needs a signal that runs the embedding model. Raises `EvaluationFailed` on a value of the
    wrong kind."""
    try:
        # signals_needed leaves out values the caller supplied: those cost nothing here
        if action.text and _runs_a_model(policy.signals_needed(action)):
            return await asyncio.to_thread(policy.evaluate, action, runtime.signals)
        return policy.evaluate(action, runtime.signals)
    except ValueError as exc:  # a value the policy cannot read, said in the value's terms
        raise EvaluationFailed(f"cannot evaluate this action: {exc}")
    except (TypeError, KeyError, ArithmeticError) as exc:  # the detail is the engine's, not the caller's
        log.warning("cannot evaluate action %r: %s: %s", action.action, type(exc).__name__, exc)
        raise EvaluationFailed("cannot evaluate this action: a field or signal has a value of the wrong kind "
                               "for the policy's conditions (e.g. text where a number or money is compared)")


async def open_call(runtime: Runtime, principal: Principal, action: Action, *, kind: str, t0: float,
                    request_id: str | None = None) -> Call:
    """Step 1 of every path: read the policy snapshot once, evaluate, and open the Call."""
    snap = runtime.policies.snapshot()
    decision = await evaluate(runtime, snap.policy, action)
    return Call(runtime, principal, action, snap.policy, snap.dispatcher, decision, kind=kind, t0=t0,
                request_id=request_id)


# What a follow-up row says about the decision itself (a verdict's decision replaces the first's).
_DECIDED = ("effect", "tags", "rules", "signals", "obligations", "verification")


def merged_record(decision: dict[str, Any], outcome: dict[str, Any] | None) -> dict[str, Any]:
    """One chat decision as a reader wants it: the decision row's record with what its outcome
    row tells (the answering model, every attempt, the outcome's extra) and, for a verdict, the
    decision made on the answers. `outcome` None: the decision row as it is."""
    if outcome is None:
        return decision
    merged = {**decision, "model": outcome.get("model"), "attempts": outcome.get("attempts") or [],
              "extra": {**(decision.get("extra") or {}), **(outcome.get("extra") or {})}}
    if outcome.get("kind") == VERDICT_KIND:
        merged.update({k: outcome[k] for k in _DECIDED if k in outcome})
    return merged
