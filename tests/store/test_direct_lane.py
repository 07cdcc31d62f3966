"""The direct lane: on SQLite an idle writer's row is committed by `submit` itself (under FULL while no
loop commit has stalled on its fsync)."""

from __future__ import annotations

import asyncio

from policyengine.store import DecisionLogger, upgrade
from store.test_log_integrity import _entry, _verify


async def _started(tmp_path, sync: str, **kw) -> tuple[str, DecisionLogger]:
    """A migrated SQLite database and a started logger on it."""
    url = f"sqlite:///{tmp_path / 'pe.db'}"
    upgrade(url)
    logger = DecisionLogger(url, sqlite_synchronous=sync, **kw)
    await logger.start()
    return url, logger


async def _idle(logger: DecisionLogger) -> None:
    """Until the writer waits for work with nothing queued (and the lane is open again)."""
    for _ in range(100):
        await asyncio.sleep(0)
        if logger._writer_idle and logger._lane_open and not logger._restart_due:
            return
    raise AssertionError("the writer never went idle")


async def test_a_lone_row_is_committed_before_submit_returns(tmp_path):
    url, logger = await _started(tmp_path, "NORMAL", follow_up_delay_s=30)
    try:
        first = await logger.log(_entry(0))
        logger.enqueue(_entry(1, kind="chat_outcome", follows=first.id))  # rides along
        await _idle(logger)
        fut = logger.submit(_entry(2))
        assert fut.done()  # committed, not queued
        assert fut.result().seq == 2  # the follow-up rides along behind it, as in a writer batch
        assert logger._deferred == []
    finally:
        await logger.aclose()
    res = _verify(url)
    assert res.ok and res.rows == 3, res.problem


async def test_rows_submitted_together_still_share_a_batch(tmp_path):
    url, logger = await _started(tmp_path, "NORMAL")
    try:
        await logger.log(_entry(0))
        await _idle(logger)
        before = logger.batches
        futs = [logger.submit(_entry(i)) for i in range(1, 21)]
        assert futs[0].done() and not any(f.done() for f in futs[1:])  # one direct commit per iteration
        logged = await asyncio.gather(*futs)
        assert logger.batches - before == 2  # the direct one, then the writer's batch of the other 19
    finally:
        await logger.aclose()
    assert [r.seq for r in logged] == list(range(2, 22))
    res = _verify(url)
    assert res.ok and res.rows == 21, res.problem


async def test_under_full_a_lone_row_goes_to_the_writer_unless_the_loop_is_quiet(tmp_path):
    _, logger = await _started(tmp_path, "FULL")
    quiet = [False]
    try:
        await logger.log(_entry(0))
        await _idle(logger)
        fut = logger.submit(_entry(9))
        assert not fut.done() and not logger._queue.empty()  # no quiet() hook: never on the loop
        await fut
        logger.quiet = lambda: quiet[0]
        await _idle(logger)
        fut = logger.submit(_entry(10))
        assert not logger._queue.empty()  # the loop is busy: the writer thread commits it
        await fut
        quiet[0] = True
        await _idle(logger)
        fut = logger.submit(_entry(11))
        quiet[0] = False  # requests came in before the commit: it is handed to the writer after all
        await asyncio.sleep(0)
        assert not fut.done() and not logger._queue.empty()
        await fut
    finally:
        await logger.aclose()


async def test_under_full_a_lone_row_commits_directly_unless_the_lane_is_closed(tmp_path):
    _, logger = await _started(tmp_path, "FULL")
    logger.quiet = lambda: True  # as the service sets it while at most one request is in flight
    try:
        await logger.log(_entry(0))
        await _idle(logger)
        fut = logger.submit(_entry(1))
        assert not fut.done()  # the fsync runs in the next iteration, while the caller does its own I/O
        await asyncio.sleep(0)
        assert fut.done() and logger._queue.empty()  # committed on the loop, never queued to the writer
        assert fut.result().seq == 2
        await _idle(logger)
        logger._loop_closed_until = float("inf")  # as after a commit that stalled the loop
        fut = logger.submit(_entry(2))
        assert not fut.done() and not logger._queue.empty()  # queued: the writer thread commits it
        assert (await fut).seq == 3
    finally:
        await logger.aclose()
