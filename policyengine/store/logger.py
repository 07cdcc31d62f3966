"""The durable, group-committing decision logger.

`await logger.log(entry)` returns only once the decision's row is committed.
Concurrent callers are batched: one writer task takes everything queued, appends
it to the hash chain in ONE transaction (one fsync), then resolves every
caller's future. While a batch commits, the next one accumulates, so the log
keeps up with the request rate instead of paying one commit per request.

Appending locks the chain head row (`SELECT ... FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite), so several replicas (or processes) writing to the
same database still produce one gap-free chain.

Rows nobody waits for (`enqueue`: a streamed chat's outcome) ride along with the
next batch that has a waiter, or go alone after `follow_up_delay_s`. On SQLite,
a batch of one waiting row commits on the event loop (no thread switches) unless
another connection holds the write lock; when the writer is idle and nothing is
queued, `submit` commits such a batch itself (the direct lane: no queue, no
wake-up of the writer task, the future already resolved when it returns), at
most once per loop iteration so that rows submitted together still share a
batch. Under `synchronous=FULL`/`EXTRA` that commit includes an fsync, which
blocks the loop while it runs, so the loop lane is taken only while the loop
serves next to nothing else (`quiet`, set by the service: at most
`QUIET_IN_FLIGHT` requests in flight; and `fsync_on_loop`), one iteration after `submit` (the caller's
upstream request is on its way by then, so the fsync overlaps it), and not for
`LOOP_FSYNC_BACKOFF_S` after a loop commit slower than `LOOP_FSYNC_STALL_S` (a
disk that stalls); otherwise the writer thread commits. WAL checkpoints run in
a thread of their own, outside every commit.

The WAL's size is bounded (`wal_max_bytes`) without a commit ever waiting for a long checkpoint.
SQLite starts the WAL over from its beginning at the first commit after a checkpoint that copied
every frame (and cuts the file back to `journal_size_limit`, here the bound, so the file keeps its
size and later commits overwrite it in place). The checkpoint thread's PASSIVE checkpoints (a
pass per quarter of the bound of new frames, counted from the WAL index, or per sixteenth while
the service is quiet: PASSES_PER_BOUND) copy the bulk beside the writer, each followed by a flush
of the database file (SQLite syncs it only in a checkpoint that copies every frame), but, while
batches keep coming, never every frame. So the writer itself runs a PASSIVE
checkpoint between two batches, when no frame can be appended meanwhile: right after a pass that
found the WAL 3/4 full (only what was appended during that pass is left to copy: a short pause,
once per 3/4 of a bound of log), or whenever the log is past the bound. It never waits for a
reader or for the checkpoint thread, and leaves the file's size alone: a TRUNCATE made every
later commit grow the file again, each fsync paying for the new size, and its one long copy
stalled the request behind it (issue 22: c=1 p99 19 ms under FULL, 51 ms under NORMAL).

One row's data never fails another row: a record that cannot be serialised is set aside before
the transaction, and when the database refuses a batch for a row's data (a value longer than its
column, a NUL on PostgreSQL, a duplicate id) the batch is split and each part retried, so every
other row commits and only the bad row's caller gets DecisionLogError. Each retry is a
transaction of its own that re-reads the chain head, so the chain stays gap-free. The happy path
pays nothing for this: no row is checked before the database sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from policyengine.store._heldfd import held_fd
from policyengine.store._osthread import name_os_thread
from policyengine.store.db import SQLITE_BUSY_TIMEOUT_MS, make_sync_engine
from policyengine.store.redaction import Redactor
from policyengine.store.rowhash import canonical_json, row_hash

log = logging.getLogger("policyengine.store.logger")


# Row kinds that complete an earlier decision row instead of recording a decision (a streamed
# chat's outcome: final model, attempts, usage; an MCP tool call's: the upstream's status).
# Replays and counts of decisions skip them.
FOLLOW_UP_KINDS = ("chat_outcome", "chat_verdict", "mcp_outcome")
# A follow-up that records a decision made on the answers (dual-model verification): its row
# carries that decision's rules, signals and obligations, like a decision row.
VERDICT_KIND = "chat_verdict"


REDACTED_BECAUSE = "(redacted)"


# fdatasync where the OS has it (not macOS), else fsync
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _covered(redactor: Redactor, parts: list[str]) -> bool:
    """True when the value at `parts` (a path in the logged action) is, contains or is inside a
    value `redactor` hashes."""
    if any(p in redactor.names for p in parts):
        return True
    return any(rule[:len(parts)] == parts or parts[:len(rule)] == rule for rule in redactor.paths)


def redact_rules(redactor: Redactor, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rules` (RuleHit dicts) with every explanation that shows a redacted value rewritten.

    An explanation starts with the path it read (`amount 150 GBP > 100 GBP`, `card.number ...
    in [...]`); when the value at that path (as an action field, `fields.<path>`, or a top-level
    attribute such as `text`) is redacted, the line becomes `<path> (redacted)`. The rule's
    `source` (its text, with the threshold) is kept. Returns `rules` itself when nothing is
    redacted; never modifies it.
    """
    if not redactor or not rules:
        return rules
    out = []
    for hit in rules:
        because = hit.get("because") if isinstance(hit, dict) else None
        if not because:
            out.append(hit)
            continue
        lines = []
        for line in because:
            path = str(line).split(" ", 1)[0]
            parts = path.split(".")
            as_field = parts[1:] if parts[0] == "fields" else parts
            if path and (_covered(redactor, ["fields", *as_field]) or _covered(redactor, parts)):
                line = f"{path} {REDACTED_BECAUSE}"
            lines.append(line)
        out.append({**hit, "because": lines})
    return out


class DecisionLogError(RuntimeError):
    """The decision could not be committed: the caller must not act on the decision."""


# A batch committed on the event loop has one waiting row and at most this many rows in all (the
# rest are follow-ups riding along): anything bigger is worth the thread switches.
INLINE_MAX_ROWS = 4
# Under an fsync per commit (synchronous FULL/EXTRA) a loop commit blocks the loop for its fsync
# (on this machine's disk 0.04 ms back to back, 0.5-1 ms at p50 and up to 1.6 ms at p99 when
# commits are 0.5-2 ms apart, as one request at a time leaves them: benchmarks/fsync_bench.py),
# and the writer thread's two switches around the same fsync cost about 0.6 ms more per lone row
# (benchmarks/mcp.md, session 19). One loop commit slower than LOOP_FSYNC_STALL_S (a disk that
# stalls) closes the loop lane for LOOP_FSYNC_BACKOFF_S seconds: a slow disk holds the loop up once
# per backoff at most.
LOOP_FSYNC_STALL_S = 0.010
LOOP_FSYNC_BACKOFF_S = 10.0
# How many checkpoint-thread passes per `wal_max_bytes` of new WAL: under load, and while the service
# is quiet (`DecisionLogger.quiet`). A pass is CPU work (SQLite copies each page with a read and a
# write, ~5 ms per pass of a quarter) on the core the event loop runs on, and the request beside it
# waits for it (benchmarks/tail_inprocess.py at one request at a time: commits beside a pass 2.6 ms
# at the median against 0.36 ms; with the thread at nice 19 as fast as the others, but then it lags
# under load). Small passes while quiet bound that wait (c=1 added p99 under FULL 2.3-3.7 ms against
# 4.1-5.7 ms, two runs each); under load fewer, larger passes copy fewer pages in all, since a page
# rewritten between two passes is copied once (a pass per 1/16 of the bound cost 17 % more CPU per
# chat at c=32).
PASSES_PER_BOUND = 4
PASSES_PER_BOUND_QUIET = 16


class _LockBusy(Exception):
    """Another connection holds SQLite's write lock (raised only where waiting is not allowed)."""


@dataclass
class LogEntry:
    """What the service logs about one decision. `record` is built from this."""

    kind: str  # evaluate | chat
    tenant: str
    action: dict[str, Any]  # the Action as submitted (redacted before it is written)
    decision: dict[str, Any]  # Decision.model_dump(mode="json")
    actor: str | None = None
    session_id: str | None = None
    model: str | None = None  # the model that answered (chat)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float | None = None
    key_id: str | None = None  # the API key that asked
    extra: dict[str, Any] = field(default_factory=dict)  # verification results, upstream usage...
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ts: float = field(default_factory=time.time)
    # set on a follow-up row (FOLLOW_UP_KINDS): the id of the decision row it completes. Such a
    # row records the outcome only; the request, signals and rules are in the row it follows.
    follows: str | None = None


@dataclass
class LoggedDecision:
    id: str
    seq: int
    row_hash: str


# (index in the batch, record, canonical JSON of the record): a row ready to be chained.
_Prepared = tuple[int, dict[str, Any], str]
# What the writer hands back per record of a batch, in order.
_Result = LoggedDecision | DecisionLogError


class DecisionLogger:
    def __init__(self, url: str, *, redact: list[str] | None = None, redaction_salt: str | None = None,
                 max_batch: int = 512, sqlite_synchronous: str = "FULL",
                 on_batch: Callable[[int], None] | None = None, follow_up_delay_s: float = 0.05,
                 wal_max_bytes: int = 16 * 1024 * 1024) -> None:
        """`wal_max_bytes` (SQLite): the WAL file size past which the writer makes SQLite start the WAL
        over (see the module docstring); the file stays within about this bound plus what is written
        between two tries (`checkpoint_rows` rows)."""
        self.url = url
        # A follow-up row (enqueue()) has no caller waiting for it: it rides along with the next
        # batch that has one, or is released on its own after this delay. One commit instead of
        # two per streamed chat when requests come one at a time; 0 writes each one at once.
        self.follow_up_delay_s = follow_up_delay_s
        self._deferred: list[dict[str, Any]] = []
        self._deferred_timer: asyncio.TimerHandle | None = None
        self.on_batch = on_batch  # called with the size of every committed batch (metrics)
        self.redactor = Redactor(redact or [], redaction_salt)
        self.max_batch = max_batch
        self._engine: Engine = make_sync_engine(url, writer=True, sqlite_synchronous=sqlite_synchronous)
        self._is_pg = self._engine.dialect.name == "postgresql"
        self._is_sqlite = self._engine.dialect.name == "sqlite"
        self._raw: Any = None  # the writer's DB-API connection (SQLite, PostgreSQL): one batch at a time
        # A batch of one waiting row (INLINE_MAX_ROWS in all) is committed on the event loop, not in
        # the writer thread, on SQLite (a WAL append of ~0.05 ms, plus an fsync under FULL/EXTRA):
        # at one request at a time the two thread switches cost more than the commit. Larger
        # batches (the service under load) always go to the thread. Under FULL/EXTRA the lane is
        # closed until `_loop_closed_until` (time.monotonic) after a loop commit that blocked the
        # loop longer than LOOP_FSYNC_STALL_S; `loop_commit_stalls` counts those commits.
        self._fsync_per_commit = self._is_sqlite and sqlite_synchronous.upper() in ("FULL", "EXTRA")
        self._loop_closed_until = 0.0
        # Whether the service is quiet now (at most QUIET_IN_FLIGHT requests in flight, set by the
        # service: policyengine.api.http). It sets how often the checkpoint thread passes
        # (PASSES_PER_BOUND_QUIET) and, under FULL/EXTRA, whether a lone row's commit may block the
        # event loop for its fsync (only while quiet, and only with `fsync_on_loop`). None: as
        # under load, and under FULL/EXTRA every commit goes to the writer thread.
        self.quiet: Callable[[], bool] | None = None
        self.fsync_on_loop = True  # the setting sqlite_fsync_on_loop
        self.loop_commit_stalls = 0
        self.loop_commits = 0  # transactions committed on the event loop (the rest in the writer thread)
        # WAL checkpoints run in their own thread on their own connection, never inside a commit a
        # request waits for (the writer's connection has wal_autocheckpoint off).
        self.checkpoint_rows = 1000
        self._since_checkpoint = 0
        self._checkpointing = False
        self.checkpoints = 0
        self._ckpt_raw: Any = None
        self._ckpt_future: Any = None  # the checkpoint thread's current job (a concurrent Future)
        # what the checkpoint thread's last pass found: the frames in the WAL, and whether the writer
        # has looked since (right after a pass, only what was appended during it is left to copy)
        self._ckpt_frames = 0
        self._ckpt_fresh = False
        self._wal_over = False  # the writer found the file past `wal_max_bytes` after its last batch
        self._copied_all = False  # the writer's last checkpoint copied every frame (the next commit starts over)
        # descriptors of the WAL index (read for its frame count, `_wal_frames`) and of the database
        # file (flushed by the checkpoint thread, `_flush_db_file`): never closed (store._heldfd)
        self._shm_fd: int | None = None
        self._db_fd: int | None = None
        self._ckpt_copied = 0  # frames copied (nBackfill) as the checkpoint thread's last pass reported
        self._wal_path_shm_missing = False
        self._used_at_pass = 0  # WAL bytes in use when the last pass started
        self._frame_bytes = 4096 + 24  # a WAL frame: a page and its header (the page size is read on connect)
        self._ckpt_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-log-ckpt",
                                                 initializer=name_os_thread, initargs=("pe-log-ckpt",)) \
            if self._is_sqlite else None
        # Invariant: the writer checkpoints only between batches and while the checkpoint thread is
        # idle (it never waits for that thread, nor for a reader: a try that cannot copy every frame,
        # because a reader holds an old snapshot, is repeated `checkpoint_rows` rows later).
        self.wal_max_bytes = wal_max_bytes
        db_path = self._engine.url.database if self._is_sqlite else None
        self._wal_path = f"{db_path}-wal" if db_path and db_path != ":memory:" and not db_path.startswith("file:") \
            else None
        self._wal_retry_at = 0  # `rows` before which the writer does not try again (after a failed try)
        self.wal_resets = 0
        self.wal_reset_failures = 0
        self.wal_peak_bytes = 0  # the largest WAL size a checkpoint saw (for /metrics and benchmarks)
        # Errors a database raises for a row's data (too long, NUL, constraint): the batch is split
        # and retried so that the other rows commit. Any other error fails the whole batch.
        self._row_errors: tuple[type[Exception], ...] = (sqlite3.DataError, sqlite3.IntegrityError)
        if self._is_pg:
            import psycopg  # the PostgreSQL driver (store.db picks it); imported only where it is used

            self._pg_operational_error: type[Exception] = psycopg.OperationalError
            self._row_errors = (psycopg.DataError, psycopg.IntegrityError)
        ph = "%s" if self._is_pg else "?"
        cols = ("seq", "id", "ts", "kind", "tenant", "actor", "session_id", "action", "effect", "model",
                "policy_hash", "record", "prev_hash", "row_hash")
        self._sql_head = "SELECT seq, head_hash FROM decision_chain WHERE id = 1" + (" FOR UPDATE" if self._is_pg else "")
        self._sql_insert = f"INSERT INTO decisions ({', '.join(cols)}) VALUES ({', '.join([ph] * len(cols))})"
        self._sql_move = f"UPDATE decision_chain SET seq = {ph}, head_hash = {ph} WHERE id = 1"
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[LoggedDecision] | None]] | None = None
        self._task: asyncio.Task[None] | None = None
        # The direct lane (`_commit_now`): a row submitted while the writer waits for work, with
        # nothing queued, is committed by `submit` itself when the batch would be committed on the
        # loop anyway (`_loop_lane()`), saving the writer task's two loop iterations. Invariants: the
        # writer thread and the writer task never touch the connection while the lane commits (the
        # writer is idle: `_writer_idle` is set only while it awaits the queue); at most one direct
        # commit per loop iteration (`_lane_open`, reopened by the next iteration), so rows submitted
        # together still form one batch; a WAL restart found due after a direct commit closes the
        # lane until the writer, after its next batch, has run it (`_restart_due`).
        self._writer_idle = False
        self._lane_open = True
        self._restart_due = False
        # the connection's busy timeout (ms) as last set: the loop's commits must not wait for the
        # write lock (0), the writer thread's may (SQLITE_BUSY_TIMEOUT_MS)
        self._busy_ms = SQLITE_BUSY_TIMEOUT_MS
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-log",
                                            initializer=name_os_thread, initargs=("pe-log-writer",))
        self._closing = False
        # figures for /metrics and benchmarks
        self.batches = 0
        self.rows = 0
        self.last_batch_size = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._writer(), name="decision-log-writer")

    async def aclose(self) -> None:
        """Flush everything queued, then stop."""
        self._closing = True
        await asyncio.sleep(0)  # a direct commit scheduled by `submit` (`_commit_soon`) runs first
        self._release_deferred()
        if self._queue is not None and self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        with contextlib.suppress(RuntimeError):  # executor already shut down
            await asyncio.get_running_loop().run_in_executor(self._executor, self._release_raw)
        self._executor.shutdown(wait=True)
        if self._ckpt_executor is not None:
            self._ckpt_executor.shutdown(wait=True)
            raw, self._ckpt_raw = self._ckpt_raw, None
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.close()
        self._engine.dispose()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    # -- API ------------------------------------------------------------------------

    def build_record(self, e: LogEntry) -> dict[str, Any]:
        d = e.decision
        if e.follows is not None:
            return {
                "id": e.id, "ts": round(e.ts, 6), "kind": e.kind, "tenant": e.tenant, "actor": e.actor,
                "session_id": e.session_id, "action": d.get("action") or e.action.get("action"),
                "effect": d.get("effect"), "model": e.model, "policy_hash": d.get("policy_hash") or "",
                "follows": e.follows, "routing": d.get("routing") or {}, "tags": d.get("tags") or [],
                "attempts": e.attempts, "latency_ms": None if e.latency_ms is None else round(e.latency_ms, 3),
                "key_id": e.key_id, "extra": self.redactor.redact(e.extra) if e.extra else {},
                **({"signals": self.redactor.redact(d.get("signals") or {}),
                    "rules": redact_rules(self.redactor, d.get("rules") or []),
                    "obligations": d.get("obligations") or [], "verification": d.get("verification")}
                   if e.kind == VERDICT_KIND else {}),
            }
        return {
            "id": e.id,
            "ts": round(e.ts, 6),
            "kind": e.kind,
            "tenant": e.tenant,
            "actor": e.actor,
            "session_id": e.session_id,
            "action": d.get("action") or e.action.get("action"),
            "effect": d.get("effect"),
            "model": e.model,
            "policy_hash": d.get("policy_hash") or "",
            "policy_name": d.get("policy_name"),
            "policy_version": d.get("policy_version"),
            "request": self.redactor.redact(e.action),
            "signals": self.redactor.redact(d.get("signals") or {}),
            "rules": redact_rules(self.redactor, d.get("rules") or []),
            **({"limits": d["limits"]} if d.get("limits") else {}),  # the limits and budgets that counted it
            # the shadow rules that fired (would-be effects, never enforced); absent when none did
            **({"shadow": redact_rules(self.redactor, d["shadow"]), "shadow_effect": d.get("shadow_effect")}
               if d.get("shadow") else {}),
            "routing": d.get("routing") or {},
            "obligations": d.get("obligations") or [],
            "tags": d.get("tags") or [],
            "verification": d.get("verification"),
            "default_applied": d.get("default_applied", False),
            "attempts": e.attempts,
            "latency_ms": None if e.latency_ms is None else round(e.latency_ms, 3),
            "key_id": e.key_id,
            "extra": self.redactor.redact(e.extra) if e.extra else {},
        }

    async def log(self, entry: LogEntry) -> LoggedDecision:
        """Commit the decision; returns after the row is durable. Raises DecisionLogError."""
        return await self.submit(entry)

    def submit(self, entry: LogEntry) -> asyncio.Future[LoggedDecision]:
        """Queue the row now; the future resolves once it is committed (or fails with
        DecisionLogError). For callers that have other work to do while it commits."""
        if self._queue is None or self._task is None or self._task.done():
            raise DecisionLogError("decision log is not running")
        if self._closing:
            raise DecisionLogError("decision log is shutting down")
        record = self.build_record(entry)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[LoggedDecision] = loop.create_future()
        if self._writer_idle and self._lane_open and not self._restart_due and self._queue.empty() and self._loop_lane():
            if self._fsync_per_commit:
                # the fsync blocks the loop: run it in the next iteration, once the caller has gone on
                # to its own I/O (a chat's upstream request is written by then), so that the two overlap
                self._lane_open = False
                loop.call_soon(self._commit_soon, record, fut, loop)
            else:
                self._commit_now(record, fut, loop)
        else:
            self._queue.put_nowait((record, fut))
        return fut

    def _commit_now(self, record: dict[str, Any], fut: asyncio.Future[LoggedDecision],
                    loop: asyncio.AbstractEventLoop) -> None:
        """The direct lane: `record` (with deferred follow-ups riding along) committed on the loop
        now, as the writer would commit it inline; `fut` is resolved before this returns. When the
        write lock is taken or a row is refused, the rows go to the writer's queue instead (its
        thread waits for the lock and isolates the bad row)."""
        assert self._queue is not None
        batch: list[tuple[dict[str, Any], asyncio.Future[LoggedDecision] | None]] = [(record, fut)]
        batch += [(r, None) for r in self._take_deferred(INLINE_MAX_ROWS - 1)]
        self._lane_open = False
        try:
            results = self._append_inline([r for r, _ in batch])
        except Exception as exc:
            self._fail(batch, exc)
            loop.call_soon(self._reopen_lane, False)
            return
        if results is None:
            for item in batch:
                self._queue.put_nowait(item)
            loop.call_soon(self._reopen_lane, False)
            return
        self._deliver(batch, results)
        loop.call_soon(self._reopen_lane, True)  # the WAL's bookkeeping: off the caller's time

    def _commit_soon(self, record: dict[str, Any], fut: asyncio.Future[LoggedDecision],
                     loop: asyncio.AbstractEventLoop) -> None:
        """The direct lane under an fsync per commit, one loop iteration after `submit`: committed
        on the loop while the writer still waits for work (it has taken nothing yet, so rows queued
        meanwhile, submitted after this one, follow it in the chain) and the loop is still quiet
        (requests that came in meanwhile would wait for the fsync), else handed to the writer."""
        assert self._queue is not None
        if self._writer_idle and not self._restart_due and self._loop_lane():
            self._commit_now(record, fut, loop)
            return
        if self._closing:  # the writer is finishing its last batch: nothing will take this row
            if not fut.done():  # (a caller that went away cancelled it)
                fut.set_exception(DecisionLogError("decision log is shutting down"))
        else:
            self._queue.put_nowait((record, fut))
        loop.call_soon(self._reopen_lane, False)

    def _reopen_lane(self, committed: bool) -> None:
        """The next loop iteration after a direct commit: the WAL's bookkeeping for it (unless the
        writer took a batch meanwhile: its own bookkeeping after that batch covers this one),
        then the lane is open again."""
        if committed and self._writer_idle and not self._closing:
            self._restart_due = self._wal_due() or self._restart_due
        self._lane_open = True

    def _fail(self, batch: list[tuple[dict[str, Any], asyncio.Future[LoggedDecision] | None]],
              exc: Exception) -> None:
        """A batch that could not be committed: every waiter gets DecisionLogError."""
        log.error("decision log batch of %d failed: %s", len(batch), exc)
        err = DecisionLogError(f"decision log write failed: {type(exc).__name__}: {exc}")
        for _, fut in batch:
            if fut is not None and not fut.done():
                fut.set_exception(err)

    def _deliver(self, batch: list[tuple[dict[str, Any], asyncio.Future[LoggedDecision] | None]],
                 results: list[_Result]) -> None:
        """Each waiter of a committed batch gets its row's LoggedDecision (or the DecisionLogError
        of its refused row); the batch is counted."""
        committed = 0
        for (rec, fut), res in zip(batch, results, strict=True):
            if isinstance(res, DecisionLogError):
                log.error("decision log row %s refused: %s", rec.get("id"), res)
                if fut is not None and not fut.done():
                    fut.set_exception(res)
                continue
            committed += 1
            if fut is not None and not fut.done():
                fut.set_result(res)
        if committed:
            self._committed(committed)

    def enqueue(self, entry: LogEntry) -> None:
        """Queue a row without waiting for its commit (a follow-up row, written after the response).

        It goes through the same group commit and hash chain, with the next batch that has a caller
        waiting or, failing one, after `follow_up_delay_s`; a failed batch is logged. `aclose()`
        flushes everything, so a graceful shutdown loses nothing; a crash loses at most the rows
        of the last `follow_up_delay_s`. Raises DecisionLogError only when the log is not running.
        """
        if self._queue is None or self._task is None or self._task.done() or self._closing:
            raise DecisionLogError("decision log is not running")
        record = self.build_record(entry)
        if self.follow_up_delay_s <= 0:
            self._queue.put_nowait((record, None))
            return
        self._deferred.append(record)
        if self._deferred_timer is None:
            self._deferred_timer = asyncio.get_running_loop().call_later(self.follow_up_delay_s,
                                                                         self._release_deferred)

    def _take_deferred(self, room: int) -> list[dict[str, Any]]:
        """Up to `room` deferred follow-up rows, to ride along with the commit being made."""
        if not self._deferred:
            return []
        room = max(room, 0)
        taken = self._deferred[:room]
        del self._deferred[:room]
        if not self._deferred and self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        return taken

    def _committed(self, n: int) -> None:
        self.batches += 1
        self.rows += n
        self.last_batch_size = n
        if self.on_batch is not None:
            self.on_batch(n)
        self._since_checkpoint += n

    def _start_pass(self) -> None:
        """Hand a PASSIVE checkpoint to the checkpoint thread."""
        assert self._ckpt_executor is not None
        self._since_checkpoint = 0
        self._checkpointing = True
        fut = self._ckpt_future = self._ckpt_executor.submit(self._checkpoint)
        fut.add_done_callback(self._checkpoint_done)

    def _wal_frames(self) -> int | None:
        """The frames in the WAL now (`mxFrame` of the WAL-index header, at byte 16 of the -shm file,
        sqlite.org/walformat.html), read without a lock: a figure to schedule checkpoints by, not to
        trust with data. None when there is no such file to read."""
        if self._shm_fd is None:
            if self._wal_path is None or self._raw is None:
                return None
            if not hasattr(os, "pread"):  # (not on Windows: rows count instead)
                self._wal_path_shm_missing = True
                return None
            try:
                self._shm_fd = held_fd(self._wal_path[:-4] + "-shm")
            except OSError:
                self._wal_path_shm_missing = True
                return None
        try:
            return int.from_bytes(os.pread(self._shm_fd, 4, 16), sys.byteorder)
        except OSError:
            return None

    def _checkpoint(self) -> None:
        """PASSIVE: copies what it can without waiting for (or blocking) the writer or readers (it
        cannot copy every frame while the writer appends: see `_restart_wal`)."""
        if self._ckpt_raw is None:
            self._ckpt_raw = self._engine.raw_connection()
        cur = self._ckpt_raw.driver_connection.cursor()
        try:
            _, frames, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            cur.close()
        self._ckpt_frames = max(int(frames), 0)
        self.checkpoints += 1
        if copied > 0 and copied != self._ckpt_copied:
            self._flush_db_file()
        self._ckpt_copied = copied

    def _flush_db_file(self) -> None:
        """fdatasync the database file, in the checkpoint thread, after a pass that copied frames.
        SQLite syncs the database file only in a checkpoint that copies every frame, which is the
        writer's `_restart_wal`: a partial pass leaves its copies in the page cache, so without this
        the restart's sync wrote back every page the passes had copied since the last restart (12 ms
        with a 450 MB log at one request at a time, benchmarks/tail_inprocess.py --http --prefill),
        and the request behind it waited. A failure is logged and left to that sync."""
        if self._wal_path is None:
            return
        try:
            if self._db_fd is None:
                self._db_fd = held_fd(self._wal_path[:-4])
            _fdatasync(self._db_fd)
        except OSError as exc:
            log.warning("flushing the decision log's database file after a checkpoint pass failed: %s", exc)

    def _checkpoint_done(self, fut: Any) -> None:  # runs in the checkpoint thread
        self._ckpt_fresh = fut.exception() is None
        self._checkpointing = False
        if fut.exception() is not None:
            log.warning("WAL checkpoint failed (retried after the next %d rows): %s", self.checkpoint_rows,
                        fut.exception())

    def wal_size(self) -> int | None:
        """The WAL file's size in bytes now (None: not SQLite, or no WAL file)."""
        if self._wal_path is None:
            return None
        try:
            return os.path.getsize(self._wal_path)
        except OSError:
            return None

    def _restart_wal(self) -> bool:
        """PASSIVE checkpoint on the writer's own connection, in the writer thread, between two batches:
        no frame is appended while it runs, so it copies every frame no reader still needs, which is
        only what came after the checkpoint thread's last pass. When that is every frame, the next
        commit starts the WAL over from its beginning (SQLite does so when no reader is still using
        the WAL) and cuts the file back to `journal_size_limit`. Never waits (PASSIVE calls no busy
        handler). True when every frame was copied."""
        if self._raw is None:
            return False
        cur = self._raw.driver_connection.cursor()
        try:
            busy, frames, copied = cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            cur.close()
        if busy or frames != copied:
            self.wal_reset_failures += 1
            log.info("WAL restart deferred: a reader still needs %s of its %s frames (WAL %s bytes)",
                     frames - copied, frames, self.wal_size())
            return False
        self.wal_resets += 1
        return True

    async def _maybe_restart_wal(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a batch, when the checkpoint thread is idle (SQLite runs one checkpoint at a time; the
        next batch looks again rather than wait for it): `_restart_wal` in the writer thread right after
        a pass of the checkpoint thread that found the WAL over 3/4 of `wal_max_bytes` (so the writer
        copies only the frames of the batches committed during that pass), or whenever the log in the
        WAL is past `wal_max_bytes`; otherwise a pass of the checkpoint thread once the WAL has grown by
        1/PASSES_PER_BOUND of `wal_max_bytes` (1/PASSES_PER_BOUND_QUIET while `quiet()`), or by
        `checkpoint_rows` rows, since the last one. A restart found
        due after a direct commit (`_restart_due`) runs here, after the writer's next batch."""
        pending, self._restart_due = self._restart_due, False
        due = self._wal_due()
        if pending and not due:
            if self._checkpointing:  # never beside the checkpoint thread: after a later batch
                self._restart_due = True
                return
            due = True
        if not due:
            return
        try:
            # in the thread even under NORMAL: a checkpoint fsyncs the WAL and the database
            self._copied_all = await loop.run_in_executor(self._executor, self._restart_wal)
        except Exception as exc:
            self.wal_reset_failures += 1
            log.warning("WAL checkpoint in the writer failed (retried after %d rows): %s",
                        self.checkpoint_rows, exc)
        if not self._copied_all:
            self._wal_retry_at = self.rows + self.checkpoint_rows

    def _wal_due(self) -> bool:
        """The WAL bookkeeping after a batch (no I/O but a read of the WAL index, or of the WAL's
        size where there is no index; a pass handed to the checkpoint thread when one is due).
        True when `_restart_wal` is due in the writer thread now (see `_maybe_restart_wal`)."""
        if self._wal_path is None:
            return False
        frames = None if self._wal_path_shm_missing else self._wal_frames()
        if frames is None:
            size = self.wal_size()
            if size is None:
                return False
            used = size
        else:
            # bytes of log since the WAL last started over (the file keeps its size: it says less);
            # the frames counted by the index are all in the file
            used = frames * self._frame_bytes
        if used > self.wal_peak_bytes:
            self.wal_peak_bytes = used
        over = self._wal_over = used > self.wal_max_bytes
        if over and self._copied_all:
            # every frame was copied, yet the commit since did not start the WAL over: a reader was
            # using it. Copying again now would only find that commit's frames: wait a while.
            self.wal_reset_failures += 1
            self._wal_retry_at = self.rows + self.checkpoint_rows
        self._copied_all = False
        if self._checkpointing:
            return False
        if self.rows >= self._wal_retry_at:
            # soon after a pass of the checkpoint thread that found the WAL 3/4 full: little is left to copy
            soon = self._ckpt_fresh and self._ckpt_frames * self._frame_bytes * 4 > self.wal_max_bytes * 3
            self._ckpt_fresh = False
            if soon or over:
                return True
        if not over and self._ckpt_executor is not None:
            # a pass every 1/PASSES_PER_BOUND of the bound of new frames (or `checkpoint_rows` rows):
            # the writer's own copy then finds about that much at most
            grown = used - self._used_at_pass if used >= self._used_at_pass else used
            quiet = self.quiet is not None and self.quiet()
            per_bound = PASSES_PER_BOUND_QUIET if quiet else PASSES_PER_BOUND
            if grown * per_bound >= self.wal_max_bytes or self._since_checkpoint >= self.checkpoint_rows:
                self._used_at_pass = used
                self._start_pass()
        return False

    def _release_deferred(self) -> None:
        """Hand the deferred follow-up rows to the writer (their delay is up, or the log closes)."""
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        records, self._deferred = self._deferred, []
        if self._queue is not None:
            for record in records:
                self._queue.put_nowait((record, None))

    # -- writer ---------------------------------------------------------------------

    async def _writer(self) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            self._writer_idle = True
            try:
                first = await q.get()
            finally:
                self._writer_idle = False
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                except asyncio.QueueEmpty:
                    break
            queued = len(batch)
            batch += [(r, None) for r in self._take_deferred(self.max_batch - queued)]  # follow-ups ride along
            try:
                records = [r for r, _ in batch]
                inline = queued == 1 and len(records) <= INLINE_MAX_ROWS and self._loop_lane()
                results = self._append_inline(records) if inline else None
                if results is None:
                    results = await loop.run_in_executor(self._executor, self._append, records)
            except Exception as exc:
                self._fail(batch, exc)
            else:
                self._deliver(batch, results)
            finally:
                for _ in range(queued):
                    q.task_done()
            # between two batches (every waiter of this one is answered), never inside a commit
            await self._maybe_restart_wal(loop)

    def _prepare(self, records: list[dict[str, Any]]) -> tuple[list[_Prepared], list[_Result | None]]:
        """The rows that can be stored, serialised (outside any transaction), and a result slot per
        record: a DecisionLogError for each row refused here, None for the rows to commit."""
        good: list[_Prepared] = []
        results: list[_Result | None] = [None] * len(records)
        for i, rec in enumerate(records):
            try:
                good.append((i, rec, canonical_json(rec)))
            except Exception as exc:  # a record that cannot be serialised
                results[i] = DecisionLogError(f"decision {rec.get('id')!r} cannot be logged: "
                                              f"{type(exc).__name__}: {exc}")
        return good, results

    def _rows(self, head: Any, good: list[_Prepared]) -> tuple[list[tuple[Any, ...]], list[LoggedDecision]]:
        if head is None:
            raise DecisionLogError("chain head row missing: run `policyengine migrate`")
        seq, prev = head[0], head[1]
        rows, out = [], []
        for _, rec, text in good:
            seq += 1
            h = row_hash(prev, text)
            rows.append((seq, rec["id"], rec["ts"], rec["kind"], rec["tenant"], rec["actor"], rec["session_id"],
                         rec["action"], rec["effect"], rec["model"], rec["policy_hash"], text, prev, h))
            out.append(LoggedDecision(id=rec["id"], seq=seq, row_hash=h))
            prev = h
        return rows, out

    def _append(self, records: list[dict[str, Any]]) -> list[_Result]:
        """Commit `records`; one result per record, in order: its LoggedDecision, or the
        DecisionLogError of a row that could not be stored (every other row is committed).

        One transaction per batch: lock the chain head, hash and insert the rows, move the head.
        Only when the database refuses the batch for a row's data is it split (see
        `_commit_isolating`). Plain driver SQL (no ORM/Core compilation per batch): the writer
        thread holds the GIL as briefly as possible, so the event loop keeps serving while a batch
        commits. On SQLite the writer thread keeps one DB-API connection (set up by the engine: WAL,
        synchronous, busy timeout, autocommit mode) and drives the transaction itself: SQLAlchemy's
        per-batch pool checkout, events and result objects cost as much CPU as the commit
        (benchmarks/service.md).
        """
        good, results = self._prepare(records)
        if good:
            self._commit_isolating(good, results, first=True)
        return results  # type: ignore[return-value]  # every slot is filled

    def _commit_isolating(self, good: list[_Prepared], results: list[_Result | None], *, first: bool) -> None:
        """Commit `good` in one transaction; if the database refuses it for a row's data, commit
        each half on its own (recursively), so only the offending rows fail. A failed transaction
        wrote nothing, and each retry re-reads the head, so the chain stays gap-free. An error that
        is not about a row's data fails the batch: raised on the first attempt (the writer fails
        every waiter), recorded for the rows of that part on a retry (earlier parts are committed)."""
        try:
            # (store.db accepts SQLite and PostgreSQL URLs only)
            out = self._append_sqlite(good) if self._is_sqlite else self._append_pg(good)
        except self._row_errors as exc:
            if len(good) == 1:
                i, rec, _ = good[0]
                results[i] = DecisionLogError(f"decision {rec['id']!r} refused by the database: "
                                              f"{type(exc).__name__}: {exc}")
                return
            mid = len(good) // 2
            self._commit_isolating(good[:mid], results, first=False)
            self._commit_isolating(good[mid:], results, first=False)
            return
        except Exception as exc:
            if first:
                raise
            for i, _, _ in good:
                results[i] = DecisionLogError(f"decision log write failed: {type(exc).__name__}: {exc}")
            return
        for (i, _, _), res in zip(good, out, strict=True):
            results[i] = res

    def _append_pg(self, good: list[_Prepared]) -> list[LoggedDecision]:
        """One transaction on one held psycopg connection, in two round trips: the locked chain
        head, then the inserts, the head move and COMMIT sent as one pipeline. (The pooled path
        paid a pre-ping, BEGIN, SELECT, INSERT, UPDATE and COMMIT: six.) A transaction refused for
        a row's data is rolled back and the connection kept; a connection that fails otherwise is
        dropped and the next batch opens a new one."""
        for attempt in (1, 2):
            if self._raw is None:
                self._raw = self._engine.raw_connection()
            conn = self._raw.driver_connection
            try:
                with conn.cursor() as cur:
                    cur.execute(self._sql_head)  # opens the transaction (psycopg is not in autocommit)
                    head = cur.fetchone()
                break
            except self._pg_operational_error:
                # The held connection died while idle (server restart, idle timeout, a proxy): nothing
                # of this batch was sent, so one retry on a fresh connection is safe.
                self._drop_raw()
                if attempt == 2:
                    raise
            except BaseException:
                self._drop_raw()
                raise
        try:
            with conn.cursor() as cur:
                rows, out = self._rows(head, good)
                with conn.pipeline():
                    cur.executemany(self._sql_insert, rows)
                    cur.execute(self._sql_move, (rows[-1][0], rows[-1][-1]))
                    conn.commit()
        except self._row_errors:
            self._rollback_or_drop(conn.rollback)
            raise
        except BaseException:
            self._drop_raw()
            raise
        return out

    def _loop_lane(self) -> bool:
        """Whether a lone row may be committed on the event loop now: SQLite, and under an fsync per
        commit only with `fsync_on_loop`, while `quiet()` says the loop is quiet and no recent loop
        commit stalled it (see LOOP_FSYNC_STALL_S)."""
        if not self._fsync_per_commit:
            return self._is_sqlite
        quiet = self.quiet
        return (self.fsync_on_loop and quiet is not None and time.monotonic() >= self._loop_closed_until
                and quiet())

    def _append_inline(self, records: list[dict[str, Any]]) -> list[_Result] | None:
        """`_append` on the event loop, or None (nothing written) when another connection holds the
        write lock, or when the database refused a row (the writer thread then isolates it). It
        must not wait for that lock here: the holder may be a transaction of this very process
        (aiosqlite, approvals, keys) that needs the loop to finish."""
        good, results = self._prepare(records)
        if good:
            t0, opened = time.monotonic(), self._raw is not None  # opening the connection is not a stall
            try:
                out = self._append_sqlite(good, wait=False)
            except _LockBusy:
                return None
            except self._row_errors:
                return None
            finally:
                if self._fsync_per_commit and opened:
                    self._check_stall(time.monotonic() - t0)
            for (i, _, _), res in zip(good, out, strict=True):
                results[i] = res
            self.loop_commits += 1
        return results  # type: ignore[return-value]  # every slot is filled

    def _check_stall(self, took_s: float) -> None:
        """After a loop commit under an fsync per commit: one that held the loop longer than
        LOOP_FSYNC_STALL_S closes the loop lane for LOOP_FSYNC_BACKOFF_S (the writer thread commits
        meanwhile)."""
        if took_s > LOOP_FSYNC_STALL_S:
            self.loop_commit_stalls += 1
            self._loop_closed_until = time.monotonic() + LOOP_FSYNC_BACKOFF_S
            log.warning("a decision-log commit held the event loop for %.1f ms (fsync): commits go to the "
                        "writer thread for the next %.0f s", took_s * 1000, LOOP_FSYNC_BACKOFF_S)

    def _append_sqlite(self, good: list[_Prepared], wait: bool = True) -> list[LoggedDecision]:
        if self._raw is None:
            raw = self._engine.raw_connection()  # runs the engine's connect hook (pragmas)
            raw.driver_connection.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint
            # a WAL that starts over (after a checkpoint that copied every frame) is cut back to this
            # size instead of keeping its largest size on disk; below it, commits overwrite the file
            raw.driver_connection.execute(f"PRAGMA journal_size_limit={int(self.wal_max_bytes)}")
            self._frame_bytes = int(raw.driver_connection.execute("PRAGMA page_size").fetchone()[0]) + 24
            self._raw = raw
            self._busy_ms = SQLITE_BUSY_TIMEOUT_MS  # as the connect hook set it
        cur = self._raw.driver_connection.cursor()
        try:
            busy_ms = SQLITE_BUSY_TIMEOUT_MS if wait else 0
            if busy_ms != self._busy_ms:  # only BEGIN IMMEDIATE ever waits for the lock (WAL mode)
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                self._busy_ms = busy_ms
            if wait:
                cur.execute("BEGIN IMMEDIATE")  # waits for the lock up to the busy timeout
            else:
                try:
                    cur.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise _LockBusy from exc
                    raise
            rows, out = self._rows(cur.execute(self._sql_head).fetchone(), good)
            cur.executemany(self._sql_insert, rows)
            cur.execute(self._sql_move, (rows[-1][0], rows[-1][-1]))
            cur.execute("COMMIT")
        except _LockBusy:
            raise  # nothing was begun: the connection is fine
        except self._row_errors:
            self._rollback_or_drop(lambda: cur.execute("ROLLBACK"))
            raise
        except BaseException:
            self._drop_raw()  # rolls back whatever is open; the next batch gets a fresh connection
            raise
        finally:
            cur.close()
        return out

    def _rollback_or_drop(self, rollback: Callable[[], Any]) -> None:
        """End a transaction the database refused (nothing of it is written); keep the connection
        unless the rollback itself fails."""
        try:
            rollback()
        except Exception:
            self._drop_raw()

    def _release_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()  # back to the pool, which engine.dispose() closes

    def _drop_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.invalidate()
