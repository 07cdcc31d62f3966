"""What a condition's path (`tenant.tier`, `amount`, `sentiment`) reads from an Action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from policyengine.types import Action

MISSING: Any = object()

# Attributes of the Action itself. Absent (None) means "not tagged": an equality
# or membership test on them is simply false, never fail-safe.
BUILTIN: dict[str, Callable[[Action], Any]] = {
    "action": lambda a: a.action,
    "tenant": lambda a: a.tenant,
    "tenant.id": lambda a: a.tenant,
    "tenant.tier": lambda a: a.tenant_tier,
    "tenant.channel": lambda a: a.channel,
    "channel": lambda a: a.channel,
    "user": lambda a: a.actor,
    "user.id": lambda a: a.actor,
    "user.role": lambda a: a.actor_role,
    "actor": lambda a: a.actor,
    "actor.id": lambda a: a.actor,
    "actor.role": lambda a: a.actor_role,
    "use_case": lambda a: a.use_case,
    "session": lambda a: a.session_id,
    "session.id": lambda a: a.session_id,
    "session_id": lambda a: a.session_id,
    "text": lambda a: a.text,
    "requested_model": lambda a: a.requested_model,
    "prompt_tokens": lambda a: a.prompt_tokens,
}
# The Action attribute each built-in reads (for fast attribute getters).
BUILTIN_ATTR: dict[str, str] = {
    "action": "action", "tenant": "tenant", "tenant.id": "tenant", "tenant.tier": "tenant_tier",
    "tenant.channel": "channel", "channel": "channel", "user": "actor", "user.id": "actor", "user.role": "actor_role",
    "actor": "actor", "actor.id": "actor", "actor.role": "actor_role", "use_case": "use_case",
    "session": "session_id", "session.id": "session_id", "session_id": "session_id", "text": "text",
    "requested_model": "requested_model", "prompt_tokens": "prompt_tokens",
}
assert set(BUILTIN_ATTR) == set(BUILTIN)
BUILTIN_TYPES: dict[str, str] = {k: "str" for k in BUILTIN}
BUILTIN_TYPES["prompt_tokens"] = "num"
NAMESPACES = ("tenant", "user", "actor", "session")

# Signals: numbers in [0, 1], supplied with the action or computed lazily.
SIGNALS = ("sentiment", "confidence", "divergence")

PathKind = Literal["builtin", "signal", "field"]


def classify(path: str) -> tuple[PathKind, str]:
    """-> (kind, key): builtin attribute, signal name, or a dotted path into `action.fields`."""
    if path in BUILTIN:
        return "builtin", path
    if path in SIGNALS:
        return "signal", path
    if path.startswith("signals."):
        return "signal", path[len("signals."):]
    if path.startswith("fields."):
        return "field", path[len("fields."):]
    return "field", path


def unknown_builtin(path: str) -> bool:
    """`tenant.tiers`: a misspelt attribute of a built-in namespace (not an action field)."""
    head = path.split(".", 1)[0]
    return head in NAMESPACES and "." in path and path not in BUILTIN


def field_getter(key: str) -> Callable[[Action], Any]:
    parts = key.split(".")
    if len(parts) == 1:
        k = parts[0]
        return lambda a: a.fields.get(k, MISSING)

    def get(a: Action) -> Any:
        cur: Any = a.fields
        for p in parts:
            if not isinstance(cur, dict) or p not in cur:
                return MISSING
            cur = cur[p]
        return cur

    return get
