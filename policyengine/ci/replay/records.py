"""A logged decision as the replay engine sees it, parsed from any of the accepted shapes.

Accepted shapes (one JSON object per line in a `.jsonl` file, or the `record`
column of the store's `decisions` table):

1. the store's record (`policyengine.store.DecisionLogger.build_record`):
   `{"id", "ts", "tenant", "request": {Action}, "signals", "effect", "routing", "rules", "tags", ...}`
2. `{"id"?, "ts"?, "action": {Action}, "decision": {Decision as JSON}?}`
3. a bare Action (`{"action": "refund", "fields": {...}, "signals": {...}}`): no recorded
   decision, so it can only be compared against a `--baseline` policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REDACTED_PREFIX = "redacted:sha256:"


class RecordError(ValueError):
    """A line/row that is not a logged decision in any accepted shape."""


@dataclass(slots=True)
class LoggedRecord:
    id: str
    ts: float | None
    tenant: str | None
    request: dict[str, Any]  # the Action as logged (fields may be redacted)
    signals: dict[str, Any]  # every signal value the recorded decision used
    recorded: bool  # False: no decision was recorded with the action
    effect: str | None = None
    chain: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    obligations: list[dict[str, Any]] = field(default_factory=list)
    policy_hash: str = ""
    policy_name: str | None = None
    redacted: bool = False
    limits: list[dict[str, Any]] | None = None  # the limits that counted it (None: the log does not say)


def _has_redaction(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith(REDACTED_PREFIX)
    if isinstance(value, dict):
        return any(_has_redaction(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_redaction(v) for v in value)
    return False


def _decision_parts(rec: LoggedRecord, d: dict[str, Any]) -> None:
    rec.effect = d.get("effect")
    routing = d.get("routing")
    rec.chain = (routing.get("chain") if isinstance(routing, dict) else None) or d.get("chain") or d.get("model_chain") or []
    rec.tags = d.get("tags") or []
    rec.rules = d.get("rules") or []
    rec.obligations = d.get("obligations") or []
    rec.policy_hash = d.get("policy_hash") or ""
    rec.policy_name = d.get("policy_name")
    rec.limits = d.get("limits")
    rec.recorded = rec.effect is not None


def parse_record(obj: Any, *, where: str = "", redaction_hint: bool | None = None) -> LoggedRecord:
    """Turn one logged object into a LoggedRecord; RecordError names what is wrong."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}expected a JSON object, got {type(obj).__name__}")
    if "request" in obj:  # the store's record (the hot path of a database replay: one constructor call)
        request = obj["request"]
        if type(request) is not dict:
            raise RecordError(f"{where}`request` must be an object (the Action as logged)")
        routing = obj.get("routing")
        effect = obj.get("effect")
        rec = LoggedRecord(
            str(obj.get("id") or ""), obj.get("ts"), obj.get("tenant"), request, obj.get("signals") or {},
            effect is not None, effect,
            (routing.get("chain") if type(routing) is dict else None) or obj.get("chain") or [],
            obj.get("tags") or [], obj.get("rules") or [], obj.get("obligations") or [],
            obj.get("policy_hash") or "", obj.get("policy_name"))
        if obj.get("limits"):
            rec.limits = obj["limits"]
        elif effect is not None and "ts" in obj and obj.get("kind") == "chat":
            rec.limits = []  # a chat decision row of a version that records limits: none counted it
        if not request.get("action") and obj.get("action"):
            request = {**request, "action": obj["action"]}
            rec.request = request
    elif isinstance(obj.get("action"), dict):  # {"action": {...}, "decision": {...}}
        request = dict(obj["action"])
        decision = obj.get("decision")
        signals = dict((decision or {}).get("signals") or {}) if isinstance(decision, dict) else {}
        rec = LoggedRecord(id=str(obj.get("id") or ""), ts=_ts(obj.get("ts"), where), tenant=obj.get("tenant"),
                           request=request, signals=signals, recorded=False)
        if decision is not None:
            if not isinstance(decision, dict):
                raise RecordError(f"{where}`decision` must be an object (a Decision as JSON)")
            _decision_parts(rec, decision)
    elif isinstance(obj.get("action"), str):  # a bare Action
        request = {k: v for k, v in obj.items() if k not in ("id", "ts")}
        rec = LoggedRecord(id=str(obj.get("id") or ""), ts=_ts(obj.get("ts"), where),
                           tenant=obj.get("tenant"), request=request, signals={}, recorded=False)
    else:
        raise RecordError(f"{where}not a logged decision: expected a store record (with `request`), "
                          "{\"action\": {...}, \"decision\": {...}} or an Action with an `action` name")
    if not isinstance(rec.signals, dict):
        raise RecordError(f"{where}`signals` must be an object")
    if rec.tenant is None:
        rec.tenant = request.get("tenant")
    elif not request.get("tenant"):
        request["tenant"] = rec.tenant  # the service logs the tenant beside the action
    rec.redacted = bool(redaction_hint) and _has_redaction(request) if redaction_hint is not None else (
        _has_redaction(request))
    return rec


def _ts(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_since(value)
        except ValueError as exc:
            raise RecordError(f"{where}{exc}") from None
    raise RecordError(f"{where}`ts` must be epoch seconds or an ISO 8601 date/time")


def parse_since(value: str) -> float:
    """`2026-11-01`, `2026-11-01T12:00:00Z`, or epoch seconds -> epoch seconds (UTC when no zone)."""
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date: {value!r} (expected e.g. 2026-11-01 or 2026-11-01T12:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
