"""approvals: approvals, audit events, revisions, link nonces, delivery outbox

Revision ID: 0002_approvals
Revises: 0001_store_initial
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_approvals"
down_revision = "0001_store_initial"
branch_labels = None
depends_on = None


def _tables(meta: sa.MetaData) -> list[sa.Table]:
    J = sa.JSON
    approvals = sa.Table(
        "approvals", meta,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(200), index=True),
        sa.Column("state", sa.String(20), nullable=False, index=True),
        sa.Column("effect", sa.String(30), nullable=False),
        sa.Column("action_name", sa.String(200), nullable=False),
        sa.Column("action_json", J, nullable=False),
        sa.Column("action_hash", sa.String(64), nullable=False),
        sa.Column("original_action_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("decision_json", J, nullable=False),
        sa.Column("answers_json", J, nullable=True),
        sa.Column("groups", J, nullable=False),
        sa.Column("channels", J, nullable=False),
        sa.Column("requester_actor", sa.String(200)),
        sa.Column("requester_subject", sa.String(200)),
        sa.Column("requester_key_id", sa.String(200)),
        sa.Column("remind_every_s", sa.Float, nullable=True),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("on_timeout", sa.String(20), nullable=False),
        sa.Column("escalate_to", sa.String(200)),
        sa.Column("timeout_at", sa.DateTime, nullable=True),
        sa.Column("next_reminder_at", sa.DateTime, nullable=True),
        sa.Column("reminders_sent", sa.Integer, nullable=False),
        sa.Column("escalations", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=True),
        sa.Column("decided_by", sa.String(300)),
        sa.Column("decided_via", sa.String(30)),
        sa.Column("decided_ip", sa.String(100)),
        sa.Column("reason", sa.Text),
        sa.Column("callback_url", sa.Text),
        sa.Column("policy_name", sa.String(200)),
        sa.Column("policy_hash", sa.String(64)),
        sa.Column("decision_id", sa.String(100)),
        sa.Column("request_id", sa.String(100)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Index("ix_approvals_pending_timeout", "state", "timeout_at"),
        sa.Index("ix_approvals_pending_reminder", "state", "next_reminder_at"),
        sa.Index("uq_approvals_tenant_request", "tenant", "request_id", unique=True),
    )
    events = sa.Table(
        "approval_events", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("approval_id", sa.String(40), sa.ForeignKey("approvals.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("from_state", sa.String(20)),
        sa.Column("to_state", sa.String(20)),
        sa.Column("actor", sa.String(300)),
        sa.Column("via", sa.String(30)),
        sa.Column("ip", sa.String(100)),
        sa.Column("user_agent", sa.String(400)),
        sa.Column("reason", sa.Text),
        sa.Column("details", J, nullable=True),
    )
    revisions = sa.Table(
        "approval_revisions", meta,
        sa.Column("approval_id", sa.String(40), sa.ForeignKey("approvals.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("action_json", J, nullable=False),
        sa.Column("action_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(300)),
    )
    links = sa.Table(
        "approval_link_uses", meta,
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("approval_id", sa.String(40), nullable=False, index=True),
        sa.Column("used_at", sa.DateTime, nullable=False),
        sa.Column("recipient", sa.String(300)),
        sa.Column("ip", sa.String(100)),
    )
    outbox = sa.Table(
        "notification_outbox", meta,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("approval_id", sa.String(40), index=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("payload", J, nullable=False),
        sa.Column("state", sa.String(20), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False, index=True),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("last_error", sa.Text),
        sa.Column("result", J, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    return [approvals, events, revisions, links, outbox]


def upgrade() -> None:
    from policyengine.store.base import NAMING_CONVENTION

    bind = op.get_bind()
    for table in _tables(sa.MetaData(naming_convention=NAMING_CONVENTION)):
        table.create(bind)


def downgrade() -> None:
    for name in ("notification_outbox", "approval_link_uses", "approval_revisions", "approval_events", "approvals"):
        op.drop_table(name)
