"""Table handles, clock and ids shared by the approvals modules.

Each handle is the `sqlalchemy.Table` of one row class in
`policyengine.store.approvals_models`, for Core statements (`select`, `insert`,
`update`) that the approvals service issues on its own connections.
"""

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

approvals_table = ApprovalRow.__table__  # one row per approval: its state, deadlines and version
events_table = ApprovalEventRow.__table__  # the audit trail: every transition and every refused attempt
revisions_table = ApprovalRevisionRow.__table__  # each revision of the held action (1 = as submitted)
link_uses_table = ApprovalLinkUseRow.__table__  # nonces of review links already used to decide
outbox_table = OutboxRow.__table__  # messages to deliver (notifications, app callbacks)


def utcnow() -> datetime:
    """Naive UTC (the tables store naive UTC on every backend)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id(prefix: str) -> str:
    """A fresh random id `<prefix>_<32 hex digits>`, unique across replicas."""
    return f"{prefix}_{uuid.uuid4().hex}"
