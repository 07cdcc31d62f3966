"""store: the approval events' hash chain (chain columns on approval_events, its head row)

Revision ID: 0003_tamper_evidence
Revises: 0002_approvals
Create Date: 2026-12-02

Events already in the table stay unchained (their chain columns NULL); `verify-log` counts them
and checks every event written after the first chained one.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_tamper_evidence"
down_revision = "0002_approvals"
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("approval_events") as b:
        b.add_column(sa.Column("chain_seq", BigInt, nullable=True))
        b.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        b.add_column(sa.Column("row_hash", sa.String(64), nullable=True))
    op.create_index("ix_approval_events_chain_seq", "approval_events", ["chain_seq"], unique=True)
    head = op.create_table(
        "approval_event_chain",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "head_hash": "0" * 64}])


def downgrade() -> None:
    op.drop_table("approval_event_chain")
    op.drop_index("ix_approval_events_chain_seq", "approval_events")
    with op.batch_alter_table("approval_events") as b:
        b.drop_column("row_hash")
        b.drop_column("prev_hash")
        b.drop_column("chain_seq")
