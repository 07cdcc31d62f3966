"""The tamper-evident chains: canonical JSON, row hashes, and verification.

Decisions: row_hash = sha256(prev_hash || record), where `record` is the canonical JSON
(sorted keys, no whitespace, UTF-8) of the decision. Rows are chained in `seq` order starting
from the genesis hash (64 zeros); `seq` has no gaps. Every other column of `decisions` is a copy
of a record field kept for queries (`INDEXED_FIELDS`) and must equal it, so an edit of any column
a query filters on is detected as surely as an edit of the record. (This is the only hash scheme
there has been: rows of every version verify.)

Approval events: chained the same way in `chain_seq` order over their own canonical record
(policyengine.store.approval_chain).

Both chains end in a head row that the writers move in the same transaction as the rows. A
head kept outside the database (an `Anchor`: `verify-log --expect-head`, or a signed checkpoint)
is what detects a log rewritten or emptied together with its head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from policyengine.store.approval_chain import EVENT_FIELDS, event_record
from policyengine.store.approvals_models import ApprovalEventChain, ApprovalEventRow
from policyengine.store.models import GENESIS_HASH, DecisionChain, DecisionRecord
from policyengine.store.rowhash import row_hash

# Columns that duplicate a field of the record (for queries) and must agree with it: every column
# of `decisions` but seq (the chain order), record, prev_hash and row_hash (the chain itself).
INDEXED_FIELDS = ("id", "ts", "kind", "tenant", "actor", "session_id", "action", "effect", "model",
                  "policy_hash")

ChainName = Literal["decisions", "approval_events"]


@dataclass(frozen=True)
class Anchor:
    """A chain head recorded outside the database.

    With `seq`, row `seq` of the chain must exist and have hash `head` (the chain may have grown
    since); `seq` 0 is the genesis hash. Without `seq`, `head` must be the chain's current head.
    `source` names where the anchor came from, for the report.
    """

    head: str
    seq: int | None = None
    chain: ChainName = "decisions"
    source: str = "--expect-head"

    @classmethod
    def parse(cls, text: str, source: str = "--expect-head") -> Anchor:
        """`HASH` or `HASH:COUNT` (64 hex digits, a row count). Raises ValueError."""
        head, _, count = text.strip().partition(":")
        head = head.lower()
        if len(head) != 64 or any(c not in "0123456789abcdef" for c in head):
            raise ValueError(f"expected head must be 64 hex digits, got {head!r}")
        if count and (not count.isdigit()):
            raise ValueError(f"expected count must be a non-negative integer, got {count!r}")
        return cls(head=head, seq=int(count) if count else None, source=source)


@dataclass
class VerifyResult:
    """What `verify_chain` found. `ok` is False when either chain is broken or an anchor fails;
    `problem` says why, `table` / `first_bad_seq` / `first_bad_id` name the first bad row."""

    ok: bool
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_bad_seq: int | None = None
    first_bad_id: str | None = None
    problem: str | None = None
    details: list[str] = field(default_factory=list)
    table: str | None = None  # the table of the first bad row: decisions | approval_events
    approval_events: int = 0  # chained approval events verified
    approval_events_unchained: int = 0  # events written before the chain existed
    approval_head_seq: int = 0
    approval_head_hash: str = GENESIS_HASH
    anchors_checked: int = 0


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One connection that sees one consistent state of the database for every statement (a
    REPEATABLE READ, read-only transaction on PostgreSQL; a read transaction on SQLite's WAL), so
    the heads and the rows agree while writers keep appending."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        else:
            conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()


def _iter_rows(conn: Connection, cols: Sequence[Any], seq_col: Any, batch: int = 5000,
               where: Any = None) -> Iterator[Any]:
    last = 0
    while True:
        q = sa.select(*cols).where(seq_col > last)
        if where is not None:
            q = q.where(where)
        rows = conn.execute(q.order_by(seq_col).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = getattr(rows[-1], seq_col.key)


def _bad(res: VerifyResult, table: str, seq: int | None, row_id: Any, problem: str) -> VerifyResult:
    res.ok = False
    res.table, res.first_bad_seq, res.first_bad_id, res.problem = table, seq, None if row_id is None else str(row_id), problem
    return res


def _verify_decisions(conn: Connection, res: VerifyResult, wanted: set[int]) -> dict[int, str]:
    """Walk `decisions` in order; fills `res`; returns the hashes of the `wanted` seqs found."""
    found: dict[int, str] = {0: GENESIS_HASH}
    cols = [DecisionRecord.seq, DecisionRecord.prev_hash, DecisionRecord.row_hash, DecisionRecord.record,
            *(getattr(DecisionRecord, f) for f in INDEXED_FIELDS if f != "id"), DecisionRecord.id]
    expected_prev, expected_seq = GENESIS_HASH, 1
    for r in _iter_rows(conn, cols, DecisionRecord.seq):
        if r.seq != expected_seq:
            _bad(res, "decisions", r.seq, r.id, f"sequence gap: expected seq {expected_seq}, found {r.seq} "
                                                "(rows deleted?)")
            return found
        if r.prev_hash != expected_prev:
            _bad(res, "decisions", r.seq, r.id,
                 f"prev_hash {r.prev_hash[:16]}... does not match the previous row's hash "
                 f"{expected_prev[:16]}... (row inserted, deleted or reordered)")
            return found
        computed = row_hash(r.prev_hash, r.record)
        if computed != r.row_hash:
            _bad(res, "decisions", r.seq, r.id, f"row_hash mismatch: stored {r.row_hash[:16]}..., computed "
                                                f"{computed[:16]}... (record edited)")
            return found
        try:
            rec = orjson.loads(r.record)
        except orjson.JSONDecodeError:
            _bad(res, "decisions", r.seq, r.id, "record is not valid JSON")
            return found
        for f in INDEXED_FIELDS:
            if rec.get(f) != getattr(r, f):
                _bad(res, "decisions", r.seq, r.id, f"column {f}={getattr(r, f)!r} disagrees with the hashed "
                                                    f"record ({rec.get(f)!r}): column edited")
                return found
        if r.seq in wanted:
            found[r.seq] = r.row_hash
        res.rows += 1
        expected_prev = r.row_hash
        expected_seq += 1
    res.head_seq, res.head_hash = expected_seq - 1, expected_prev
    head = conn.execute(sa.select(DecisionChain.seq, DecisionChain.head_hash).where(DecisionChain.id == 1)).first()
    if head is None:
        _bad(res, "decisions", None, None, "chain head row (decision_chain id=1) is missing")
    elif head.seq != res.head_seq or head.head_hash != res.head_hash:
        _bad(res, "decisions", expected_seq, None,
             f"chain head says seq {head.seq} / {head.head_hash[:16]}..., but the last row is seq {res.head_seq} / "
             f"{res.head_hash[:16]}... (rows truncated from the end, or appended without moving the head?)")
    return found


def _verify_approval_events(conn: Connection, res: VerifyResult, wanted: set[int]) -> dict[int, str]:
    """Walk the chained approval events in `chain_seq` order; fills `res`; returns the hashes of
    the `wanted` seqs found. Unchained events (NULL chain columns) are allowed only before the
    first chained one: they were written before the chain existed."""

    found: dict[int, str] = {0: GENESIS_HASH}
    insp = sa.inspect(conn)
    if not insp.has_table("approval_events"):
        return found
    if "chain_seq" not in {c["name"] for c in insp.get_columns("approval_events")}:
        res.details.append("approval events are not chained in this database (run `policyengine migrate`)")
        return found
    if not insp.has_table("approval_event_chain"):
        _bad(res, "approval_events", None, None, "approval event chain head table (approval_event_chain) is missing")
        return found
    E = ApprovalEventRow.__table__
    cols = [E.c.id, E.c.chain_seq, E.c.prev_hash, E.c.row_hash, *(E.c[f] for f in EVENT_FIELDS)]
    expected_prev, expected_seq, last_id = GENESIS_HASH, 1, None
    first_id: Any = None
    for r in _iter_rows(conn, cols, E.c.chain_seq):
        if first_id is None:
            first_id = r.id
        if r.chain_seq != expected_seq:
            _bad(res, "approval_events", r.chain_seq, r.id,
                 f"approval event sequence gap: expected chain_seq {expected_seq}, found {r.chain_seq} (events deleted?)")
            return found
        if r.prev_hash != expected_prev:
            _bad(res, "approval_events", r.chain_seq, r.id,
                 f"approval event prev_hash {str(r.prev_hash)[:16]}... does not match the previous event's hash "
                 f"{expected_prev[:16]}... (event inserted, deleted or reordered)")
            return found
        computed = row_hash(r.prev_hash, event_record(r.chain_seq, r._mapping))
        if computed != r.row_hash:
            _bad(res, "approval_events", r.chain_seq, r.id,
                 f"approval event row_hash mismatch: stored {str(r.row_hash)[:16]}..., computed {computed[:16]}... "
                 "(event edited)")
            return found
        if last_id is not None and r.id <= last_id:
            _bad(res, "approval_events", r.chain_seq, r.id,
                 f"approval event id {r.id} is not after the previous event's id {last_id} (ids edited)")
            return found
        if r.chain_seq in wanted:
            found[r.chain_seq] = r.row_hash
        res.approval_events += 1
        last_id, expected_prev = r.id, r.row_hash
        expected_seq += 1
    res.approval_head_seq, res.approval_head_hash = expected_seq - 1, expected_prev
    unchained = sa.select(sa.func.count(), sa.func.min(E.c.id)).where(E.c.row_hash.is_(None) | E.c.chain_seq.is_(None))
    res.approval_events_unchained = int(conn.execute(unchained).one()[0])
    if first_id is not None:
        late = conn.execute(unchained.where(E.c.id > first_id)).one()
        if late[0]:
            _bad(res, "approval_events", None, late[1],
                 f"{late[0]} approval event(s) written after the chain began are not chained, the first id={late[1]} "
                 "(inserted outside append_approval_event, or their chain columns cleared)")
            return found
    H = ApprovalEventChain.__table__
    head = conn.execute(sa.select(H.c.seq, H.c.head_hash).where(H.c.id == 1)).first()
    if head is None:
        _bad(res, "approval_events", None, None, "approval event chain head row (approval_event_chain id=1) is missing")
    elif head.seq != res.approval_head_seq or head.head_hash != res.approval_head_hash:
        _bad(res, "approval_events", expected_seq, None,
             f"approval event chain head says seq {head.seq} / {head.head_hash[:16]}..., but the last chained event "
             f"is seq {res.approval_head_seq} / {res.approval_head_hash[:16]}... (events deleted from the end?)")
    return found


def _check_anchor(res: VerifyResult, a: Anchor, found: dict[int, str]) -> str | None:
    what = "decision log" if a.chain == "decisions" else "approval event chain"
    count, head = (res.rows, res.head_hash) if a.chain == "decisions" else (res.approval_events, res.approval_head_hash)
    if a.seq is None:
        if head != a.head:
            return (f"{what} head is {head[:16]}... at {count} rows, but {a.source} expects head "
                    f"{a.head[:16]}... (the log was rewritten, extended or emptied)")
        return None
    if count < a.seq:
        return (f"{what} has {count} rows, but {a.source} recorded row {a.seq} with hash {a.head[:16]}...: "
                "rows were deleted and the head reset (or this is not the database the anchor was taken from)")
    if found.get(a.seq) != a.head:
        return (f"{what} row {a.seq} has hash {str(found.get(a.seq))[:16]}..., but {a.source} recorded "
                f"{a.head[:16]}... (the log was rewritten from an earlier row)")
    return None


def verify_chain(engine: Engine, anchors: Sequence[Anchor] = ()) -> VerifyResult:
    """Walk the decision log and the approval event chain in order, in one consistent snapshot.

    `ok` only if: every row's hash and prev_hash are right and seq is gap-free; every query
    column equals its record field; each chain's head row names its last row; no unchained
    approval event was written after the first chained one; and every anchor holds (the chain
    contains the anchored head at the anchored count). Otherwise the first bad row is named.
    """
    res = VerifyResult(ok=True)
    want_d = {a.seq for a in anchors if a.chain == "decisions" and a.seq}
    want_e = {a.seq for a in anchors if a.chain == "approval_events" and a.seq}
    with _snapshot(engine) as conn:
        found_d = _verify_decisions(conn, res, want_d)
        found_e = _verify_approval_events(conn, res, want_e) if res.ok else {}
    for a in anchors:
        problem = _check_anchor(res, a, found_d if a.chain == "decisions" else found_e)
        if problem is not None:
            if res.ok:
                res.ok, res.problem, res.table = False, problem, a.chain
            else:
                res.details.append(problem)
        res.anchors_checked += 1
    return res
