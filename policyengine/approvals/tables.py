"""Table handles and clock shared by the approvals modules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from policyengine.store.approvals_models import (
    ApprovalEventRow,
    ApprovalLinkUseRow,
    ApprovalRevisionRow,
    ApprovalRow,
    OutboxRow,
)

A = ApprovalRow.__table__
E = ApprovalEventRow.__table__
R = ApprovalRevisionRow.__table__
L = ApprovalLinkUseRow.__table__
O = OutboxRow.__table__  # noqa: E741


def utcnow() -> datetime:
    """Naive UTC (the tables store naive UTC on every backend)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
