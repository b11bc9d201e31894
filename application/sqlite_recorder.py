"""A faster insert for the library's SQLite application recorder, with the audit hash chain.

The stock recorder runs one INSERT per event to read each ``lastrowid``: with group commit that is
hundreds of statements per transaction. This one sends multi-row INSERTs with ``RETURNING``
(SQLite >= 3.35) and maps the returned row ids (the notification ids) back to the events by
their unique (originator id, version); SQLite does not promise RETURNING's row order.
Same table, same transaction, same uniqueness errors.

In the same transaction it writes each event's link of the tamper-evidence chain to
``<events table>_chain`` (see application/audit.py), keyed by the event's notification id. The
chain key comes from the eventsourcing environment, which only the factory sees:
``PERSISTENCE_MODULE`` names :class:`PayledgerSQLiteFactory`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)

from application.audit import ChainedRow, ChainWriter, Linked, default_key, key_from_env

TOPIC = "application.sqlite_recorder:FastSQLiteApplicationRecorder"
FACTORY_TOPIC = "application.sqlite_recorder:PayledgerSQLiteFactory"
ROWS_PER_STATEMENT = 200  # 800 parameters, far below SQLite's 32,766


class FastSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        self.chain_table_name = f"{events_table_name}_chain"
        super().__init__(datastore, events_table_name)
        self.chain = ChainWriter(default_key())  # the factory sets the configured key
        self.insert_chain_statement = f"INSERT INTO {self.chain_table_name} VALUES (?,?,?,?)"
        # A join, not "(id, version) IN (VALUES ...)", which SQLite answers with a table scan.
        self.select_links_statement = (
            "SELECT e.originator_id, e.originator_version, c.chain_hash FROM (VALUES {}) k "
            f"JOIN {self.events_table_name} e "
            "ON e.originator_id = k.column1 AND e.originator_version = k.column2 "
            f"JOIN {self.chain_table_name} c ON c.notification_id = e.rowid"
        )

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(
            # Keyed by the event's row id (its notification id), not by (originator id,
            # version): rows are appended, where a second random-key index would double the
            # write path's page-cache misses once the store outgrows SQLite's cache.
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} ("
            "notification_id INTEGER PRIMARY KEY, "
            "originator_id TEXT NOT NULL, "
            "originator_version INTEGER NOT NULL, "
            "chain_hash BLOB NOT NULL)"
        )
        return statements

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        linked: list[Linked] = []
        with self.datastore.transaction(commit=True) as c:
            ids = self._insert_events(c, stored_events, chain_out=linked, **kwargs)
        for saved in linked:  # committed: now the cache may know these heads
            self.chain.remember(saved)
        return ids

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids: list[int] = []
        for start in range(0, len(stored_events), ROWS_PER_STATEMENT):
            chunk = stored_events[start : start + ROWS_PER_STATEMENT]
            rows = [(_key(e.originator_id), e.originator_version, e.topic, e.state) for e in chunk]
            c.execute(_statement(self.events_table_name, len(rows)), [v for r in rows for v in r])
            by_key = {(oid, ver): rowid for rowid, oid, ver in c.fetchall()}
            ids.extend(by_key[(row[0], row[1])] for row in rows)
        if stored_events:
            # After the events: their INSERT took the write lock and raised any conflict.
            linked = self._insert_chain(c, stored_events, ids)
            chain_out = kwargs.get("chain_out")
            if chain_out is not None:
                chain_out.append(linked)
        return ids

    def _insert_chain(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], ids: Sequence[int]
    ) -> Linked:
        keyed = [(_key(e.originator_id), e) for e in stored_events]
        prevs, missing = self.chain.plan((k, e.originator_version) for k, e in keyed)
        for start in range(0, len(missing), ROWS_PER_STATEMENT):
            chunk = missing[start : start + ROWS_PER_STATEMENT]
            c.execute(
                self.select_links_statement.format(_values(len(chunk), 2)),
                [v for pair in chunk for v in pair],
            )
            for oid, version, digest in c.fetchall():
                prevs[(oid, version)] = digest
        linked = self.chain.link(
            (
                (k, _raw_id(e.originator_id), e.originator_version, e.topic, e.state)
                for k, e in keyed
            ),
            prevs,
        )
        c.executemany(
            self.insert_chain_statement,
            [(nid, *row) for nid, row in zip(ids, linked.rows, strict=True)],
        )
        return linked

    # --- reading for application/audit.py -------------------------------------------------------

    def select_chained_events(
        self, after: int, limit: int, stop: int | None = None
    ) -> list[ChainedRow]:
        """Events after notification ``after`` (to ``stop``), each with its chain hash or None."""
        # Topic and state as bytes, with their SQLite types: a value altered to text that is
        # not UTF-8 (e.g. an encrypted state cast to TEXT) must be reported, not fail the read.
        statement = (
            "SELECT e.rowid, e.originator_id, e.originator_version, typeof(e.topic), "
            "CAST(e.topic AS BLOB), typeof(e.state), CAST(e.state AS BLOB), c.chain_hash "
            f"FROM {self.events_table_name} e LEFT JOIN {self.chain_table_name} c "
            "ON c.notification_id = e.rowid "
            "WHERE e.rowid > ? "
        )
        params: list[int] = [after]
        if stop is not None:
            statement += "AND e.rowid <= ? "
            params.append(stop)
        statement += "ORDER BY e.rowid LIMIT ?"
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples
            cursor.execute(statement, params)
            return [
                (nid, _id_bytes(oid), version, _text(topic_type, topic),
                 state if state_type == "blob" else state_type, digest)
                for nid, oid, version, topic_type, topic, state_type, state, digest
                in cursor.fetchall()
            ]  # fmt: skip

    def select_orphan_chain_rows(self, limit: int) -> tuple[int, list[tuple[bytes, int]]]:
        """How many chain rows have no event, and the first ``limit`` of them."""
        orphans = (
            f"FROM {self.chain_table_name} c WHERE NOT EXISTS "
            f"(SELECT 1 FROM {self.events_table_name} e WHERE e.rowid = c.notification_id)"
        )
        with self.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None
            cursor.execute(
                f"SELECT c.originator_id, c.originator_version {orphans} LIMIT ?", [limit]
            )
            rows = [(_id_bytes(oid), version) for oid, version in cursor.fetchall()]
            total = len(rows)
            if total == limit:
                cursor.execute(f"SELECT count(*) {orphans}")
                total = cursor.fetchone()[0]
        return total, rows


def _text(kind: str, raw: bytes | None) -> Any:
    """A TEXT value as ``str``; anything else (another type, text that is not UTF-8) as what it
    is, which the audit walk reports as altered."""
    if kind != "text" or raw is None:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class PayledgerSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory, handing the chain key from the environment to the recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        if isinstance(recorder, FastSQLiteApplicationRecorder):
            recorder.chain = ChainWriter(key_from_env(self.env))
        return recorder


def _key(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


def _raw_id(originator_id: UUID | str) -> bytes:
    return originator_id.bytes if isinstance(originator_id, UUID) else _id_bytes(originator_id)


def _id_bytes(stored_id: object) -> bytes:
    """The 16 bytes of a stored id: the 32 hex digits the recorder writes, or any UUID text.
    Anything else (SQLite stores whatever it is given) gets 16 bytes of its digest, so that the
    walk reports it instead of failing."""
    if isinstance(stored_id, str):
        try:
            raw = bytes.fromhex(stored_id)
            if len(raw) == 16:
                return raw
        except ValueError:
            pass
        try:
            return UUID(stored_id).bytes
        except ValueError:
            pass
    return hashlib.sha256(repr(stored_id).encode()).digest()[:16]


def _values(rows: int, columns: int) -> str:
    row = "(" + ",".join("?" * columns) + ")"
    return ",".join([row] * rows)


_STATEMENTS: dict[tuple[str, int], str] = {}


def _statement(table: str, rows: int) -> str:
    key = (table, rows)
    if key not in _STATEMENTS:
        _STATEMENTS[key] = (
            f"INSERT INTO {table} VALUES {_values(rows, 4)} "
            "RETURNING rowid, originator_id, originator_version"
        )
    return _STATEMENTS[key]
