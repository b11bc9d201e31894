"""What every view projection shares: raw event decoding, its tables, and its tracking row.

A projection here is an ``eventsourcing.projection.Projection`` whose view is a
``TrackingRecorder``: the view's rows and the projection's position in the notification log are
committed in one transaction, so a projection killed mid-way resumes exactly where it committed.

Unlike the library's runner, which processes (and commits) one event at a time (~500 events/s),
ours hands a projection a page of events and commits the page's changes with the page's last
position at once. Events are decoded straight from their stored JSON, without building domain
objects: a rebuild reads millions of them.
"""

from __future__ import annotations

import re
import secrets
from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import orjson
from eventsourcing.persistence import Mapper, Notification, Tracking, TrackingRecorder
from eventsourcing.projection import Projection

from projections.db import ViewDB, table_columns, to_us

TRACKING_TABLE = "view_tracking"
KEPT_ROWS_MAX = 100_000  # rows kept between pages per projection (keep_rows): ~120 MB


class RawEvent(NamedTuple):
    """A stored event, decoded to its JSON fields (no domain object). A named tuple: a rebuild
    makes millions of them, and a frozen dataclass costs several times more to construct."""

    id: int  # notification id: the position in the log
    originator_id: str
    version: int
    name: str  # "Payment.Requested": the topic without its module
    data: dict[str, Any]

    @property
    def at_us(self) -> int:
        return timestamp_us(self.data["timestamp"])


_new_event = tuple.__new__
# ISO time -> microseconds: the events of one command share its time, and a payment's events
# are seen by both projections, so most conversions are found here.
_TIMES: dict[str, int] = {}
_TIMES_MAX = 50_000


def timestamp_us(value: Any) -> int:
    """The transcoder stores datetimes as ``{"_type_": "datetime_iso", "_data_": iso}``."""
    iso = value["_data_"] if isinstance(value, dict) else value
    us = _TIMES.get(iso)
    if us is None:
        us = to_us(datetime.fromisoformat(iso))
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[iso] = us
    return us


# topic ("domain.payments:Payment.Requested") -> event name ("Payment.Requested")
_NAMES: dict[str, str] = {}


def event_name(topic: str) -> str:
    name = _NAMES.get(topic)
    if name is None:
        name = _NAMES[topic] = topic.rpartition(":")[2]
    return name


def decode(notifications: Sequence[Notification], mapper: Mapper[Any]) -> list[RawEvent]:
    return decode_rows(
        [(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
         for n in notifications],
        mapper,
    )  # fmt: skip


def decode_rows(
    rows: Sequence[tuple[int, str, int, str, bytes]], mapper: Mapper[Any]
) -> list[RawEvent]:
    """Rows of (notification id, originator id as text, version, topic, state)."""
    cipher, compressor = mapper.cipher, mapper.compressor
    loads, names, new = orjson.loads, _NAMES, _new_event
    if cipher is None and compressor is None:
        return [
            new(RawEvent, (nid, oid, version, names.get(topic) or event_name(topic),
                           loads(state)))
            for nid, oid, version, topic, state in rows
        ]  # fmt: skip
    events = []
    for nid, oid, version, topic, state in rows:
        if cipher is not None:
            state = cipher.decrypt(state)
        if compressor is not None:
            state = compressor.decompress(state)
        events.append(RawEvent(nid, oid, version, event_name(topic), loads(state)))
    return events


@lru_cache(maxsize=64)
def column_types(definition: str) -> dict[str, str]:
    """Column name -> SQL type, from a ``TABLES`` definition."""
    return {m[1]: m[2].lower() for m in _COLUMN.finditer(definition)}


_COLUMN = re.compile(r"(?:^|, )(\w+) (TEXT|BIGINT|SMALLINT|INTEGER)\b")


class ViewTracking(TrackingRecorder):
    """The tracking rows of the views, one per projection, in ``view_tracking``.

    ``advance`` is a compare-and-set: it moves the position only from the value the batch
    started at, so two runners that somehow processed the same page cannot both commit it."""

    def __init__(self, db: ViewDB, projection_name: str, table: str = TRACKING_TABLE) -> None:
        self.db, self.projection_name, self.table = db, projection_name, table

    def create_table(self) -> None:
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (projection TEXT PRIMARY KEY, "
            "application_name TEXT NOT NULL, notification_id BIGINT NOT NULL)"
        )

    def insert_tracking(self, tracking: Tracking) -> None:
        with self.db.transaction():
            self.advance(self.max_tracking_id(tracking.application_name) or 0, tracking)

    def advance(self, expected: int, tracking: Tracking) -> None:
        """Inside the caller's transaction: move from ``expected`` to ``tracking``."""
        if expected == 0:
            self.db.execute(
                f"INSERT INTO {self.table} VALUES (?, ?, 0) ON CONFLICT (projection) DO NOTHING",
                (self.projection_name, tracking.application_name),
            )
        cursor = self.db.execute(
            f"UPDATE {self.table} SET notification_id = ? "
            "WHERE projection = ? AND notification_id = ?",
            (tracking.notification_id, self.projection_name, expected),
        )
        if cursor.rowcount != 1:
            raise TrackingConflict(
                f"projection {self.projection_name} moved past {expected} meanwhile"
            )

    def max_tracking_id(self, application_name: str) -> int | None:
        rows = self.db.query(
            f"SELECT notification_id FROM {self.table} "
            "WHERE projection = ? AND application_name = ?",
            (self.projection_name, application_name),
        )
        return rows[0][0] if rows and rows[0][0] else None

    def reset(self) -> None:
        self.db.execute(f"DELETE FROM {self.table} WHERE projection = ?", (self.projection_name,))


class TrackingConflict(Exception):
    """Another runner committed this projection's page first: drop ours and re-read."""


class ViewProjection(Projection[ViewTracking]):
    """A projection into SQL tables. Subclasses name their tables (``TABLES``: name -> column
    definitions and primary key), their indexes, and handle a page of events in
    ``process_page``."""

    TABLES: ClassVar[dict[str, str]] = {}
    INDEXES: ClassVar[dict[str, list[str]]] = {}  # table -> ["col", "col1, col2", ...]
    HANDLED: ClassVar[frozenset[str]] = frozenset()  # event names ("Payment.Requested")
    # Tables that ``process_page`` only ever inserts into (never reads or updates): a rebuild
    # on PostgreSQL adds their primary key once they are loaded, as for the other indexes.
    APPEND_ONLY: ClassVar[frozenset[str]] = frozenset()
    # PostgreSQL storage parameters per table (``fillfactor = 50``: room on each page for the
    # updated versions of its rows, so that updates that change no indexed column stay on the
    # page and touch no index: "HOT" updates).
    STORAGE: ClassVar[dict[str, str]] = {}
    # Columns added to a table after its first release (table -> {column: SQL type}, also in
    # ``TABLES``): a view created before them gets them when its tables are created (NULL
    # until a rebuild), then ``columns_added`` is called.
    ADDED_COLUMNS: ClassVar[dict[str, dict[str, str]]] = {}
    # ``prepare_page`` reads the tables only through ``load_rows`` and keeps what it wrote
    # (``keep``): a pipelined rebuild may prepare its next page while one is being written.
    PIPELINED: ClassVar[bool] = False

    def __init__(self, view: ViewTracking, *, suffix: str = "") -> None:
        super().__init__(view)
        self.db = view.db
        self.suffix = suffix  # "__rebuild" while rebuilding side by side
        self._deferred: dict[str, str] = {}  # table name -> its primary key, still to add
        # Rows as last committed, kept between pages (``keep_rows``): only for a runner that
        # alone writes these tables, a rebuild's side tables. None: always read the table.
        self.kept: dict[str, dict[str, Any]] | None = None
        # Called before reading rows from the tables (a pipelined rebuild: wait until the
        # pages being written have committed).
        self.before_read: Callable[[], None] | None = None

    def table(self, name: str) -> str:
        return f"view_{name}{self.suffix}"

    def columns_added(self, name: str, columns: list[str]) -> None:
        """Called once ``ADDED_COLUMNS`` were added to table ``name`` of an older view."""

    def create_tables(self, *, indexes: bool = True) -> None:
        """``indexes=False``: the tables with only the primary keys that processing needs; a
        rebuild loads them first and creates the other indexes (and the append-only tables'
        primary keys) at the end with ``create_indexes``, faster than row by row."""
        for name, definition in self.TABLES.items():
            table = self.table(name)
            if self.db.table_exists(table):
                self._add_missing_columns(name)
                continue
            if not indexes and name in self.APPEND_ONLY and self.db.is_postgres:
                columns, _, key = definition.rpartition(", PRIMARY KEY ")
                if columns and key.startswith("("):
                    definition, self._deferred[name] = columns, key
            storage = self.STORAGE.get(name) if self.db.is_postgres else None
            with_storage = f" WITH ({storage})" if storage else ""
            self.db.execute(f"CREATE TABLE {table} ({definition}){with_storage}")
            if indexes:
                self._create_indexes(name)

    def _add_missing_columns(self, name: str) -> None:
        added = self.ADDED_COLUMNS.get(name)
        if not added:
            return
        table = self.table(name)
        have = set(table_columns(self.db, table))
        missing = [c for c in added if c not in have]
        for column in missing:
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {added[column]}")
        if missing:
            self.columns_added(name, missing)

    def create_indexes(self) -> None:
        for name in self.TABLES:
            key = self._deferred.pop(name, None)
            if key is not None:
                self.db.execute(f"ALTER TABLE {self.table(name)} ADD PRIMARY KEY {key}")
            self._create_indexes(name)

    def _create_indexes(self, name: str) -> None:
        table = self.table(name)
        generation = secrets.token_hex(3)  # index names must be unique per schema/file
        for i, columns in enumerate(self.INDEXES.get(name, [])):
            self.db.execute(f"CREATE INDEX ix_{name}_{i}_{generation} ON {table} ({columns})")

    def column_types(self, name: str) -> dict[str, str]:
        return column_types(self.TABLES[name])

    # --- rows kept between pages ---------------------------------------------------------------

    def keep_rows(self) -> None:
        """Keep the rows written, to start the next page from them instead of reading them
        back. Only for tables no one else writes; the runner forgets them whenever a page is
        not committed (its changes were made to the kept rows in place)."""
        self.kept = {}

    def forget_rows(self) -> None:
        if self.kept is not None:
            self.kept = {}

    def load_rows(
        self, table: str, key: str, columns: Sequence[str], ids: set[str]
    ) -> dict[str, dict[str, Any]]:
        """The rows of ``table`` whose ``key`` is in ``ids``, as dicts; kept ones first."""
        kept, rows = self.kept, {}
        wanted: Any = ids
        if kept:
            wanted = []
            for i in ids:
                row = kept.get(i)
                if row is None:
                    wanted.append(i)
                else:
                    rows[i] = row
        if wanted:
            if self.before_read is not None:
                self.before_read()
            found = self.db.select_in(columns, self.table(table), key, list(wanted), "text")
            rows.update((r[0], dict(zip(columns, r, strict=True))) for r in found)
        missing = ids - rows.keys()
        if missing:
            raise LookupError(f"{table} view has no row for {sorted(missing)[:3]}: out of order")
        return rows

    def keep(self, rows: dict[str, dict[str, Any]], drop: Any = None) -> None:
        """After a page's writes: keep its rows (those for which ``drop(row)`` is true are
        let go: rows that will not change again)."""
        kept = self.kept
        if kept is None:
            return
        if len(kept) + len(rows) > KEPT_ROWS_MAX:
            kept.clear()
        if drop is None:
            kept.update(rows)
            return
        for k, row in rows.items():
            if drop(row):
                kept.pop(k, None)
            else:
                kept[k] = row

    def drop_tables(self) -> None:
        for name in self.TABLES:
            self.db.execute(f"DROP TABLE IF EXISTS {self.table(name)}")

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """One event at a time, as the library's runner would: a page of one."""
        with self.db.transaction():
            expected = self.view.max_tracking_id(tracking.application_name) or 0
            self.process_page([domain_event])
            self.view.advance(expected, tracking)

    def process_page(self, events: list[RawEvent]) -> None:
        """Apply a page of events (in log order) to the view's tables, inside the runner's
        transaction."""
        changes = self.prepare_page(events)
        if changes is not None:
            self.write_changes(changes)

    @abstractmethod
    def prepare_page(self, events: list[RawEvent]) -> Any:
        """The first half of ``process_page``: what the page changes in the tables (None:
        nothing), computed from the rows it touches as loaded, without writing anything. A
        pipelined rebuild prepares a page while the previous one is being written."""

    @abstractmethod
    def write_changes(self, changes: Any) -> None:
        """The second half of ``process_page``: write what ``prepare_page`` returned."""
