"""Binding an approval to the exact action the reviewer sees.

The hash is sha256 over canonical JSON (sorted keys, no insignificant
whitespace, UTF-8, Decimals/money rendered as strings), so the same action
always hashes the same on every replica and in the Python client.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable in an action: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, compact separators, non-ASCII kept."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_none=True)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def action_view(action: Any) -> dict[str, Any]:
    """The part of an action a reviewer approves: who asks what, with which data.

    Pre-computed signals are evidence, not part of the action, so they are left out:
    approving "refund 150 GBP to order 42" must not depend on a sentiment score.
    """
    data = action.model_dump(mode="json", exclude_none=True) if isinstance(action, BaseModel) else dict(action)
    data.pop("signals", None)
    if not data.get("fields"):
        data.pop("fields", None)
    return data


def action_hash(action: Any) -> str:
    """sha256 hex of the canonical JSON of the reviewer's view of the action."""
    return hashlib.sha256(canonical_json(action_view(action)).encode("utf-8")).hexdigest()
