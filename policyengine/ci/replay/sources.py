"""Where logged decisions come from: a JSON-lines file or the store's `decisions` table.

Both stream: a source never holds more than one batch of rows in memory. A
source is any iterable of LoggedRecord with an optional `estimate()` (total,
for the progress bar) and a `describe()` (for the report).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
import sqlalchemy as sa

from policyengine.ci.replay.records import REDACTED_PREFIX, LoggedRecord, RecordError, parse_record
from policyengine.store.logger import FOLLOW_UP_KINDS


class SourceError(ValueError):
    """The source cannot be opened or read (bad path, bad URL, missing table)."""


class RecordSource(Protocol):
    def __iter__(self) -> Iterator[LoggedRecord]: ...

    def estimate(self) -> int | None: ...

    def describe(self) -> str: ...


class JsonlSource:
    """One logged decision per line; blank lines and `#` comments are skipped."""

    def __init__(self, path: str | Path, *, since: float | None = None, tenant: str | None = None,
                 action: str | None = None, limit: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such file")
        self.since, self.tenant, self.action, self.limit = since, tenant, action, limit
        self.bytes_total = self.path.stat().st_size
        self.bytes_read = 0
        self.shard_of: tuple[int, int] = (0, 1)  # (this worker, workers): every k-th data line

    def shard(self, index: int, count: int) -> JsonlSource:
        """The same source restricted to data lines i with i % count == index (for parallel replay)."""
        s = JsonlSource(self.path, since=self.since, tenant=self.tenant, action=self.action, limit=self.limit)
        s.shard_of = (index, count)
        return s

    def estimate(self) -> int | None:
        return None  # unknown without reading the file; progress is shown in bytes

    def describe(self) -> str:
        return str(self.path)

    def __iter__(self) -> Iterator[LoggedRecord]:
        n = 0
        data_line = -1
        index, count = self.shard_of
        prefix = REDACTED_PREFIX.encode()
        with self.path.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                self.bytes_read += len(line)
                s = line.strip()
                if not s or s.startswith(b"#"):
                    continue
                data_line += 1
                if count > 1 and data_line % count != index:
                    continue
                where = f"{self.path}:{lineno}: "
                try:
                    obj = orjson.loads(s)
                except orjson.JSONDecodeError as exc:
                    raise RecordError(f"{where}not valid JSON ({exc})") from None
                if isinstance(obj, dict) and obj.get("kind") in FOLLOW_UP_KINDS:
                    continue  # a streamed chat's outcome row: its decision is the row it follows
                rec = parse_record(obj, where=where, redaction_hint=prefix in s)
                if self.since is not None and (rec.ts is None or rec.ts < self.since):
                    continue
                if self.tenant is not None and rec.tenant != self.tenant:
                    continue
                if self.action is not None and rec.request.get("action") != self.action:
                    continue
                yield rec
                n += 1
                if self.limit is not None and n >= self.limit:
                    return


class DatabaseSource:
    """The store's `decisions` table (SQLite or PostgreSQL), streamed in `batch` rows.

    PostgreSQL uses a server-side cursor; SQLite steps its cursor. Rows come in log
    order (`seq`), filtered in SQL by `since` / `tenant` / `action`.
    """

    def __init__(self, url: str, *, since: float | None = None, tenant: str | None = None,
                 action: str | None = None, limit: int | None = None, batch: int = 5000) -> None:
        from policyengine.store.db import DatabaseURLError, make_sync_engine

        try:
            self.engine = make_sync_engine(url)
        except DatabaseURLError as exc:
            raise SourceError(str(exc)) from None
        self.url = url
        self.since, self.tenant, self.action, self.limit, self.batch = since, tenant, action, limit, batch
        self.shard_of: tuple[int, int] = (0, 1)

    def shard(self, index: int, count: int) -> DatabaseSource:
        """The same source restricted to rows with seq % count == index (for parallel replay)."""
        s = DatabaseSource(self.url, since=self.since, tenant=self.tenant, action=self.action, limit=self.limit,
                           batch=self.batch)
        s.shard_of = (index, count)
        return s

    def describe(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    def _where(self, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        # plain comparisons: `_batches` runs the compiled SQL itself (no expanding IN parameters)
        conds: list[sa.ColumnElement[bool]] = [table.c.kind != k for k in FOLLOW_UP_KINDS]
        if self.since is not None:
            conds.append(table.c.ts >= self.since)
        if self.tenant is not None:
            conds.append(table.c.tenant == self.tenant)
        if self.action is not None:
            conds.append(table.c.action == self.action)
        index, count = self.shard_of
        if count > 1:
            conds.append(table.c.seq % count == index)
        return conds

    def _table(self) -> sa.Table:
        from policyengine.store.models import DecisionRecord

        table = DecisionRecord.__table__
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(table.name):
                    raise SourceError(f"{self.describe()}: no `{table.name}` table "
                                      "(is this the policyengine database? run `policyengine migrate`)")
        except sa.exc.OperationalError as exc:
            raise SourceError(f"{self.describe()}: cannot connect ({exc.orig})") from None
        return table  # type: ignore[return-value]

    def estimate(self) -> int | None:
        table = self._table()
        stmt = sa.select(sa.func.count()).select_from(table).where(*self._where(table))
        with self.engine.connect() as conn:
            n = int(conn.execute(stmt).scalar_one())
        return min(n, self.limit) if self.limit is not None else n

    def __iter__(self) -> Iterator[LoggedRecord]:
        table = self._table()
        stmt = sa.select(table.c.seq, table.c.record).where(*self._where(table)).order_by(table.c.seq)
        if self.limit is not None:
            stmt = stmt.limit(self.limit)
        prefix = REDACTED_PREFIX
        loads = orjson.loads
        for part in self._batches(stmt):
            for seq, text in part:
                try:
                    obj = loads(text)
                except orjson.JSONDecodeError as exc:
                    raise RecordError(f"decisions seq {seq}: record is not valid JSON ({exc})") from None
                try:
                    rec = parse_record(obj, redaction_hint=prefix in text)
                except RecordError as exc:
                    raise RecordError(f"decisions seq {seq}: {exc}") from None
                yield rec

    def _batches(self, stmt: sa.Select[Any]) -> Iterator[list[tuple[int, str]]]:
        """Plain tuples in batches: a DBAPI cursor (server-side on PostgreSQL), no Row objects per row."""
        with self.engine.connect() as conn:
            compiled = stmt.compile(dialect=self.engine.dialect)
            params = compiled.params
            raw = conn.connection.driver_connection
            if self.engine.dialect.name == "postgresql":
                cur = raw.cursor(name="policyengine_replay")  # psycopg named cursor: streams from the server
                cur.itersize = self.batch
            else:
                cur = raw.cursor()
            try:
                positional = [params[name] for name in compiled.positiontup] if compiled.positiontup else None
                cur.execute(str(compiled), positional if positional is not None else params)
                while True:
                    rows = cur.fetchmany(self.batch)
                    if not rows:
                        break
                    yield rows
            finally:
                cur.close()

    def close(self) -> None:
        self.engine.dispose()
