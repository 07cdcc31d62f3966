"""One bad row never fails another (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
import sqlalchemy as sa

from policyengine.store import (
    DecisionLogError,
    DecisionLogger,
    LogEntry,
    make_sync_engine,
    upgrade,
    verify_chain,
)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pe.db'}"
    return request.getfixturevalue("pg_schema_url")


def _entry(i: int, tenant: str = "acme", **kw) -> LogEntry:
    kw.setdefault("actor", f"user{i % 3}")
    kw.setdefault("kind", "evaluate")
    return LogEntry(tenant=tenant, action={"action": "refund", "fields": {"amount": f"{i} GBP"}},
                    decision={"effect": "allow" if i % 2 else "deny", "action": "refund", "policy_hash": "ab" * 32},
                    **kw)


def _verify(url: str):
    engine = make_sync_engine(url)
    try:
        return verify_chain(engine)
    finally:
        engine.dispose()


async def test_a_bad_row_fails_alone_and_the_rest_of_its_batch_commits(db_url):
    """Rows submitted together form one batch; each bad one (bypassing the Action's validation by
    submitting a LogEntry directly) fails only its own caller, and the chain verifies."""
    upgrade(db_url)
    logger = DecisionLogger(db_url)
    await logger.start()
    taken = str(uuid.uuid4())
    try:
        await logger.log(_entry(0, id=taken))
        entries = [_entry(i) for i in range(1, 41)]
        bad = {7: _entry(7, id=taken),  # duplicate id: refused by the database on every backend
               19: _entry(19, extra={"not json": object()})}  # cannot be serialised
        if db_url.startswith("postgresql"):  # SQLite stores these; PostgreSQL refuses them
            bad |= {3: _entry(3, actor="x" * 201), 11: _entry(11, session_id="s\x00"),
                    30: _entry(30, tenant="t" * 300)}
        for i, e in bad.items():
            entries[i] = e
        batches_before = logger.batches
        futs = [logger.submit(e) for e in entries]  # all queued before the writer runs: one batch
        results = await asyncio.gather(*futs, return_exceptions=True)
    finally:
        await logger.aclose()
    for i, r in enumerate(results):
        if i in bad:
            assert isinstance(r, DecisionLogError), (i, r)
        else:
            assert not isinstance(r, BaseException), (i, r)
    assert "refused by the database" in str(results[7]) and "cannot be logged" in str(results[19])
    good = [r for r in results if not isinstance(r, BaseException)]
    assert sorted(r.seq for r in good) == list(range(2, 2 + len(good)))  # gap-free after the first row
    assert logger.batches - batches_before >= 1
    res = _verify(db_url)
    assert res.ok, res.problem
    assert res.rows == 1 + len(entries) - len(bad)


async def test_a_bad_follow_up_riding_along_does_not_fail_the_waiting_row(tmp_path):
    """The batch committed on the loop (SQLite NORMAL): a follow-up with a duplicate id is set aside
    and the waiting row commits."""
    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous="NORMAL", follow_up_delay_s=30)
    await logger.start()
    try:
        first = await logger.log(_entry(0))
        logger.enqueue(_entry(1, id=first.id, kind="chat_outcome", follows=first.id))  # id taken
        logged = await logger.log(_entry(2))
        with pytest.raises(DecisionLogError, match="refused by the database"):
            await logger.log(_entry(3, id=first.id))  # a lone bad row fails alone
        await logger.log(_entry(4))
    finally:
        await logger.aclose()
    assert logged.seq == 2
    res = _verify(url)
    assert res.ok and res.rows == 3, res.problem


# ------------------------------------------------------------------------------ tamper evidence

KEY = b"k" * 32


async def _log(url: str, n: int, start: int = 0) -> list:
    logger = DecisionLogger(url)
    await logger.start()
    try:
        out = [await logger.log(_entry(i, session_id=f"s{i}", model="qwen-72b", key_id="k_1"))
               for i in range(start, start + n)]
    finally:
        await logger.aclose()
    return out


# column -> a different value of the right type
EDITS = {"ts": 12345.5, "kind": "chat", "tenant": "other", "actor": "mallory", "session_id": "s-forged",
         "action": "delete_account", "effect": "escalate", "model": "gemma-27b", "policy_hash": "cd" * 32,
         "id": str(uuid.uuid4())}


async def test_an_edit_of_any_query_column_is_detected_and_names_the_row(db_url):
    upgrade(db_url)
    await _log(db_url, 8)
    engine = make_sync_engine(db_url)
    try:
        for col, value in EDITS.items():
            with engine.begin() as c:
                old = c.execute(sa.text(f"SELECT {col} FROM decisions WHERE seq = 5")).scalar()
                c.execute(sa.text(f"UPDATE decisions SET {col} = :v WHERE seq = 5"), {"v": value})
            res = verify_chain(engine)
            assert not res.ok and res.table == "decisions" and res.first_bad_seq == 5, (col, res)
            assert f"column {col}=" in res.problem, (col, res.problem)
            with engine.begin() as c:
                c.execute(sa.text(f"UPDATE decisions SET {col} = :v WHERE seq = 5"), {"v": old})
            assert verify_chain(engine).ok, col
        # fields only in the record (key_id, follows, the request...) are covered by row_hash itself
        with engine.begin() as c:
            c.execute(sa.text("UPDATE decisions SET record = replace(record, '\"k_1\"', '\"k_2\"') WHERE seq = 3"))
        res = verify_chain(engine)
        assert not res.ok and res.first_bad_seq == 3 and "row_hash mismatch" in res.problem
    finally:
        engine.dispose()


async def test_verify_sees_one_snapshot_while_writers_append(db_url):
    """verify-log on a live log: rows committed while it reads are not mistaken for a broken head."""
    upgrade(db_url)
    await _log(db_url, 3)
    logger = DecisionLogger(db_url)
    await logger.start()
    stop = asyncio.Event()

    async def write() -> None:
        i = 0
        while not stop.is_set():
            await asyncio.gather(*(logger.log(_entry(i + k)) for k in range(4)))
            i += 4

    writer = asyncio.create_task(write())
    try:
        for _ in range(15):
            res = await asyncio.to_thread(_verify, db_url)
            assert res.ok, res.problem
    finally:
        stop.set()
        await writer
        await logger.aclose()


async def test_wiped_or_rewritten_log_fails_against_its_anchors(db_url):
    from policyengine.store import Anchor, make_checkpoint, read_checkpoint
    from policyengine.store.models import GENESIS_HASH

    upgrade(db_url)
    await _log(db_url, 6)
    engine = make_sync_engine(db_url)
    try:
        res = verify_chain(engine)
        cp = make_checkpoint(res, KEY)
        assert cp["decisions"] == {"count": 6, "head": res.head_hash}
        anchors = read_checkpoint(orjson.dumps(cp), KEY)
        exact = Anchor.parse(res.head_hash)
        counted = Anchor.parse(f"{res.head_hash}:6")
        assert verify_chain(engine, [*anchors, exact, counted]).ok

        await _log(db_url, 4, start=6)  # the log grows: the checkpoint and HASH:COUNT still hold
        assert verify_chain(engine, [*anchors, counted]).ok
        grown = verify_chain(engine, [exact])  # HASH alone is the current head: no longer
        assert not grown.ok and "expects head" in grown.problem

        with engine.begin() as c:  # wipe the log and reset its head: consistent on its own
            c.execute(sa.text("DELETE FROM decisions"))
            c.execute(sa.text("UPDATE decision_chain SET seq = 0, head_hash = :g"), {"g": GENESIS_HASH})
        alone = verify_chain(engine)
        assert alone.ok and alone.rows == 0
        for anchor_set in (anchors, [counted], [exact]):
            res = verify_chain(engine, anchor_set)
            assert not res.ok and res.table == "decisions", res
        res = verify_chain(engine, anchors)
        assert "has 0 rows" in res.problem and "recorded row 6" in res.problem

        await _log(db_url, 8, start=100)  # rewritten: as many rows again, other hashes
        res = verify_chain(engine, anchors)
        assert not res.ok and "rewritten from an earlier row" in res.problem
    finally:
        engine.dispose()


def test_checkpoint_signature_and_key():
    from policyengine.store import (
        CheckpointError,
        VerifyResult,
        checkpoint_key,
        make_checkpoint,
        read_checkpoint,
    )

    cp = make_checkpoint(VerifyResult(ok=True, rows=3, head_seq=3, head_hash="a" * 64), KEY)
    assert [(a.chain, a.seq, a.head) for a in read_checkpoint(orjson.dumps(cp), KEY)] == [
        ("decisions", 3, "a" * 64), ("approval_events", 0, "0" * 64)]
    with pytest.raises(CheckpointError, match="signature does not match"):
        read_checkpoint(orjson.dumps({**cp, "decisions": {"count": 0, "head": "0" * 64}}), KEY)
    with pytest.raises(CheckpointError, match="signature does not match"):
        read_checkpoint(orjson.dumps(cp), b"another key of 32 bytes........")
    with pytest.raises(CheckpointError, match="not JSON"):
        read_checkpoint(b"{", KEY)
    with pytest.raises(CheckpointError, match="does not verify"):
        make_checkpoint(VerifyResult(ok=False, problem="row_hash mismatch"), KEY)
    with pytest.raises(CheckpointError, match="not set"):
        checkpoint_key("PE_CP_KEY", {})
    with pytest.raises(CheckpointError, match="at least 16"):
        checkpoint_key("PE_CP_KEY", {"PE_CP_KEY": "short"})
    assert checkpoint_key("PE_CP_KEY", {"PE_CP_KEY": "x" * 16}) == b"x" * 16


# ------------------------------------------------------------------------------ approval events


async def _approval(conn, approval_id: str) -> None:
    from datetime import datetime

    from policyengine.store.approvals_models import ApprovalRow

    now = datetime(2026, 12, 1, 10, 0, 0, 123456)
    await conn.execute(ApprovalRow.__table__.insert().values(
        id=approval_id, tenant="acme", state="pending", effect="require_approval", action_name="refund",
        action_json={"action": "refund"}, action_hash="a" * 64, original_action_hash="a" * 64, revision=1,
        decision_json={}, groups=["refunds"], channels=[], on_timeout="deny", reminders_sent=0, escalations=0,
        created_at=now, updated_at=now, version=1))


async def _events(url: str, approval_id: str, n: int, *, concurrently: bool = False) -> None:
    from datetime import UTC, datetime

    from policyengine.store import Database, append_approval_event

    db = Database.open(url)
    try:
        async with db.engine.begin() as conn:
            await _approval(conn, approval_id)

        async def one(i: int) -> None:
            async with db.engine.begin() as conn:
                await append_approval_event(
                    conn, approval_id=approval_id, at=datetime.now(UTC), kind="reminded", from_state="pending",
                    to_state="pending", actor="system:timer", via="timer", reason=f"reminder {i}",
                    details={"reminder": i, "ratio": 0.1 * i, "groups": ["refunds"]})

        if concurrently:
            await asyncio.gather(*(one(i) for i in range(n)))
        else:
            for i in range(n):
                await one(i)
    finally:
        await db.aclose()


async def test_approval_events_are_chained_and_an_edit_is_detected(db_url):
    upgrade(db_url)
    await _events(db_url, "apr_1", 6)
    await _events(db_url, "apr_2", 10, concurrently=True)  # replicas appending at once: one chain
    engine = make_sync_engine(db_url)
    try:
        res = verify_chain(engine)
        assert res.ok and res.approval_events == 16 and res.approval_head_seq == 16, res.problem
        edits = {"reason": "'approved by the CFO'", "actor": "'alice'", "kind": "'approved'",
                 "to_state": "'approved'", "at": "'2020-01-01 00:00:00.000000'", "approval_id": "'apr_2'",
                 "details": "NULL"}
        for col, value in edits.items():
            with engine.begin() as c:
                old = c.execute(sa.text(f"SELECT {col} FROM approval_events WHERE chain_seq = 4")).scalar()
                event_id = c.execute(sa.text("SELECT id FROM approval_events WHERE chain_seq = 4")).scalar()
                c.execute(sa.text(f"UPDATE approval_events SET {col} = {value} WHERE chain_seq = 4"))
            res = verify_chain(engine)
            assert not res.ok and res.table == "approval_events" and res.first_bad_seq == 4, (col, res)
            assert res.first_bad_id == str(event_id) and "event edited" in res.problem, (col, res.problem)
            with engine.begin() as c:
                if col == "details":
                    c.execute(sa.text("UPDATE approval_events SET details = :v WHERE chain_seq = 4"),
                              {"v": orjson.dumps(old).decode() if not isinstance(old, str) else old})
                else:
                    c.execute(sa.text(f"UPDATE approval_events SET {col} = :v WHERE chain_seq = 4"), {"v": old})
            assert verify_chain(engine).ok, col
        with engine.begin() as c:  # an event written without the chain, after it began
            c.execute(sa.text("INSERT INTO approval_events (approval_id, at, kind, actor) "
                              "VALUES ('apr_1', '2026-12-01 10:00:00.000000', 'approved', 'mallory')"))
        res = verify_chain(engine)
        assert not res.ok and "not chained" in res.problem
        with engine.begin() as c:
            c.execute(sa.text("DELETE FROM approval_events WHERE chain_seq IS NULL"))
            c.execute(sa.text("DELETE FROM approval_events WHERE chain_seq = 9"))
        res = verify_chain(engine)
        assert not res.ok and res.first_bad_seq == 10 and "gap" in res.problem
        with engine.begin() as c:  # deleted from the end with the head moved back: only an anchor sees it
            c.execute(sa.text("DELETE FROM approval_events WHERE chain_seq >= 9"))
            row = c.execute(sa.text("SELECT row_hash FROM approval_events WHERE chain_seq = 8")).scalar()
            c.execute(sa.text("UPDATE approval_event_chain SET seq = 8, head_hash = :h"), {"h": row})
        assert verify_chain(engine).ok
    finally:
        engine.dispose()


async def test_events_from_before_the_chain_verify_and_a_checkpoint_anchors_the_events(db_url):
    from policyengine.store import make_checkpoint, read_checkpoint

    upgrade(db_url)
    engine = make_sync_engine(db_url)
    try:
        db_events = "INSERT INTO approval_events (approval_id, at, kind) VALUES ('apr_1', '2026-11-01 10:00:00', 'created')"
        await _events(db_url, "apr_1", 0)
        with engine.begin() as c:  # written by the service before events were chained
            c.execute(sa.text(db_events))
            c.execute(sa.text(db_events))
        await _events(db_url, "apr_2", 3)
        res = verify_chain(engine)
        assert res.ok and res.approval_events == 3 and res.approval_events_unchained == 2, res.problem
        anchors = read_checkpoint(orjson.dumps(make_checkpoint(res, KEY)), KEY)
        with engine.begin() as c:  # every chained event deleted and the head reset
            c.execute(sa.text("DELETE FROM approval_events WHERE chain_seq IS NOT NULL"))
            c.execute(sa.text("UPDATE approval_event_chain SET seq = 0, head_hash = :g"), {"g": "0" * 64})
        assert verify_chain(engine).ok
        res = verify_chain(engine, anchors)
        assert not res.ok and res.table == "approval_events" and "approval event chain has 0 rows" in res.problem
    finally:
        engine.dispose()
