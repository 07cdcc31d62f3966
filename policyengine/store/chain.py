"""The tamper-evident chain: canonical JSON, row hashes, and verification.

row_hash = sha256(prev_hash || record), where `record` is the canonical JSON
(sorted keys, no whitespace, UTF-8) of the decision. Rows are chained in `seq`
order starting from the genesis hash (64 zeros); `seq` has no gaps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from policyengine.store.models import GENESIS_HASH, DecisionChain, DecisionRecord

# Columns that duplicate a field of the record (for queries) and must agree with it.
INDEXED_FIELDS = ("id", "kind", "tenant", "actor", "session_id", "action", "effect", "model",
                  "policy_hash")


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def canonical_json(value: Any) -> str:
    return orjson.dumps(value, default=_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def row_hash(prev_hash: str, record: str) -> str:
    return hashlib.sha256(prev_hash.encode() + record.encode()).hexdigest()


@dataclass
class VerifyResult:
    ok: bool
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_bad_seq: int | None = None
    first_bad_id: str | None = None
    problem: str | None = None
    details: list[str] = field(default_factory=list)


def _iter_rows(engine: Engine, batch: int = 5000) -> Iterator[Any]:
    cols = [DecisionRecord.seq, DecisionRecord.prev_hash, DecisionRecord.row_hash, DecisionRecord.record,
            *(getattr(DecisionRecord, f) for f in INDEXED_FIELDS)]
    last = 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(
                sa.select(*cols).where(DecisionRecord.seq > last).order_by(DecisionRecord.seq).limit(batch)
            ).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].seq


def verify_chain(engine: Engine) -> VerifyResult:
    """Walk the whole log in order; report the first row that breaks the chain."""
    res = VerifyResult(ok=True)
    expected_prev = GENESIS_HASH
    expected_seq = 1

    def bad(r: Any, problem: str) -> VerifyResult:
        res.ok = False
        res.first_bad_seq = r.seq
        res.first_bad_id = r.id
        res.problem = problem
        return res

    for r in _iter_rows(engine):
        if r.seq != expected_seq:
            return bad(r, f"sequence gap: expected seq {expected_seq}, found {r.seq} (rows deleted?)")
        if r.prev_hash != expected_prev:
            return bad(r, f"prev_hash {r.prev_hash[:16]}... does not match the previous row's hash "
                          f"{expected_prev[:16]}... (row inserted, deleted or reordered)")
        computed = row_hash(r.prev_hash, r.record)
        if computed != r.row_hash:
            return bad(r, f"row_hash mismatch: stored {r.row_hash[:16]}..., computed {computed[:16]}... "
                          "(record edited)")
        try:
            rec = orjson.loads(r.record)
        except orjson.JSONDecodeError:
            return bad(r, "record is not valid JSON")
        for f in INDEXED_FIELDS:
            if rec.get(f) != getattr(r, f):
                return bad(r, f"column {f}={getattr(r, f)!r} disagrees with the hashed record "
                              f"({rec.get(f)!r}): column edited")
        res.rows += 1
        expected_prev = r.row_hash
        expected_seq += 1
    with engine.connect() as conn:
        head = conn.execute(sa.select(DecisionChain.seq, DecisionChain.head_hash)
                            .where(DecisionChain.id == 1)).first()
    res.head_seq, res.head_hash = expected_seq - 1, expected_prev
    if head is None:
        res.ok, res.problem = False, "chain head row (decision_chain id=1) is missing"
    elif head.seq != expected_seq - 1 or head.head_hash != expected_prev:
        res.ok = False
        res.problem = (f"chain head says seq {head.seq} / {head.head_hash[:16]}..., but the last row is "
                       f"seq {expected_seq - 1} / {expected_prev[:16]}... (rows truncated from the end?)")
        res.first_bad_seq = expected_seq
    return res
