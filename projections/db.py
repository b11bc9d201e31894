"""The views' database: the same SQLite file or PostgreSQL schema as the events.

One small connection wrapper for both stores, so that a projection's SQL is written once with
``?`` placeholders. Views keep times as integer microseconds since the epoch (UTC) and amounts as
integer minor units, so both stores sort and compare them the same way.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from application.store import StoreConfig

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(at: datetime) -> int:
    """Microseconds since the epoch; naive datetimes are taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


class ViewDB:
    """A connection to the views' tables; ``schema`` overrides the store's (scratch rebuilds)."""

    def __init__(self, store: StoreConfig, *, schema: str | None = None, path: str | None = None):
        self.store = store
        self.kind = store.kind
        self.schema = schema or store.schema
        self._lock = threading.RLock()
        self._staging: set[str] = set()  # temporary tables this connection has (PostgreSQL)
        if self.kind == "sqlite":
            self.conn: Any = sqlite3.connect(
                path or store.sqlite_path, isolation_level=None, check_same_thread=False,
                timeout=10,
            )  # fmt: skip
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            self.conn = psycopg.connect(
                host=store.host, port=store.port, user=store.user,
                password=store.password or None, dbname=store.dbname, connect_timeout=5,
                autocommit=True,
                options=(
                    f"-c search_path={self.schema} -c idle_in_transaction_session_timeout=60000"
                ),
            )  # fmt: skip

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgres"

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[ViewDB]:
        """One write transaction: the views' changes and the tracking position commit together."""
        with self._lock:
            if self.is_postgres:
                try:
                    with self.conn.transaction():
                        yield self
                except BaseException:
                    self._staging.clear()  # a temporary table created in it is gone
                    raise
            else:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[ViewDB]:
        """A consistent read of several tables (one transaction)."""
        with self._lock:
            if self.is_postgres:
                with self.conn.transaction():
                    self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield self
            else:
                self.conn.execute("BEGIN")
                try:
                    yield self
                finally:
                    self.conn.execute("COMMIT")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            if self.is_postgres:
                return self.conn.execute(self.sql(statement), params)
            return self.conn.execute(statement, params)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self.execute(statement, params).fetchall())

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock:
            if self.is_postgres:
                with self.conn.cursor() as cur:
                    cur.executemany(self.sql(statement), rows)
            else:
                self.conn.executemany(statement, rows)

    def copy_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: Mapping[str, str] | None = None,
    ) -> None:
        """Bulk insert: COPY on PostgreSQL (binary when ``types`` gives each column's SQL type:
        less work on both sides than text), executemany on SQLite."""
        if not rows:
            return
        if self.is_postgres:
            with self._lock, self.conn.cursor() as cur:
                _copy(cur, table, columns, rows, types)
        else:
            marks = ",".join("?" * len(columns))
            self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def select_in(
        self, columns: Sequence[str], table: str, key: str, values: Sequence[Any], sql_type: str
    ) -> list[tuple[Any, ...]]:
        """``SELECT columns FROM table WHERE key IN values``: one statement with an array on
        PostgreSQL (instead of hundreds of placeholders), chunks of 500 on SQLite."""
        if not values:
            return []
        selected = ", ".join(columns)
        if self.is_postgres:
            statement = f"SELECT {selected} FROM {table} WHERE {key} = ANY(%b::{sql_type}[])"
            with self._lock, self.conn.cursor() as cur:
                cur.execute(statement, (list(values),), prepare=True)
                return cur.fetchall()
        found: list[tuple[Any, ...]] = []
        values = list(values)
        with self._lock:
            for start in range(0, len(values), 500):
                chunk = values[start : start + 500]
                found += self.conn.execute(
                    f"SELECT {selected} FROM {table} WHERE {key} IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        return found

    def update_rows(
        self,
        table: str,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: Mapping[str, str],
    ) -> None:
        """``UPDATE table SET columns WHERE key = ?`` for each row ``(*values, key)``.

        On PostgreSQL the rows are copied into a temporary table and joined in one statement,
        instead of one statement per row; ``types`` gives each column's SQL type."""
        if not rows:
            return
        if not self.is_postgres:
            assignments = ", ".join(f"{c} = ?" for c in columns)
            self.executemany(f"UPDATE {table} SET {assignments} WHERE {key} = ?", rows)
            return
        assignments = ", ".join(f"{c} = v.{c}" for c in columns)
        with self._lock, self._in_transaction(), self.conn.cursor() as cur:
            staged = self._stage(cur, table, (*columns, key), types, rows)
            cur.execute(
                f"UPDATE {table} AS t SET {assignments} FROM {staged} AS v WHERE t.{key} = v.{key}"
            )

    def upsert_add(
        self,
        table: str,
        keys: Sequence[str],
        counts: Sequence[str],
        rows: Sequence[Sequence[Any]],
        types: Mapping[str, str],
    ) -> None:
        """Insert rows ``(*keys, *counts)``, or add their counts to the row already there."""
        if not rows:
            return
        columns = ", ".join((*keys, *counts))
        additions = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counts)
        conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {additions}"
        if not self.is_postgres:
            marks = ",".join("?" * (len(keys) + len(counts)))
            self.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks}) {conflict}", rows)
            return
        with self._lock, self._in_transaction(), self.conn.cursor() as cur:
            staged = self._stage(cur, table, (*keys, *counts), types, rows)
            cur.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staged} {conflict}"
            )

    @contextmanager
    def _in_transaction(self) -> Iterator[None]:
        """The staged rows live until the commit: make sure there is a transaction."""
        from psycopg.pq import TransactionStatus

        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            yield
            return
        with self.transaction():
            yield

    def _stage(
        self,
        cur: Any,
        table: str,
        columns: Sequence[str],
        types: Mapping[str, str],
        rows: Sequence[Sequence[Any]],
    ) -> str:
        """COPY rows into a temporary table of this connection, emptied at each commit."""
        staged = f"staged_{table}_{len(columns)}"
        if staged not in self._staging:
            definition = ", ".join(f"{c} {types[c]}" for c in columns)
            cur.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {staged} ({definition}) "
                "ON COMMIT DELETE ROWS"
            )
            self._staging.add(staged)
        _copy(cur, staged, columns, rows, types)
        return staged

    def relax_durability(self) -> None:
        """For scratch work (a rebuild's side tables, a verify's scratch schema): commits need
        not wait for the WAL flush. Atomicity is unchanged: a crash can only lose whole
        transactions, tracking rows included, and the work resumes from what remains."""
        if self.is_postgres:
            self.execute("SET synchronous_commit TO off")

    def restore_durability(self) -> None:
        if self.is_postgres:
            self.execute("SET synchronous_commit TO DEFAULT")

    def table_exists(self, table: str) -> bool:
        if self.is_postgres:
            rows = self.query(
                "SELECT 1 FROM information_schema.tables WHERE table_schema=? AND table_name=?",
                (self.schema, table),
            )
        else:
            rows = self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
        return bool(rows)


def _copy(
    cur: Any,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    types: Mapping[str, str] | None,
) -> None:
    binary = " (FORMAT BINARY)" if types is not None else ""
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{binary}") as copy:
        if types is not None:
            copy.set_types([types[c] for c in columns])
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def table_columns(db: ViewDB, table: str) -> list[str]:
    """A table's columns, in their order."""
    if db.is_postgres:
        rows = db.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (db.schema, table),
        )
        return [r[0] for r in rows]
    return [r[1] for r in db.query(f"PRAGMA table_info({table})")]
