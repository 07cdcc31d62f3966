"""approvals: the answer a reviewer released for a held chat with dual answers

Revision ID: 0004_released_answer
Revises: 0003_tamper_evidence
Create Date: 2026-12-02

`released_answer` is the text the client receives on resume (the chosen model's answer, or the
reviewer's edit); `released_answer_from` names the model whose answer it is (NULL for an edit).
Both are NULL for approvals without answers, and for those decided without a reviewer (a timeout).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_released_answer"
down_revision = "0003_tamper_evidence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as b:
        b.add_column(sa.Column("released_answer", sa.Text(), nullable=True))
        b.add_column(sa.Column("released_answer_from", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as b:
        b.drop_column("released_answer_from")
        b.drop_column("released_answer")
