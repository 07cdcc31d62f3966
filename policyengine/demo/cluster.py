"""N `policyengine serve` replicas on one machine sharing PostgreSQL and Redis.

Used by the scale-out tests and `benchmarks/scaleout_bench.py`: a fresh
PostgreSQL schema, migrations run once (as a deployment's migration job does),
replicas started one after the other with `POLICYENGINE_MIGRATE_ON_START=false`,
and everything removed again on `stop()` (replicas, schema, this run's Redis keys).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .procs import ServiceProcess, free_port


class LocalCluster:
    def __init__(self, *, postgres_url: str, redis_url: str, policy_dir: Path, workdir: Path, replicas: int = 2,
                 seed_keys: list[dict[str, Any]] | None = None, env: dict[str, str] | None = None,
                 run: str | None = None) -> None:
        self.run = run or uuid.uuid4().hex[:8]
        self.schema = f"cluster_{self.run}"
        sep = "&" if "?" in postgres_url else "?"
        self.postgres_url = postgres_url
        self.db_url = f"{postgres_url}{sep}options=-csearch_path%3D{self.schema}"
        self.redis_url = redis_url
        self.policy_dir = policy_dir
        self.workdir = workdir
        self.n = replicas
        self.seed_keys = seed_keys or []
        self.env = dict(env or {})
        self.replicas: list[ServiceProcess] = []

    async def start(self, *, timeout: float = 120.0) -> None:
        from policyengine.store import upgrade

        engine = sa.create_engine(self.postgres_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        finally:
            engine.dispose()
        await asyncio.to_thread(upgrade, self.db_url)  # once, like the deployment's migration job
        base = {
            **self.env,
            "POLICYENGINE_DATABASE_URL": self.db_url,
            "POLICYENGINE_REDIS_URL": self.redis_url,
            "POLICYENGINE_POLICY_PATH": str(self.policy_dir),
            "POLICYENGINE_MIGRATE_ON_START": "false",
            "POLICYENGINE_SEED_KEYS": json.dumps(self.seed_keys),
        }
        base.setdefault("POLICYENGINE_APPROVALS_LINK_SECRET", secrets.token_urlsafe(32))
        for i in range(self.n):
            port = free_port()
            name = f"replica {chr(ord('A') + i)}"
            self.replicas.append(ServiceProcess(
                port=port, env={**base, "POLICYENGINE_APPROVALS_PUBLIC_URL": f"http://127.0.0.1:{port}"},
                log_path=self.workdir / f"replica-{i}.log", name=name, drop_prefixes=("POLICYENGINE_",)))
        # one after the other: seeding API keys at start is idempotent but not race-free
        for r in self.replicas:
            await r.start(timeout=timeout)

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"*{self.run}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
        engine = sa.create_engine(self.postgres_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        finally:
            engine.dispose()
