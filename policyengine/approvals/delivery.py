"""The outbox worker: claims due deliveries with a lease, sends them, retries with backoff.

Every replica runs it; a delivery is claimed by a compare-and-set on its version,
so one replica sends it. A crash mid-send leaves the lease to expire and the
delivery is retried (at-least-once; receivers deduplicate on the Idempotency-Key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from policyengine.approvals.metrics import ApprovalMetrics
from policyengine.approvals.settings import ApprovalSettings
from policyengine.approvals.tables import approvals_table, outbox_table
from policyengine.notifier import OutboxSender, backoff_s
from policyengine.notifier.errors import DeliveryError

log = logging.getLogger("policyengine.approvals.delivery")

LEASE_S = 60.0
DELIVERY_CONCURRENCY = 4


class OutboxWorker:
    def __init__(
        self, engine: AsyncEngine, dispatcher: OutboxSender | None, settings: ApprovalSettings,
        clock: Callable[[], Any], metrics: ApprovalMetrics | None = None,
    ) -> None:
        self.engine, self.dispatcher, self.settings, self.clock, self.metrics = engine, dispatcher, settings, clock, metrics
        self._tasks: set[asyncio.Task[Any]] = set()
        self._kick_running = False
        self._kick_again = False

    async def deliver_due(self, *, limit: int = 100) -> int:
        """Deliver outbox entries that are due; each is claimed by a lease so one replica sends it."""
        if self.dispatcher is None:
            return 0
        now = self.clock()
        async with self.engine.connect() as conn:
            due = (
                await conn.execute(
                    sa.select(outbox_table.c.id, outbox_table.c.version).where(
                        outbox_table.c.state == "pending",
                        outbox_table.c.next_attempt_at <= now,
                        sa.or_(outbox_table.c.lease_until.is_(None), outbox_table.c.lease_until < now),
                    ).order_by(outbox_table.c.next_attempt_at).limit(limit)
                )
            ).all()
        gate = asyncio.Semaphore(DELIVERY_CONCURRENCY)  # a slow endpoint must not hold up the others

        async def claim_and_send(outbox_id: str, version: int) -> int:
            async with gate:
                async with self.engine.begin() as conn:
                    res = await conn.execute(
                        outbox_table.update()
                        .where(outbox_table.c.id == outbox_id, outbox_table.c.version == version,
                               outbox_table.c.state == "pending")
                        .values(lease_until=now + timedelta(seconds=LEASE_S),
                                attempts=outbox_table.c.attempts + 1, version=version + 1)
                    )
                    if res.rowcount != 1:
                        return 0  # claimed by another replica (or by a concurrent kick)
                    item = (await conn.execute(
                        sa.select(outbox_table).where(outbox_table.c.id == outbox_id)
                    )).one()
                return await self._deliver_one(item)

        results = await asyncio.gather(*(claim_and_send(i, v) for i, v in due))
        return sum(results)

    async def _deliver_one(self, item: Any) -> int:
        assert self.dispatcher is not None
        payload = dict(item.payload)
        try:
            if item.kind == "slack_update" and not payload.get("ts"):
                payload = await self._resolve_slack_ts(item, payload)
            if item.kind == "callback":
                payload = await self._exact_action(item, payload)
            result = await self.dispatcher.send(item.kind, item.target, payload, key=item.id)
        except DeliveryError as e:
            now = self.clock()
            dead = not e.retriable or item.attempts >= item.max_attempts
            delay = backoff_s(item.attempts, base_s=self.settings.delivery_backoff_s,
                              max_s=self.settings.delivery_backoff_max_s, retry_after_s=e.retry_after_s)
            async with self.engine.begin() as conn:
                await conn.execute(
                    outbox_table.update().where(outbox_table.c.id == item.id).values(
                        state="dead" if dead else "pending", lease_until=None, last_error=str(e)[:2000],
                        next_attempt_at=now + timedelta(seconds=delay), version=outbox_table.c.version + 1,
                    )
                )
            if self.metrics is not None:
                self.metrics.delivery(item.kind, "dead" if dead else "retry")
            (log.error if dead else log.warning)(
                "delivery %s %s for approval %s failed (attempt %d/%d%s): %s", item.kind, item.purpose,
                item.approval_id, item.attempts, item.max_attempts, ", giving up" if dead else "", e,
            )
            return 0
        except Exception as e:  # a bug in a sender must not kill the sweep; retry later
            log.exception("delivery %s crashed", item.id)
            async with self.engine.begin() as conn:
                await conn.execute(outbox_table.update().where(outbox_table.c.id == item.id).values(
                    lease_until=None, last_error=f"{type(e).__name__}: {e}"[:2000],
                    next_attempt_at=self.clock() + timedelta(seconds=self.settings.delivery_backoff_s),
                    version=outbox_table.c.version + 1))
            return 0
        if self.metrics is not None:
            self.metrics.delivery(item.kind, "delivered")
        async with self.engine.begin() as conn:
            await conn.execute(
                outbox_table.update().where(outbox_table.c.id == item.id).values(
                    state="delivered", lease_until=None, delivered_at=self.clock(), result=result, last_error=None,
                    version=outbox_table.c.version + 1,
                )
            )
        return 1

    async def _exact_action(self, item: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """A callback's outcome with the exact approved action, read from the approval now.

        The outbox stores the outcome with redacted fields hashed; the application needs the
        action it will run (and checks it against `action_hash`), so it is filled in here,
        only when the approval still holds the revision the outcome names."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(approvals_table.c.action_json, approvals_table.c.action_hash)
                .where(approvals_table.c.id == item.approval_id)
            )).first()
        if row is None or row.action_hash != payload.get("action_hash"):
            return payload
        return {**payload, "action": row.action_json}

    async def _resolve_slack_ts(self, item: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """The channel / ts of the message to replace: from the delivered request message."""
        async with self.engine.connect() as conn:
            posts = (await conn.execute(
                sa.select(outbox_table.c.state, outbox_table.c.result)
                .where(outbox_table.c.approval_id == item.approval_id, outbox_table.c.kind == "slack",
                       outbox_table.c.target == item.target)
                .order_by(outbox_table.c.created_at)
            )).all()
        for p in posts:
            if p.state == "delivered" and p.result and p.result.get("ts"):
                return {**payload, "channel": p.result.get("channel") or payload.get("channel"), "ts": p.result["ts"]}
        if any(p.state == "pending" for p in posts):
            # The request message is still being delivered: update it once it is there.
            raise DeliveryError("the Slack message to update has not been posted yet", retriable=True,
                                retry_after_s=self.settings.delivery_backoff_s)
        raise DeliveryError("no Slack message was posted for this approval; nothing to update", retriable=False)

    async def backlog(self) -> dict[str, int]:
        """How many approvals wait for a reviewer and how many deliveries gave up."""
        async with self.engine.connect() as conn:
            pending = (await conn.execute(
                sa.select(sa.func.count()).select_from(approvals_table)
                .where(approvals_table.c.state == "pending")
            )).scalar()
            dead = (await conn.execute(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.state == "dead")
            )).scalar()
        return {"pending": int(pending or 0), "dead_deliveries": int(dead or 0)}

    async def redeliver(self, outbox_ids: Sequence[str] | None = None) -> int:
        """Put dead deliveries back in the queue (all of them, or the given ids) with a fresh attempt budget."""
        q = outbox_table.update().where(outbox_table.c.state == "dead")
        if outbox_ids is not None:
            q = q.where(outbox_table.c.id.in_(list(outbox_ids)))
        async with self.engine.begin() as conn:
            res = await conn.execute(q.values(state="pending", attempts=0, next_attempt_at=self.clock(),
                                              lease_until=None, version=outbox_table.c.version + 1))
        self.kick()
        return int(res.rowcount or 0)

    def kick(self) -> None:
        """Try the outbox now, in the background (the periodic sweep is the safety net).

        Kicks coalesce: while one background delivery runs, further kicks only ask it to
        run once more, so a burst of holds does not start a burst of outbox scans.
        """
        if self.dispatcher is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._kick_running:
            self._kick_again = True
            return
        self._kick_running = True
        task = loop.create_task(self._safe_deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _safe_deliver(self) -> None:
        try:
            while True:
                self._kick_again = False
                try:
                    await self.deliver_due()
                except Exception:  # pragma: no cover - logged, retried by the sweep
                    log.exception("background delivery failed")
                if not self._kick_again:
                    break
        finally:
            self._kick_running = False

    async def drain(self) -> None:
        """Wait for background deliveries (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
