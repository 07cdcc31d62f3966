"""The SQLite WAL stays bounded under sustained load (issue 22): sizes, never time."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

from policyengine.store import DecisionLogger, LogEntry, upgrade

PAD = "x" * 2000  # ~2 KB of request per row, like a short chat


def _entry(i: int) -> LogEntry:
    return LogEntry(kind="evaluate", tenant="acme", action={"action": "chat", "fields": {"n": i, "text": PAD}},
                    decision={"effect": "allow", "action": "chat", "policy_hash": "ab" * 32})


async def _load(logger: DecisionLogger, rows: int, concurrency: int = 32) -> None:
    """`rows` rows from `concurrency` callers at once: the writer never idles, so PASSIVE checkpoints
    always run beside a commit (the case where the WAL used to grow without end)."""
    left = iter(range(rows))

    async def caller() -> None:
        for i in left:
            await logger.log(_entry(i))

    await asyncio.gather(*(caller() for _ in range(concurrency)))


def _wal(path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


async def _run(path, *, rows: int, wal_max: int, sync: str = "NORMAL"):
    url = f"sqlite:///{path}"
    logger = DecisionLogger(url, sqlite_synchronous=sync, wal_max_bytes=wal_max)
    logger.checkpoint_rows = 50
    peak = 0

    def on_batch(_n: int) -> None:
        nonlocal peak
        peak = max(peak, _wal(path))

    logger.on_batch = on_batch
    await logger.start()
    try:
        await _load(logger, rows)
    finally:
        await logger.aclose()
    return logger, peak


async def test_wal_stays_under_its_bound_while_the_writer_never_idles(tmp_path):
    path = tmp_path / "pe.db"
    upgrade(f"sqlite:///{path}")
    wal_max = 128 * 1024
    logger, peak = await _run(path, rows=1000, wal_max=wal_max)
    data = os.path.getsize(path)
    assert logger.rows == 1000
    assert logger.wal_resets >= 1
    # the bound plus a batch or two of 32 rows (~160 KB of pages each)
    assert peak < wal_max + 1024 * 1024, (peak, data)
    assert peak < data / 2  # without the reset the WAL outgrew the database itself
    with sqlite3.connect(path) as c:
        assert c.execute("select count(*) from decisions").fetchone()[0] == 1000


async def test_a_long_lived_reader_defers_the_reset_until_it_ends(tmp_path):
    """A reader holding an old snapshot keeps the WAL from being reset (SQLite cannot reuse frames it
    may still read): the reset is deferred, never waited for, and happens once the reader is gone."""
    path = tmp_path / "pe.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    wal_max = 128 * 1024
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("select count(*) from decisions").fetchone()  # holds its snapshot
    logger, held_peak = await _run(path, rows=600, wal_max=wal_max)
    assert logger.rows == 600
    assert logger.wal_reset_failures >= 1
    assert held_peak > wal_max  # it could not be reset while the snapshot was held
    reader.execute("COMMIT")
    reader.close()
    logger, _ = await _run(path, rows=600, wal_max=wal_max)
    assert logger.wal_resets >= 1
    assert _wal(path) < wal_max + 1024 * 1024


async def test_wal_bound_holds_under_full_durability(tmp_path):
    path = tmp_path / "pe.db"
    upgrade(f"sqlite:///{path}")
    logger, peak = await _run(path, rows=600, wal_max=128 * 1024, sync="FULL")
    assert logger.wal_resets >= 1
    assert peak < 128 * 1024 + 1024 * 1024


async def test_one_caller_at_a_time_the_wal_starts_over_before_its_bound(tmp_path):
    """At concurrency 1 the writer checkpoints right after a pass of the checkpoint thread that found
    the WAL 3/4 full (only that pass's frames are left to copy), and the file keeps its size: later
    commits overwrite it in place instead of growing it again after a TRUNCATE."""
    path = tmp_path / "pe.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    wal_max = 4 * 1024 * 1024
    logger = DecisionLogger(url, sqlite_synchronous="NORMAL", wal_max_bytes=wal_max)
    logger.checkpoint_rows = 8  # a pass every ~250 KB of frames (~30 KB per one-row commit)
    peak, after_restart = 0, []

    def on_batch(_n: int) -> None:
        nonlocal peak
        size = _wal(path)
        peak = max(peak, size)
        if logger.wal_resets:
            after_restart.append(size)

    logger.on_batch = on_batch
    # The writer's own reset is for a checkpoint thread that lags (a busy machine): on an idle one
    # the thread's passes copy every frame and SQLite starts the WAL over before the writer has to.
    # Make the lag deterministic in rows, not time: each pass starts only once LAG more rows are
    # committed (as when the thread waits for a core), and the caller below never runs more than a
    # couple of rows past that while the pass copies (however slow the machine is).
    lag = 20  # ~600 KB of frames committed during each pass
    passive, start_pass = logger._checkpoint, logger._start_pass
    pass_rows = [0]

    def counted_start_pass() -> None:
        pass_rows[0] = logger.rows
        start_pass()

    def lagging_checkpoint() -> None:
        deadline = time.monotonic() + 10
        while logger.rows < pass_rows[0] + lag and not logger._closing and time.monotonic() < deadline:
            time.sleep(0.0005)
        passive()

    logger._start_pass = counted_start_pass
    logger._checkpoint = lagging_checkpoint
    await logger.start()
    try:
        for i in range(1200):  # ~36 MB of frames: the WAL starts over many times
            await logger.log(_entry(i))
            await asyncio.sleep(0.001)  # the request's upstream call: the writer idles meanwhile
            while logger._checkpointing and logger.rows >= pass_rows[0] + lag + 2:
                await asyncio.sleep(0.001)
    finally:
        await logger.aclose()
    assert logger.wal_resets >= 3
    # it starts over between 3/4 of the bound and the bound (a checkpoint thread starved of CPU may
    # let it reach the bound, where the writer copies every frame itself: a commit or two more)
    assert peak <= wal_max + wal_max // 4, peak
    # never truncated: the file keeps the size it reached (at least 3/4 of the bound), later commits
    # overwrite it in place
    assert after_restart and min(after_restart) >= wal_max * 3 // 4, min(after_restart)
    with sqlite3.connect(path) as c:
        assert c.execute("select count(*) from decisions").fetchone()[0] == 1200


async def test_the_writer_never_waits_for_the_checkpoint_thread(tmp_path):
    """Past the bound while the checkpoint thread is busy, the writer leaves the WAL alone for this
    batch (SQLite runs one checkpoint at a time); once the thread is idle, it copies every frame."""
    path = tmp_path / "pe.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous="NORMAL", wal_max_bytes=64 * 1024)
    logger.checkpoint_rows = 10_000  # no pass of its own during the rows below
    logger._wal_retry_at = 10**9  # nor a checkpoint of the writer's
    await logger.start()
    try:
        for i in range(60):
            await logger.log(_entry(i))
        assert _wal(path) > 64 * 1024
        logger._checkpointing = True  # as if a pass were running
        logger._wal_retry_at = 0
        await logger._maybe_restart_wal(asyncio.get_running_loop())
        assert (logger.wal_resets, logger.wal_reset_failures) == (0, 0)
        logger._checkpointing = False
        await logger._maybe_restart_wal(asyncio.get_running_loop())
        assert logger.wal_resets == 1  # the thread idle: the writer copies every frame itself
        assert not logger._checkpointing  # (past the bound, no pass of the thread instead)
    finally:
        await logger.aclose()


async def test_a_pass_that_copies_frames_flushes_the_database_file(tmp_path, monkeypatch):
    """SQLite syncs the database file only in a checkpoint that copies every frame (the writer's WAL
    restart), so the checkpoint thread flushes it after each pass that copied frames: the restart's
    sync is then left with that restart's own pages, not every page copied since the last one."""
    import threading

    from policyengine.store import logger as logger_mod

    path = tmp_path / "pe.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    flushed: list[tuple[str, str]] = []
    real = logger_mod._fdatasync

    def recording(fd: int) -> None:
        flushed.append((os.path.realpath(f"/proc/self/fd/{fd}") if os.path.isdir("/proc/self/fd") else str(path),
                        threading.current_thread().name))
        real(fd)

    monkeypatch.setattr(logger_mod, "_fdatasync", recording)
    logger = DecisionLogger(url, sqlite_synchronous="NORMAL", wal_max_bytes=4 * 1024 * 1024)
    logger.checkpoint_rows = 5
    await logger.start()
    try:
        for i in range(60):
            await logger.log(_entry(i))
        for _ in range(200):  # the last pass may still run
            if flushed and not logger._checkpointing:
                break
            await asyncio.sleep(0.01)
    finally:
        await logger.aclose()
    assert logger.checkpoints >= 2
    assert flushed, "no pass flushed the database file"
    assert {p for p, _ in flushed} == {os.path.realpath(path)}  # the database file, not the WAL
    assert all(t.startswith("decision-log-ckpt") for _, t in flushed)  # never the loop or the writer
    assert len(flushed) <= logger.checkpoints
    fd = logger._db_fd
    assert fd is not None and os.fstat(fd).st_ino == os.stat(path).st_ino  # left open with the log (store._heldfd)


def test_held_descriptors_are_one_per_file_and_never_closed(tmp_path):
    """Closing a descriptor would drop this process's POSIX locks on the file, SQLite's included:
    `held_fd` hands back the same descriptor while the path names the same file, and a new one for a
    file made again at that path, leaving the old one open."""
    from policyengine.store._heldfd import held_fd

    path = tmp_path / "pe.db"
    path.write_bytes(b"a")
    fd = held_fd(str(path))
    assert held_fd(str(path)) == fd == held_fd(str(tmp_path / "." / "pe.db"))
    path.unlink()
    path.write_bytes(b"b")
    fd2 = held_fd(str(path))
    assert fd2 != fd and os.fstat(fd2).st_ino == os.stat(path).st_ino
    os.fstat(fd)  # still open


async def test_passes_come_more_often_while_the_service_is_quiet(tmp_path):
    """A pass per PASSES_PER_BOUND_QUIET-th of the bound while the service says it is quiet, per
    PASSES_PER_BOUND-th otherwise: counted in WAL bytes, the same rows give about that many times
    the passes (each pass is only counted here, so no pass in flight delays the next one)."""
    from policyengine.store.logger import PASSES_PER_BOUND, PASSES_PER_BOUND_QUIET

    counts = {}
    for quiet in (False, True):
        path = tmp_path / f"pe-{quiet}.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        logger = DecisionLogger(url, sqlite_synchronous="NORMAL", wal_max_bytes=16 * 1024 * 1024)
        logger.checkpoint_rows = 10**9  # by WAL bytes only
        logger.quiet = lambda q=quiet: q
        passes = [0]

        def start_pass(lg=logger, n=passes) -> None:
            lg._since_checkpoint = 0
            n[0] += 1

        logger._start_pass = start_pass
        await logger.start()
        try:
            for i in range(400):  # ~12 MB of WAL at ~30 KB per one-row commit: under the bound
                await logger.log(_entry(i))
        finally:
            await logger.aclose()
        counts[quiet] = passes[0]
    assert counts[False] >= 2, counts
    ratio = PASSES_PER_BOUND_QUIET / PASSES_PER_BOUND
    assert counts[True] >= counts[False] * ratio * 0.7, counts
