"""Which event store to use, from one URL: ``sqlite:///path`` (default) or ``postgresql://...``.

Turns the URL into the ``eventsourcing`` persistence environment, checks the database answers
before anything starts (one clear line instead of the library's ten silent retries), and prepares
it (the SQLite file's folder, the PostgreSQL schema).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit


class StoreConfigError(Exception):
    """The database URL or the database itself is not usable; the message is one clear line."""


@dataclass(frozen=True)
class StoreConfig:
    kind: Literal["sqlite", "postgres"]
    sqlite_path: str = ""
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = field(default="", repr=False)
    dbname: str = "postgres"
    schema: str = "public"
    pool_size: int = 4

    @property
    def is_memory(self) -> bool:
        return self.kind == "sqlite" and ":memory:" in self.sqlite_path

    def describe(self) -> str:
        """The store, for humans and logs: never the password."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.sqlite_path}"
        return (
            f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}?schema={self.schema}"
        )

    def eventsourcing_env(
        self, *, create_table: bool = True, audit_key: bytes | None = None
    ) -> dict[str, str]:
        """``audit_key`` keys the events' hash chain (application/audit.py); without it the
        recorders use the key of the default development secret."""
        create = "y" if create_table else "n"
        # PERSISTENCE_MODULE names our factories: the library's, also handing this key to the
        # recorders.
        audit = {"PAYLEDGER_AUDIT_KEY": audit_key.hex()} if audit_key else {}
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "application.sqlite_recorder:PayledgerSQLiteFactory",
                "SQLITE_DBNAME": self.sqlite_path,
                "SQLITE_LOCK_TIMEOUT": "10",
                "CREATE_TABLE": create,
                # Same table and semantics, multi-row inserts (see application/sqlite_recorder.py).
                "APPLICATION_RECORDER_TOPIC": (
                    "application.sqlite_recorder:FastSQLiteApplicationRecorder"
                ),
                **audit,
            }
        return {
            "PERSISTENCE_MODULE": "application.pg_recorder:PayledgerPostgresFactory",
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_POOL_SIZE": str(self.pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.pool_size),
            # Short waits: the library retries pool and lock time-outs ten times.
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
            "CREATE_TABLE": create,
            # Same tables and semantics, faster batch insert (see application/pg_recorder.py).
            "APPLICATION_RECORDER_TOPIC": "application.pg_recorder:FastPostgresApplicationRecorder",
            **audit,
        }

    def check_reachable(self, timeout_s: int = 3) -> None:
        """Raise StoreConfigError with one clear line unless the database answers."""
        if self.kind == "sqlite":
            self._check_sqlite()
        else:
            with self._pg_connect(timeout_s) as conn:
                conn.execute("SELECT 1")

    def prepare(self) -> None:
        """Create what the event store needs before its tables: the file's folder or the schema."""
        if self.kind == "sqlite":
            if not self.is_memory:
                Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            return
        with self._pg_connect(5) as conn:
            # Two processes starting together would both create it (a unique violation in the
            # catalog, IF NOT EXISTS notwithstanding): one at a time, until committed.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"payledger-schema:{self.schema}",)
            )
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.commit()

    def drop(self) -> None:
        """Delete everything this store holds (tests and `payledger db reset`)."""
        if self.kind == "sqlite":
            if not self.is_memory:
                for suffix in ("", "-wal", "-shm"):
                    Path(self.sqlite_path + suffix).unlink(missing_ok=True)
            return
        with self._pg_connect(5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            conn.commit()

    def _check_sqlite(self) -> None:
        if self.is_memory:
            return
        path = Path(self.sqlite_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(path).execute("SELECT 1").close()
        except (OSError, sqlite3.Error) as e:
            raise StoreConfigError(f"cannot open SQLite database {path}: {e}") from e

    def _pg_connect(self, timeout_s: int):  # type: ignore[no-untyped-def]
        try:
            import psycopg
        except ImportError as e:
            raise StoreConfigError(
                "PostgreSQL support is not installed: pip install 'payledger[postgres]'"
            ) from e
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or None,
                dbname=self.dbname,
                connect_timeout=timeout_s,
            )
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreConfigError(f"cannot reach PostgreSQL at {self.describe()}: {reason}") from e


def parse_database_url(url: str, *, pool_size: int = 4) -> StoreConfig:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite:///:memory:``,
    ``postgresql://user:pass@host:port/db?schema=name``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path:
            raise StoreConfigError(
                f"PAYLEDGER_DATABASE_URL {url!r}: write sqlite:///path/to/file.sqlite3"
            )
        return StoreConfig(kind="sqlite", sqlite_path=path)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        query = parse_qs(parts.query)
        schema = query.get("schema", ["public"])[0]
        if not schema.replace("_", "").isalnum() or len(schema) > 40:
            raise StoreConfigError(f"PAYLEDGER_DATABASE_URL: bad schema name {schema!r}")
        try:
            port = parts.port or 5432
        except ValueError:  # not a number, or out of range (never echo the URL: a password)
            raise StoreConfigError(
                "PAYLEDGER_DATABASE_URL: the port must be a number from 1 to 65535"
            ) from None
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname or "/" in dbname:
            raise StoreConfigError(
                "PAYLEDGER_DATABASE_URL names no database: "
                "write postgresql://user:pass@host:port/db"
            )
        return StoreConfig(
            kind="postgres",
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=dbname,
            schema=schema,
            pool_size=pool_size,
        )
    raise StoreConfigError(
        f"PAYLEDGER_DATABASE_URL has unsupported scheme {parts.scheme!r}: "
        "use sqlite:///path/to/file or postgresql://user:pass@host:port/db"
    )
