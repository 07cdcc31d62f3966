"""store: policy versions, hash-chained decisions, API keys

Revision ID: 0001_store_initial
Revises:
Create Date: 2026-11-25
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_store_initial"
down_revision = None
branch_labels = ("store",)
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("first_loaded_at", sa.Float(), nullable=False),
        sa.Column("last_loaded_at", sa.Float(), nullable=False),
        sa.Column("loaded_by", sa.String(200), nullable=True),
    )
    chain = op.create_table(
        "decision_chain",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(chain, [{"id": 1, "seq": 0, "head_hash": "0" * 64}])
    op.create_table(
        "decisions",
        sa.Column("seq", BigInt, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("session_id", sa.String(200), nullable=True),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("effect", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_decisions_ts", "decisions", ["ts"])
    op.create_index("ix_decisions_tenant_seq", "decisions", ["tenant", "seq"])
    op.create_index("ix_decisions_tenant_action", "decisions", ["tenant", "action"])
    op.create_index("ix_decisions_tenant_effect", "decisions", ["tenant", "effect"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("description", sa.String(500), nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("decisions")
    op.drop_table("decision_chain")
    op.drop_table("policy_versions")
