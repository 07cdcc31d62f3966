"""The row hash of both chains: canonical JSON and sha256(prev_hash || record).

A leaf of the store: the decision log's writer, the approval-event chain and the verifier all
hash rows with these two functions, so a row written by one verifies in the other.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["canonical_json", "row_hash"]


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same text."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def row_hash(prev_hash: str, record: str) -> str:
    """sha256(prev_hash || record), hex."""
    return hashlib.sha256(prev_hash.encode() + record.encode()).hexdigest()
