"""Tables for human-in-the-loop approvals, their audit trail and the delivery outbox.

Timestamps are naive UTC (portable between SQLite and PostgreSQL). Deadlines
(`timeout_at`, `next_reminder_at`, `next_attempt_at`) live here, not in memory,
so they survive restarts and every replica can sweep them with atomic updates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DDL, JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

# one metadata for every table, one Alembic history
from policyengine.store.base import Base, BigInt


class ApprovalRow(Base):
    __tablename__ = "approvals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(20), index=True, default="pending")
    effect: Mapped[str] = mapped_column(String(30))  # require_approval | escalate
    action_name: Mapped[str] = mapped_column(String(200))
    action_json: Mapped[dict[str, Any]] = mapped_column(JSON)  # current revision
    action_hash: Mapped[str] = mapped_column(String(64))
    original_action_hash: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    decision_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    answers_json: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # a held chat with dual answers: the text the reviewer released (the chosen answer or their edit)
    # and the model whose answer it is (NULL for an edit)
    released_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    released_answer_from: Mapped[str | None] = mapped_column(String(200), nullable=True)
    groups: Mapped[list[str]] = mapped_column(JSON)  # reviewers' groups (empty = any reviewer of the tenant)
    channels: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    requester_actor: Mapped[str | None] = mapped_column(String(200))
    requester_subject: Mapped[str | None] = mapped_column(String(200))
    requester_key_id: Mapped[str | None] = mapped_column(String(200))
    remind_every_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    timeout_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    on_timeout: Mapped[str] = mapped_column(String(20), default="deny")
    escalate_to: Mapped[str | None] = mapped_column(String(200))
    timeout_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    next_reminder_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(300))
    decided_via: Mapped[str | None] = mapped_column(String(30))
    decided_ip: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    policy_name: Mapped[str | None] = mapped_column(String(200))
    policy_hash: Mapped[str | None] = mapped_column(String(64))
    decision_id: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        Index("ix_approvals_pending_timeout", "state", "timeout_at"),
        Index("ix_approvals_pending_reminder", "state", "next_reminder_at"),
        # A retried hold with the same request_id returns the existing approval.
        Index("uq_approvals_tenant_request", "tenant", "request_id", unique=True),
    )


class ApprovalEventRow(Base):
    """Audit trail: every transition and every refused attempt (who, when, from where, why)."""

    __tablename__ = "approval_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    approval_id: Mapped[str] = mapped_column(String(40), ForeignKey("approvals.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(30))  # created approved rejected edited expired escalated reminded refused notified
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str | None] = mapped_column(String(300))
    via: Mapped[str | None] = mapped_column(String(30))
    ip: Mapped[str | None] = mapped_column(String(100))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The events' hash chain (policyengine.store.approval_chain): row_hash = sha256(prev_hash ||
    # canonical JSON of chain_seq and every column above but `id`); chain_seq gap-free from 1.
    # NULL on events written before the chain existed (or by a writer that does not chain them).
    chain_seq: Mapped[int | None] = mapped_column(BigInt, nullable=True, unique=True, index=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    row_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApprovalEventChain(Base):
    """The head of the approval events' hash chain: one row (id=1), locked by each append."""

    __tablename__ = "approval_event_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInt)
    head_hash: Mapped[str] = mapped_column(String(64))


# A table made by `create_all` (tests, embedded use) gets the genesis head, as the migration's does.
event.listen(ApprovalEventChain.__table__, "after_create",
             DDL("INSERT INTO approval_event_chain (id, seq, head_hash) VALUES (1, 0, '" + "0" * 64 + "')"))


class ApprovalRevisionRow(Base):
    """Each revision of the held action (1 = as submitted; edit-and-approve adds one)."""

    __tablename__ = "approval_revisions"

    approval_id: Mapped[str] = mapped_column(String(40), ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    action_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str | None] = mapped_column(String(300))


class ApprovalLinkUseRow(Base):
    """Nonces of review links that have been used to decide (single use)."""

    __tablename__ = "approval_link_uses"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    approval_id: Mapped[str] = mapped_column(String(40), index=True)
    used_at: Mapped[datetime] = mapped_column(DateTime)
    recipient: Mapped[str | None] = mapped_column(String(300))
    ip: Mapped[str | None] = mapped_column(String(100))


class OutboxRow(Base):
    """One message to deliver (notification or app callback), retried with backoff."""

    __tablename__ = "notification_outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    approval_id: Mapped[str | None] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # slack slack_update teams email webhook callback
    purpose: Mapped[str] = mapped_column(String(20))  # request reminder escalated decided callback
    target: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20), index=True, default="pending")  # pending delivered dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


APPROVAL_TABLES = [
    ApprovalRow.__table__,
    ApprovalEventRow.__table__,
    ApprovalEventChain.__table__,
    ApprovalRevisionRow.__table__,
    ApprovalLinkUseRow.__table__,
    OutboxRow.__table__,
]
