"""The approval events' hash chain: every audit event of an approval, tamper-evident.

`append_approval_event(conn, ...)` is the one way an approval event is written. Inside the
caller's transaction it moves the chain head (`approval_event_chain`, one row: the UPDATE takes
its row lock on PostgreSQL and the write lock on SQLite, so appends from every replica are
serialised) and inserts the event with

    chain_seq = head.seq + 1
    prev_hash = head.head_hash
    row_hash  = sha256(prev_hash || event_record(...))

where `event_record` is the canonical JSON (sorted keys, UTF-8) of `chain_seq` and every stored
column of the event except its autoincrement `id` (`verify-log` checks instead that ids increase
with `chain_seq`). The event commits or rolls back with the state change it records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from policyengine.store.approvals_models import ApprovalEventChain, ApprovalEventRow
from policyengine.store.rowhash import canonical_json, row_hash

# The hashed columns of approval_events (besides chain_seq), in the order of the table.
EVENT_FIELDS = ("approval_id", "at", "kind", "from_state", "to_state", "actor", "via", "ip", "user_agent",
                "reason", "details")

_E = ApprovalEventRow.__table__
_HEAD = ApprovalEventChain.__table__


class ApprovalChainError(RuntimeError):
    """The approval event chain cannot be appended to (its head row is missing)."""


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.value) if isinstance(value, Enum) else str(value)


def event_record(chain_seq: int, values: dict[str, Any]) -> str:
    """The canonical text an event's row_hash covers: `chain_seq` and the EVENT_FIELDS of
    `values` as stored (`at` naive UTC with microseconds, `details` as its JSON)."""
    at = values["at"]
    rec = {f: values.get(f) for f in EVENT_FIELDS}
    rec["at"] = at.isoformat(timespec="microseconds") if isinstance(at, datetime) else at
    rec["chain_seq"] = chain_seq
    return canonical_json(rec)


async def append_approval_event(
    conn: AsyncConnection, *, approval_id: str, at: datetime, kind: str, from_state: Any = None,
    to_state: Any = None, actor: str | None = None, via: Any = None, ip: str | None = None,
    user_agent: str | None = None, reason: str | None = None, details: dict[str, Any] | None = None,
) -> int:
    """Insert one approval event into `approval_events`, chained; returns its `chain_seq`.

    Call it inside the transaction that makes the change the event records (it takes the chain
    head's lock until that transaction ends). The arguments are the event's columns; enums are
    stored as their value, an aware `at` as naive UTC, `details` as the JSON it serialises to.
    Raises ApprovalChainError if the head row is missing (run `policyengine migrate`).
    """
    values: dict[str, Any] = {
        "approval_id": approval_id, "at": _naive_utc(at), "kind": _text(kind), "from_state": _text(from_state),
        "to_state": _text(to_state), "actor": actor, "via": _text(via), "ip": ip, "user_agent": user_agent,
        "reason": reason, "details": None if details is None else orjson.loads(canonical_json(details)),
    }
    head = (await conn.execute(
        sa.update(_HEAD).where(_HEAD.c.id == 1).values(seq=_HEAD.c.seq + 1).returning(_HEAD.c.seq, _HEAD.c.head_hash)
    )).first()
    if head is None:
        raise ApprovalChainError("approval event chain head row (approval_event_chain id=1) is missing: "
                                 "run `policyengine migrate`")
    seq, prev = int(head[0]), head[1]
    h = row_hash(prev, event_record(seq, values))
    await conn.execute(_E.insert().values(**values, chain_seq=seq, prev_hash=prev, row_hash=h))
    await conn.execute(sa.update(_HEAD).where(_HEAD.c.id == 1).values(head_hash=h))
    return seq
