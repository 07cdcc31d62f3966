"""Alembic migrations, packaged and run programmatically.

Revisions live in `policyengine/store/migrations/versions/`. Other packages add
their own revisions in a `migrations/` folder of their package (for instance
`policyengine/approvals/migrations/`), chained after this package's head
(`STORE_HEAD`); every such folder is found automatically.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from policyengine.store.db import make_sync_engine

STORE_HEAD = "0001_store_initial"
MIGRATION_LOCK_KEY = 0x70E0_0001  # pg_advisory_xact_lock key held while migrating

_HERE = Path(__file__).resolve().parent
_PKG_ROOT = _HERE.parent  # policyengine/


def version_locations() -> list[str]:
    locs = [str(_HERE / "migrations" / "versions")]
    for d in sorted(_PKG_ROOT.glob("*/migrations")):
        if d.parent.name == "store" or not d.is_dir():
            continue
        if any(p.suffix == ".py" and p.name != "__init__.py" for p in d.iterdir()):
            locs.append(str(d))
    return locs


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    cfg.set_main_option("version_locations", " ".join(version_locations()))
    cfg.set_main_option("path_separator", "space")
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str, revision: str = "heads") -> list[str]:
    """Bring the database at `url` to `revision` (default: every head). Returns the heads now applied."""
    cfg = alembic_config(url)
    # Several workers / replicas start at once: one migrates, the others wait and find it done.
    # SQLite: the whole upgrade is one BEGIN IMMEDIATE transaction; PostgreSQL: an advisory lock.
    engine = make_sync_engine(url, writer=True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        with engine.connect() as conn:
            return sorted(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def current(url: str) -> list[str]:
    engine = make_sync_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def heads() -> list[str]:
    return sorted(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())
