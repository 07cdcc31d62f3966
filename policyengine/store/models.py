"""Tables owned by the store: policy versions, the hash-chained decision log, API keys.

The `approvals` table belongs to the approvals package (its own model module on
`Base` and its own migration revision).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from policyengine.store.base import Base, BigInt

GENESIS_HASH = "0" * 64


class PolicyVersion(Base):
    """Every policy set the service has loaded (content hash, sources, when)."""

    __tablename__ = "policy_versions"

    hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    version: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    sources: Mapped[dict] = mapped_column(sa.JSON)  # file -> text
    first_loaded_at: Mapped[float] = mapped_column(sa.Float)
    last_loaded_at: Mapped[float] = mapped_column(sa.Float)
    loaded_by: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)


class DecisionChain(Base):
    """The head of the hash chain: one row (id=1), locked while a batch is appended."""

    __tablename__ = "decision_chain"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInt)
    head_hash: Mapped[str] = mapped_column(sa.String(64))


class DecisionRecord(Base):
    """One decision, tamper-evident.

    `record` is the canonical JSON of everything logged about the decision;
    `row_hash = sha256(prev_hash || record)`. The other columns are copies of
    record fields kept for querying; `verify-log` checks they agree with it.
    """

    __tablename__ = "decisions"

    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(sa.String(36), unique=True)
    ts: Mapped[float] = mapped_column(sa.Float, index=True)  # epoch seconds
    kind: Mapped[str] = mapped_column(sa.String(16))  # evaluate | chat
    tenant: Mapped[str] = mapped_column(sa.String(200))
    actor: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    session_id: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    action: Mapped[str] = mapped_column(sa.String(200))
    effect: Mapped[str] = mapped_column(sa.String(32))
    model: Mapped[str | None] = mapped_column(sa.String(200), nullable=True)
    policy_hash: Mapped[str] = mapped_column(sa.String(64))
    record: Mapped[str] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    row_hash: Mapped[str] = mapped_column(sa.String(64))

    __table_args__ = (
        sa.Index("ix_decisions_tenant_seq", "tenant", "seq"),
        sa.Index("ix_decisions_tenant_action", "tenant", "action"),
        sa.Index("ix_decisions_tenant_effect", "tenant", "effect"),
    )


class ApiKey(Base):
    """An API key: only the sha256 of the token is stored."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    tenant: Mapped[str] = mapped_column(sa.String(200), index=True)
    subject: Mapped[str] = mapped_column(sa.String(200))
    roles: Mapped[list] = mapped_column(sa.JSON)
    groups: Mapped[list] = mapped_column(sa.JSON)
    attributes: Mapped[dict] = mapped_column(sa.JSON, default=dict)  # tier, role... fed to the policy
    created_at: Mapped[float] = mapped_column(sa.Float)
    revoked_at: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    description: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)
