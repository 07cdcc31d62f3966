"""Repositories: the only code that writes SQL for policy versions, decisions and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from policyengine.store.models import ApiKey, DecisionRecord, PolicyVersion

TOKEN_PREFIX = "pe_"
VALID_ROLES = frozenset({"app", "reviewer", "admin"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------------------- policy versions


class PolicyVersionRepo:
    def __init__(self, sm: async_sessionmaker[AsyncSession]) -> None:
        self.sm = sm

    async def record_loaded(self, *, hash: str, name: str, version: Any, sources: dict[str, str],
                            loaded_by: str | None = None) -> None:
        # An upsert, not read-then-insert: replicas starting together on an empty
        # database would otherwise race on the primary key.
        now = time.time()
        values = dict(hash=hash, name=name, version=None if version is None else str(version),
                      sources=sources, first_loaded_at=now, last_loaded_at=now, loaded_by=loaded_by)
        async with self.sm.begin() as s:
            dialect = s.bind.dialect.name
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            elif dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:  # pragma: no cover - only SQLite and PostgreSQL are supported
                raise RuntimeError(f"unsupported database dialect {dialect!r}")
            stmt = insert(PolicyVersion).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[PolicyVersion.hash],
                set_={"last_loaded_at": now, "loaded_by": loaded_by},
            )
            await s.execute(stmt)

    async def get(self, hash: str) -> PolicyVersion | None:
        async with self.sm() as s:
            return await s.get(PolicyVersion, hash)

    async def list(self, limit: int = 50) -> list[PolicyVersion]:
        async with self.sm() as s:
            res = await s.execute(sa.select(PolicyVersion).order_by(PolicyVersion.last_loaded_at.desc())
                                  .limit(limit))
            return list(res.scalars())


# ---------------------------------------------------------------------------- decisions


@dataclass
class DecisionQuery:
    tenant: str
    action: str | None = None
    effect: str | None = None
    actor: str | None = None
    session_id: str | None = None
    model: str | None = None
    kind: str | None = None
    policy_hash: str | None = None
    since: float | None = None
    until: float | None = None
    before_seq: int | None = None  # cursor: newest first
    limit: int = 50


def decision_view(row: DecisionRecord, *, full: bool) -> dict[str, Any]:
    rec = orjson.loads(row.record)
    out = {"id": row.id, "seq": row.seq, "ts": row.ts, "kind": row.kind, "tenant": row.tenant,
           "actor": row.actor, "session_id": row.session_id, "action": row.action, "effect": row.effect,
           "model": row.model, "policy_hash": row.policy_hash, "tags": rec.get("tags", []),
           "latency_ms": rec.get("latency_ms"),
           "chain": (rec.get("routing") or {}).get("chain", [])}
    if full:
        out.update(record=rec, prev_hash=row.prev_hash, row_hash=row.row_hash)
    return out


class DecisionRepo:
    def __init__(self, sm: async_sessionmaker[AsyncSession]) -> None:
        self.sm = sm

    async def get(self, tenant: str, decision_id: str) -> DecisionRecord | None:
        async with self.sm() as s:
            res = await s.execute(sa.select(DecisionRecord).where(DecisionRecord.id == decision_id,
                                                                  DecisionRecord.tenant == tenant))
            return res.scalar_one_or_none()

    async def query(self, q: DecisionQuery) -> list[DecisionRecord]:
        stmt = sa.select(DecisionRecord).where(DecisionRecord.tenant == q.tenant)
        for col, val in (("action", q.action), ("effect", q.effect), ("actor", q.actor),
                         ("session_id", q.session_id), ("model", q.model), ("kind", q.kind),
                         ("policy_hash", q.policy_hash)):
            if val is not None:
                stmt = stmt.where(getattr(DecisionRecord, col) == val)
        if q.since is not None:
            stmt = stmt.where(DecisionRecord.ts >= q.since)
        if q.until is not None:
            stmt = stmt.where(DecisionRecord.ts < q.until)
        if q.before_seq is not None:
            stmt = stmt.where(DecisionRecord.seq < q.before_seq)
        stmt = stmt.order_by(DecisionRecord.seq.desc()).limit(q.limit)
        async with self.sm() as s:
            return list((await s.execute(stmt)).scalars())

    async def count(self) -> int:
        async with self.sm() as s:
            return int((await s.execute(sa.select(sa.func.count()).select_from(DecisionRecord))).scalar_one())


# ---------------------------------------------------------------------------- API keys


@dataclass
class KeyInfo:
    key_id: str
    tenant: str
    subject: str
    roles: set[str]
    groups: set[str]
    attributes: dict[str, Any]
    created_at: float
    revoked_at: float | None
    description: str | None


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(key_id=row.key_id, tenant=row.tenant, subject=row.subject, roles=set(row.roles),
                   groups=set(row.groups), attributes=dict(row.attributes or {}), created_at=row.created_at,
                   revoked_at=row.revoked_at, description=row.description)


class ApiKeyRepo:
    def __init__(self, sm: async_sessionmaker[AsyncSession]) -> None:
        self.sm = sm

    @staticmethod
    def new_token() -> tuple[str, str]:
        """(key_id, token): the token is shown once; only its sha256 is stored."""
        key_id = "k_" + secrets.token_hex(6)
        return key_id, f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"

    async def create(self, *, tenant: str, roles: set[str], subject: str, groups: set[str] | None = None,
                     attributes: dict[str, Any] | None = None, description: str | None = None,
                     token: str | None = None, key_id: str | None = None) -> tuple[KeyInfo, str]:
        bad = set(roles) - VALID_ROLES
        if not roles or bad:
            raise ValueError(f"roles must be a non-empty subset of {sorted(VALID_ROLES)}, got {sorted(roles)}")
        if not tenant or not subject:
            raise ValueError("tenant and subject are required")
        if token is None:
            key_id, token = self.new_token()
        elif len(token) < 24:
            raise ValueError("a supplied API token must be at least 24 characters (high entropy)")
        key_id = key_id or "k_" + hash_token(token)[:12]
        row = ApiKey(key_id=key_id, token_hash=hash_token(token), tenant=tenant, subject=subject,
                     roles=sorted(roles), groups=sorted(groups or ()), attributes=attributes or {},
                     created_at=time.time(), revoked_at=None, description=description)
        try:
            async with self.sm.begin() as s:
                existing = (await s.execute(sa.select(ApiKey).where(ApiKey.token_hash == row.token_hash))).scalar()
                if existing is not None:
                    return _info(existing), token
                s.add(row)
        except sa.exc.IntegrityError:
            # Replicas seeding the same key at once (seed_keys on an empty database): one insert
            # wins, the others find its row. Any other conflict is re-raised.
            async with self.sm() as s:
                existing = (await s.execute(sa.select(ApiKey).where(ApiKey.token_hash == row.token_hash))).scalar()
            if existing is None:
                raise
            return _info(existing), token
        return _info(row), token

    async def authenticate(self, token: str) -> KeyInfo | None:
        h = hash_token(token)
        async with self.sm() as s:
            row = (await s.execute(sa.select(ApiKey).where(ApiKey.token_hash == h))).scalar_one_or_none()
        # the lookup is by hash (not by the secret); compare again in constant time anyway
        if row is None or not hmac.compare_digest(row.token_hash, h) or row.revoked_at is not None:
            return None
        return _info(row)

    async def list(self, tenant: str | None = None) -> list[KeyInfo]:
        stmt = sa.select(ApiKey).order_by(ApiKey.created_at)
        if tenant is not None:
            stmt = stmt.where(ApiKey.tenant == tenant)
        async with self.sm() as s:
            return [_info(r) for r in (await s.execute(stmt)).scalars()]

    async def get(self, key_id: str, tenant: str) -> KeyInfo | None:
        """The key `key_id` of `tenant` (revoked or not), or None: one primary-key read."""
        async with self.sm() as s:
            row = (await s.execute(sa.select(ApiKey).where(ApiKey.key_id == key_id, ApiKey.tenant == tenant))).scalar_one_or_none()
        return None if row is None else _info(row)

    async def revocation_mark(self) -> tuple[int, float | None]:
        """(keys revoked, latest revocation time): changes whenever any key is revoked, by any process."""
        async with self.sm() as s:
            row = (await s.execute(sa.select(sa.func.count(ApiKey.revoked_at), sa.func.max(ApiKey.revoked_at)))).one()
        return int(row[0]), row[1]

    async def revoke(self, key_id: str, tenant: str | None = None) -> bool:
        stmt = sa.update(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
        if tenant is not None:
            stmt = stmt.where(ApiKey.tenant == tenant)
        async with self.sm.begin() as s:
            res = await s.execute(stmt.values(revoked_at=time.time()))
            return (res.rowcount or 0) > 0
