"""The store on SQLite and on the real PostgreSQL: migrations, group commit, the hash chain."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from policyengine.store import (
    ApiKeyRepo,
    Database,
    DecisionLogger,
    DecisionQuery,
    DecisionRepo,
    LogEntry,
    PolicyVersionRepo,
    Redactor,
    heads,
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
    return LogEntry(kind="evaluate", tenant=tenant, actor=f"user{i % 3}",
                    action={"action": "refund", "fields": {"amount": f"{i} GBP", "card": "4111"}},
                    decision={"effect": "allow" if i % 2 else "deny", "action": "refund",
                              "policy_hash": "ab" * 32, "signals": {"sentiment": 0.5}},
                    **kw)


def test_migrations_are_idempotent(db_url):
    assert upgrade(db_url) == heads()
    assert upgrade(db_url) == heads()


async def test_group_commit_chain_and_queries(db_url):
    upgrade(db_url)
    logger = DecisionLogger(db_url, redact=["fields.card"])
    await logger.start()
    try:
        results = await asyncio.gather(*(logger.log(_entry(i)) for i in range(300)))
    finally:
        await logger.aclose()
    assert sorted(r.seq for r in results) == list(range(1, 301))
    # concurrent writers were batched: far fewer commits than rows
    assert logger.batches < 300
    engine = make_sync_engine(db_url)
    res = verify_chain(engine)
    assert res.ok, res.problem
    assert res.rows == 300

    db = Database.open(db_url)
    repo = DecisionRepo(db.sessionmaker)
    row = await repo.get("acme", results[7].id)
    assert row is not None and '"card":"redacted:sha256:' in row.record and "4111" not in row.record
    assert await repo.get("other-tenant", results[7].id) is None  # tenant-scoped
    denied = await repo.query(DecisionQuery(tenant="acme", effect="deny", limit=1000))
    assert len(denied) == 150 and all(r.effect == "deny" for r in denied)
    await db.aclose()

    # tampering is detected, and the first bad row is named
    with engine.begin() as c:
        c.execute(sa.text("UPDATE decisions SET record = replace(record, '\"allow\"', '\"deny\"') WHERE seq = 42"))
    res = verify_chain(engine)
    assert not res.ok and res.first_bad_seq == 42 and "row_hash mismatch" in res.problem
    engine.dispose()


def _chain_rows(url: str) -> int:
    """Verify the hash chain at `url`; the number of rows in it."""
    engine = make_sync_engine(url)
    try:
        res = verify_chain(engine)
    finally:
        engine.dispose()
    assert res.ok, res.problem
    return res.rows


def _follow_up(i: int, follows: str) -> LogEntry:
    return LogEntry(kind="chat_outcome", tenant="acme", action={}, decision={"effect": "allow", "action": "chat"},
                    extra={"outcome": "ok"}, follows=follows, id=f"outcome-{i}")


async def test_follow_up_rows_ride_along_with_the_next_commit(db_url):
    """A follow-up row has nobody waiting for it: it is written with the next batch that has a
    waiter (one commit, not two), or on its own once its delay is up, and always on close."""
    upgrade(db_url)
    logger = DecisionLogger(db_url, follow_up_delay_s=30)
    await logger.start()
    try:
        first = await logger.log(_entry(0))
        logger.enqueue(_follow_up(0, first.id))
        await asyncio.sleep(0.05)
        assert logger.rows == 1  # deferred: nothing waits for it, the delay is long
        second = await logger.log(_entry(1))
        assert (logger.batches, logger.rows, logger.last_batch_size) == (2, 3, 2)  # one commit for both
        assert second.seq == 2  # the waiting row first, the follow-up behind it
        logger.enqueue(_follow_up(1, second.id))
    finally:
        await logger.aclose()  # flushes the one still deferred
    assert logger.rows == 4
    assert _chain_rows(db_url) == 4
    engine = make_sync_engine(db_url)
    with engine.connect() as c:
        got = c.execute(sa.text("SELECT seq, id, kind FROM decisions ORDER BY seq")).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [(1, first.id, "evaluate"), (2, second.id, "evaluate"),
                                       (3, "outcome-0", "chat_outcome"), (4, "outcome-1", "chat_outcome")]


async def test_follow_up_rows_are_written_when_their_delay_is_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    for delay in (0.02, 0):  # 0: each follow-up is queued at once
        logger = DecisionLogger(url, follow_up_delay_s=delay)
        await logger.start()
        try:
            d = await logger.log(_entry(0))
            logger.enqueue(_follow_up(delay, d.id))
            for _ in range(200):
                if logger.rows == 2:
                    break
                await asyncio.sleep(0.01)
            assert (logger.batches, logger.rows) == (2, 2)  # alone, without another request
        finally:
            await logger.aclose()
    assert _chain_rows(url) == 4


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_lone_row_commits_on_the_loop_and_a_batch_in_the_writer_thread(tmp_path, synchronous):
    import threading

    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous=synchronous)
    logger.quiet = lambda: True  # under FULL: as the service sets it with one request in flight
    threads: list[tuple[int, bool]] = []
    append = logger._append_sqlite

    def spy(records, wait=True):
        threads.append((len(records), threading.current_thread() is threading.main_thread()))
        return append(records, wait)

    logger._append_sqlite = spy
    await logger.start()
    try:
        await logger.log(_entry(0))  # alone: a batch of one
        await asyncio.gather(*(logger.log(_entry(i)) for i in range(1, 40)))  # batched
    finally:
        await logger.aclose()
    assert threads[0] == (1, True)  # on the loop
    assert all(not on_loop for n, on_loop in threads if n > 1)  # a batch always goes to the thread
    assert _chain_rows(url) == 40


async def test_a_loop_commit_that_stalls_on_fsync_sends_the_next_ones_to_the_writer_thread(tmp_path, monkeypatch):
    """Under FULL a lone row's commit (with its fsync) runs on the loop; one that holds the loop
    longer than LOOP_FSYNC_STALL_S closes that lane for LOOP_FSYNC_BACKOFF_S: the next lone rows
    commit in the writer thread, and after the backoff on the loop again."""
    import threading
    import time as time_mod

    from policyengine.store import logger as logger_mod

    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous="FULL")
    logger.quiet = lambda: True
    on_loop: list[bool] = []
    append = logger._append_sqlite
    slow = {"next": False}

    def spy(records, wait=True):
        on_loop.append(threading.current_thread() is threading.main_thread())
        out = append(records, wait)
        if slow["next"]:
            slow["next"] = False
            time_mod.sleep(logger_mod.LOOP_FSYNC_STALL_S * 2)  # a disk that stalls this commit
        return out

    logger._append_sqlite = spy
    await logger.start()
    try:
        await logger.log(_entry(0))  # opens the connection (never counted as a stall)
        await logger.log(_entry(1))
        assert on_loop == [True, True] and logger.loop_commit_stalls == 0
        slow["next"] = True
        await logger.log(_entry(2))  # on the loop, and too slow
        assert logger.loop_commit_stalls == 1
        await logger.log(_entry(3))
        await logger.log(_entry(4))
        assert on_loop[2:] == [True, False, False]  # the lane is closed: the writer thread commits
        monkeypatch.setattr(logger, "_loop_closed_until", time_mod.monotonic() - 1)  # the backoff is over
        await logger.log(_entry(5))
        assert on_loop[-1] is True
    finally:
        await logger.aclose()
    assert _chain_rows(url) == 6


async def test_a_lone_row_never_waits_for_the_write_lock_on_the_loop(tmp_path):
    """Another connection of this process holds the write lock and needs the loop to release it
    (as an aiosqlite transaction does): the lone row must go to the writer thread, which waits,
    instead of blocking the loop in BEGIN IMMEDIATE (which would deadlock until the busy timeout)."""
    import sqlite3
    import time

    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous="NORMAL")
    await logger.start()
    try:
        await logger.log(_entry(0))  # the writer's connection is open
        holder = sqlite3.connect(tmp_path / "pe.db", isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.3, holder.execute, "COMMIT")  # needs the loop to run
        t0 = time.monotonic()
        await asyncio.wait_for(logger.log(_entry(1)), timeout=10)
        assert 0.25 < time.monotonic() - t0 < 5
        holder.close()
        await logger.log(_entry(2))  # and the next lone row commits on the loop again
    finally:
        await logger.aclose()
    assert _chain_rows(url) == 3


async def test_wal_checkpoints_run_beside_the_writer(tmp_path):
    """The writer's connection never checkpoints inside a commit; a separate thread does, every
    `checkpoint_rows` rows, so the WAL does not grow without bound."""
    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous="NORMAL")
    logger.checkpoint_rows = 25
    await logger.start()
    written = 0
    try:
        for written in range(1, 121):
            await logger.log(_entry(written - 1))
        # A pass still running when the next is due is skipped, and only a batch schedules one: on a
        # busy machine the first pass may outlast all 120 rows, so keep writing (bounded) until a
        # second pass has run rather than waiting for one no batch will start.
        while logger.checkpoints < 2 and written < 5000:
            await asyncio.sleep(0.01)
            await logger.log(_entry(written))
            written += 1
    finally:
        await logger.aclose()
    assert logger.checkpoints >= 2
    assert _chain_rows(url) == written


async def test_postgres_writer_survives_its_connection_dying_while_idle(pg_schema_url):
    """The writer holds one connection; if the server drops it between batches (restart, idle
    timeout), the next batch reconnects instead of failing its requests."""
    upgrade(pg_schema_url)
    logger = DecisionLogger(pg_schema_url)
    await logger.start()
    try:
        await logger.log(_entry(0))
        pid = logger._raw.driver_connection.info.backend_pid
        admin = make_sync_engine(pg_schema_url)
        with admin.begin() as c:
            assert c.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        admin.dispose()
        await logger.log(_entry(1))  # no error: reconnected
        assert logger._raw.driver_connection.info.backend_pid != pid
    finally:
        await logger.aclose()
    assert _chain_rows(pg_schema_url) == 2


async def test_tampered_column_and_deleted_row_detected(tmp_path):
    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url)
    await logger.start()
    for i in range(10):
        await logger.log(_entry(i))
    await logger.aclose()
    engine = make_sync_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE decisions SET effect = 'escalate' WHERE seq = 4"))
    res = verify_chain(engine)
    assert not res.ok and res.first_bad_seq == 4 and "column effect" in res.problem
    with engine.begin() as c:
        c.execute(sa.text("UPDATE decisions SET effect = 'allow' WHERE seq = 4"))
        c.execute(sa.text("DELETE FROM decisions WHERE seq = 6"))
    res = verify_chain(engine)
    assert not res.ok and res.first_bad_seq == 7 and "gap" in res.problem
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM decisions WHERE seq >= 6"))
    res = verify_chain(engine)
    assert not res.ok and "truncated" in res.problem
    engine.dispose()


@pytest.mark.postgres
async def test_two_writers_share_one_chain_on_postgres(pg_schema_url):
    """Two loggers (as two replicas would) append concurrently: one gap-free chain."""
    upgrade(pg_schema_url)
    a, b = DecisionLogger(pg_schema_url), DecisionLogger(pg_schema_url)
    await a.start()
    await b.start()
    await asyncio.gather(*(a.log(_entry(i)) for i in range(100)), *(b.log(_entry(i)) for i in range(100)))
    await a.aclose()
    await b.aclose()
    engine = make_sync_engine(pg_schema_url)
    res = verify_chain(engine)
    engine.dispose()
    assert res.ok, res.problem
    assert res.rows == 200


async def test_api_keys_hashed_and_revocable(db_url):
    upgrade(db_url)
    db = Database.open(db_url)
    repo = ApiKeyRepo(db.sessionmaker)
    info, token = await repo.create(tenant="acme", roles={"admin"}, subject="ops@acme")
    assert token.startswith("pe_")
    async with db.engine.connect() as c:
        stored = (await c.execute(sa.text("SELECT token_hash FROM api_keys"))).scalar_one()
    assert token not in stored and len(stored) == 64
    got = await repo.authenticate(token)
    assert got is not None and got.tenant == "acme" and got.roles == {"admin"}
    assert await repo.authenticate(token + "x") is None
    with pytest.raises(ValueError, match="roles"):
        await repo.create(tenant="acme", roles={"root"}, subject="x")
    assert await repo.revoke(info.key_id)
    assert await repo.authenticate(token) is None
    pv = PolicyVersionRepo(db.sessionmaker)
    await pv.record_loaded(hash="cd" * 32, name="support", version=3, sources={"a.policy": "deny x"})
    await pv.record_loaded(hash="cd" * 32, name="support", version=3, sources={"a.policy": "deny x"})
    assert [p.hash for p in await pv.list()] == ["cd" * 32]
    await db.aclose()


async def test_replicas_recording_one_policy_version_at_once_do_not_race(db_url):
    """Replicas booting together on an empty database record the same policy hash."""
    upgrade(db_url)
    dbs = [Database.open(db_url) for _ in range(4)]
    repos = [PolicyVersionRepo(d.sessionmaker) for d in dbs]
    await asyncio.gather(*(r.record_loaded(hash="ef" * 32, name="support", version=1,
                                           sources={"a.policy": "deny x"}, loaded_by=f"r{i}")
                           for i, r in enumerate(repos)))
    assert [p.hash for p in await repos[0].list()] == ["ef" * 32]
    for d in dbs:
        await d.aclose()


async def test_replicas_seeding_one_key_at_once_do_not_race(db_url):
    """Replicas starting together with the same seed_keys entry (found by the compose smoke test:
    one replica failed its start on PostgreSQL's duplicate key) all get the one key."""
    upgrade(db_url)
    dbs = [Database.open(db_url) for _ in range(6)]
    token = "pe_seed_" + "s" * 32
    infos = await asyncio.gather(*(ApiKeyRepo(d.sessionmaker).create(tenant="acme", roles={"admin"}, subject="boot",
                                                                      token=token) for d in dbs))
    assert {i.key_id for i, _ in infos} == {infos[0][0].key_id}
    assert len(await ApiKeyRepo(dbs[0].sessionmaker).list("acme")) == 1
    for d in dbs:
        await d.aclose()


def test_redactor_paths_and_names():
    r = Redactor(["fields.card.number", "email"], salt="s3cret")
    data = {"fields": {"card": {"number": "4111", "exp": "12/30"}, "contact": [{"email": "a@b.c"}]}, "email": "x"}
    out = r.redact(data)
    assert out["fields"]["card"]["number"].startswith("redacted:sha256:")
    assert out["fields"]["card"]["exp"] == "12/30"
    assert out["fields"]["contact"][0]["email"].startswith("redacted:sha256:")
    assert data["fields"]["card"]["number"] == "4111"  # input untouched
    assert Redactor(["email"], salt="s3cret").digest("x") == r.digest("x") != Redactor(["email"]).digest("x")


def test_concurrent_migrations_are_serialised(db_url):
    """Several workers/replicas starting at once: one migrates, the others find it done."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(upgrade, [db_url] * 4))
    assert all(r == heads() for r in results)
