"""Storage: SQLAlchemy models, repositories, migrations and the decision log.

Public surface:
    Base                         the declarative base every table uses
    STORE_HEAD                   this package's Alembic head (chain your revision after it)
    upgrade(url)                 run every migration (also `policyengine migrate`)
    Database.open(url)           async engine + sessionmaker
    DecisionLogger / LogEntry    durable group-commit, hash-chained decision log
    verify_chain(engine, anchors) check both chains and any anchors (also `policyengine verify-log`)
    append_approval_event(conn)  write one approval event, hash-chained, in the caller's transaction
    make_checkpoint / read_checkpoint  signed checkpoints of the heads (`policyengine log checkpoint`)
"""

from policyengine.store.approval_chain import ApprovalChainError, append_approval_event
from policyengine.store.base import Base
from policyengine.store.chain import Anchor, VerifyResult, verify_chain
from policyengine.store.checkpoint import (
    CheckpointError,
    checkpoint_key,
    make_checkpoint,
    read_checkpoint,
)
from policyengine.store.db import Database, DatabaseURLError, make_async_engine, make_sync_engine
from policyengine.store.logger import (
    FOLLOW_UP_KINDS,
    DecisionLogError,
    DecisionLogger,
    LogEntry,
    LoggedDecision,
)
from policyengine.store.migrate import STORE_HEAD, current, heads, upgrade
from policyengine.store.models import ApiKey, DecisionChain, DecisionRecord, PolicyVersion
from policyengine.store.redaction import Redactor
from policyengine.store.repos import (
    ApiKeyRepo,
    DecisionQuery,
    DecisionRepo,
    KeyInfo,
    PolicyVersionRepo,
    decision_view,
    hash_token,
)
from policyengine.store.rowhash import canonical_json, row_hash

__all__ = [
    "FOLLOW_UP_KINDS",
    "STORE_HEAD",
    "Anchor",
    "ApiKey",
    "ApiKeyRepo",
    "ApprovalChainError",
    "Base",
    "CheckpointError",
    "Database",
    "DatabaseURLError",
    "DecisionChain",
    "DecisionLogError",
    "DecisionLogger",
    "DecisionQuery",
    "DecisionRecord",
    "DecisionRepo",
    "KeyInfo",
    "LogEntry",
    "LoggedDecision",
    "PolicyVersion",
    "PolicyVersionRepo",
    "Redactor",
    "VerifyResult",
    "append_approval_event",
    "canonical_json",
    "checkpoint_key",
    "current",
    "decision_view",
    "hash_token",
    "heads",
    "make_async_engine",
    "make_checkpoint",
    "make_sync_engine",
    "read_checkpoint",
    "row_hash",
    "upgrade",
    "verify_chain",
]
