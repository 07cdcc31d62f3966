"""One bad row never fails another (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

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
