"""Engines for the embedded default (SQLite, WAL) and PostgreSQL.

Users write plain URLs (`sqlite:///decisions.db`, `postgresql://user@host/db`);
this module picks the drivers: pysqlite / aiosqlite for SQLite, psycopg 3 (sync
and async) for PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


class DatabaseURLError(ValueError):
    pass


def _parse(url: str) -> sa.URL:
    try:
        return make_url(url)
    except Exception as exc:
        raise DatabaseURLError(f"not a database URL: {url!r} ({exc})") from exc


def backend(url: str) -> str:
    name = _parse(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise DatabaseURLError(
            f"unsupported database {name!r} in {url!r}: use sqlite:///path.db or postgresql://user@host/db"
        )
    return name


def sync_url(url: str) -> sa.URL:
    u = _parse(url)
    if backend(url) == "sqlite":
        return u.set(drivername="sqlite")
    return u.set(drivername="postgresql+psycopg")


def async_url(url: str) -> sa.URL:
    u = _parse(url)
    if backend(url) == "sqlite":
        return u.set(drivername="sqlite+aiosqlite")
    return u.set(drivername="postgresql+psycopg")


def _enable_wal(cur: Any, deadline_s: float = 30.0) -> None:
    """Switch the file to WAL (persistent once set).

    SQLite may answer SQLITE_BUSY to the journal-mode change without calling the busy
    handler while another connection holds a lock (e.g. a migration starting in another
    process), so the change is retried with a short back-off until the deadline.
    """
    import time

    end = time.monotonic() + deadline_s
    delay = 0.01
    while True:
        try:
            # (no result is read: the cursor may be the async driver's adapter)
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # sqlite3 / aiosqlite OperationalError alike
            if "locked" not in str(exc) or time.monotonic() >= end:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a connection waits for another one's write lock


def _sqlite_pragmas(engine: Engine, *, synchronous: str, immediate: bool) -> None:
    """WAL, a busy timeout, and (for the log writer) BEGIN IMMEDIATE transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if immediate:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        # The busy timeout first: switching to WAL needs a lock too, and replicas or
        # migrators starting together must wait for it rather than fail "database is locked".
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cur)
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_sync_engine(url: str, *, writer: bool = False, sqlite_synchronous: str = "FULL", **kw: Any) -> Engine:
    kw.setdefault("hide_parameters", True)  # never put logged values (or secrets) in error messages
    u = sync_url(url)
    if u.get_backend_name() == "sqlite":
        engine = sa.create_engine(u, **kw)
        _sqlite_pragmas(engine, synchronous=sqlite_synchronous, immediate=writer)
        return engine
    kw.setdefault("pool_pre_ping", True)
    return sa.create_engine(u, **kw)


def make_async_engine(url: str, *, sqlite_synchronous: str = "FULL", **kw: Any) -> AsyncEngine:
    kw.setdefault("hide_parameters", True)
    u = async_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_async_engine(u, **kw)
        _sqlite_pragmas(engine.sync_engine, synchronous=sqlite_synchronous, immediate=False)
        return engine
    kw.setdefault("pool_pre_ping", True)
    return create_async_engine(u, **kw)


@dataclass
class Database:
    """The service's database handles: an async engine + sessionmaker, and the URL."""

    url: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def open(cls, url: str, *, sqlite_synchronous: str = "FULL") -> Database:
        engine = make_async_engine(url, sqlite_synchronous=sqlite_synchronous)
        return cls(url=url, engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False))

    @property
    def backend(self) -> str:
        return backend(self.url)

    async def aclose(self) -> None:
        await self.engine.dispose()
