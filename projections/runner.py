"""Runs the view projections over the notification log: catch up, follow, wait for a position.

One runner feeds every projection from one read of the log. Each page is one transaction: the
projections' table changes and their tracking rows commit together or not at all. The tracking
rows are locked first (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` locks the file)
and checked against the positions the page was read from, so a page is never applied twice, even
with two runners or a rebuild swapping tables underneath.

Only one follower per database does the work: it holds a leadership lock (a PostgreSQL advisory
lock, or an ``flock`` next to the SQLite file); the others wait as stand-bys. So every API worker
can start a follower, and ``payledger project --follow`` can run beside them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry

from projections.accounts import AccountsProjection
from projections.base import (
    TRACKING_TABLE,
    RawEvent,
    TrackingConflict,
    ViewProjection,
    ViewTracking,
    decode,
    decode_rows,
)
from projections.batches import BatchesProjection
from projections.db import ViewDB
from projections.payments import PaymentsProjection
from projections.reconciliations import ReconciliationsProjection
from projections.webhooks import WebhooksProjection

log = logging.getLogger("payledger.projections")

PROJECTIONS: dict[str, type[ViewProjection]] = {
    "payments": PaymentsProjection,  # tables: payments, metrics
    "accounts": AccountsProjection,  # tables: accounts, entries
    "webhooks": WebhooksProjection,  # tables: webhook endpoints, payments, outbox
    "batches": BatchesProjection,  # tables: batches, batch_items
    "reconciliations": ReconciliationsProjection,  # tables: reconciliations, their items
}
FOLLOW_PAGE = 1_000
# A rebuild's pages: larger ones mean fewer transactions and fewer writes of an account touched
# by many events, smaller ones keep its three threads busier (bench/replay.py: 10,000 was the
# fastest of 5,000 to 40,000 on 1,000,000 events; a page of 10,000 is about 15 MB decoded).
REBUILD_PAGE = 10_000
# At most this much stored event data is decoded at once (``LogReader.read``): pages of large
# events are cut short; pages of ordinary events stay well below it.
PAGE_BYTES_MAX = 16 * 1024 * 1024
_LATER = object()  # a page a projection processes on the writer thread (not PIPELINED)
ADVISORY_LOCK_KEY = 0x5041594C  # "PAYL"; the second key is the schema's hash


class ProjectionRunner:
    def __init__(
        self,
        app: Application[Any],
        db: ViewDB,
        names: Iterable[str] = PROJECTIONS,
        *,
        suffix: str = "",
        tracking_table: str = TRACKING_TABLE,
        page_size: int = FOLLOW_PAGE,
        keep_rows: bool = False,
    ) -> None:
        """``keep_rows``: the projections keep the rows they wrote from one page to the next
        instead of reading them back; only when no one else writes their tables (rebuilds)."""
        self.app, self.db, self.page_size = app, db, page_size
        self.log = LogReader(app)
        self.tracking_table = tracking_table
        self.projections = [
            PROJECTIONS[name](ViewTracking(db, name, tracking_table), suffix=suffix)
            for name in names
        ]
        if keep_rows:
            for projection in self.projections:
                projection.keep_rows()
        self.positions: dict[str, int] = {}
        self._changed = threading.Condition()
        self._writing: Future[bool] | None = None  # the page being written (catch_up)

    # --- set-up --------------------------------------------------------------------------------

    def create_tables(self, *, indexes: bool = True) -> None:
        """``indexes=False``: primary keys only, ``create_indexes`` later (rebuilds)."""
        with self.db.transaction():
            if self.db.is_postgres:  # processes starting together: one creates, the rest see it
                key = f"payledger-views:{self.db.schema}"
                self.db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))
            self.projections[0].view.create_table()
            for projection in self.projections:
                projection.create_tables(indexes=indexes)
                self.db.execute(
                    f"INSERT INTO {self.tracking_table} VALUES (?, ?, 0) "
                    "ON CONFLICT (projection) DO NOTHING",
                    (projection.name, self.app.name),
                )

    def create_indexes(self) -> None:
        for projection in self.projections:
            projection.create_indexes()

    def read_positions(self) -> dict[str, int]:
        rows = self.db.query(f"SELECT projection, notification_id FROM {self.tracking_table}")
        found = dict(rows)
        self.positions = {p.name: int(found.get(p.name, 0)) for p in self.projections}
        return self.positions

    @property
    def position(self) -> int:
        """Where every projection has got to (the slowest one)."""
        return min(self.positions.values()) if self.positions else 0

    # --- processing ----------------------------------------------------------------------------

    def run_once(self, up_to: int | None = None) -> int:
        """Process one page; returns how many notifications it read (0: caught up)."""
        if not self.positions:
            self.read_positions()
        start = self.position
        if up_to is not None and start >= up_to:
            return 0
        events = self.log.read(start, self.page_size, up_to)
        if events:
            self._commit_page(events)
        return len(events)

    def _commit_page(self, events: list[RawEvent]) -> None:
        """One transaction: the page's changes to the views and the tracking rows."""
        try:
            with self.db.transaction():
                applied = self.apply_events(events)
        except BaseException:
            self._forget_rows()  # changed in place by a page that did not commit
            raise
        if not applied:
            log.info("projections moved on elsewhere; re-reading positions")
            self._forget_rows()
            self.read_positions()
        with self._changed:
            self._changed.notify_all()

    def apply_page(self, notifications: Sequence[Notification]) -> bool:
        """Inside the caller's transaction: apply a page and move the tracking rows, unless
        they are no longer where this runner read them from (False: nothing applied)."""
        return self.apply_events(decode(notifications, self.app.mapper))

    def apply_events(self, events: list[RawEvent]) -> bool:
        """``apply_page`` for events already decoded (``LogReader.read``)."""
        expected = dict(self.positions)
        if self._locked_positions() != expected:
            return False
        first, last = events[0].id, events[-1].id
        for projection in self.projections:
            pos = expected[projection.name]
            if last <= pos:
                continue
            projection.process_page(events if first > pos else [e for e in events if e.id > pos])
            self.db.execute(
                f"UPDATE {self.tracking_table} SET notification_id = ? WHERE projection = ?",
                (last, projection.name),
            )
        for projection in self.projections:
            self.positions[projection.name] = max(self.positions[projection.name], last)
        return True

    def _forget_rows(self) -> None:
        for projection in self.projections:
            projection.forget_rows()

    def _locked_positions(self) -> dict[str, int]:
        lock = " FOR UPDATE" if self.db.is_postgres else ""
        names = [p.name for p in self.projections]
        rows = self.db.query(
            f"SELECT projection, notification_id FROM {self.tracking_table} "
            f"WHERE projection IN ({','.join('?' * len(names))}){lock}",
            names,
        )
        found = dict(rows)
        return {name: int(found.get(name, 0)) for name in names}

    def catch_up(self, up_to: int | None = None) -> int:
        """Process until the log's end (or ``up_to``); returns notifications read.

        Page after page as ``run_once`` does, but the next page is read and decoded on another
        thread while this one is processed (much of it is the database's time, during which
        this thread holds no lock on the interpreter). A page read ahead is used only if the
        positions are where it was read from when its turn comes.

        When the projections keep their rows (``keep_rows``: a rebuild), one more step runs
        on a thread of its own: a page's changes are written and committed, with the tracking
        rows in the same transaction as always, while the next page is prepared from the kept
        rows. Pages still commit one at a time and in order. A projection that does not
        prepare from kept rows alone (``PIPELINED`` false) processes its pages on that thread,
        inside each page's transaction, as ``apply_events`` does."""
        if not self.positions:
            self.read_positions()
        pipelined = all(p.kept is not None for p in self.projections) and any(
            p.PIPELINED for p in self.projections
        )
        total = 0
        with (
            ThreadPoolExecutor(1, thread_name_prefix="payledger-read-ahead") as reader,
            ThreadPoolExecutor(1, thread_name_prefix="payledger-view-writer") as writer,
        ):
            self._writing = None
            for projection in self.projections:
                if projection.PIPELINED:
                    projection.before_read = self._written
            ahead: tuple[int, Future[list[RawEvent]]] | None = None
            # Where the pages handed to the writer take the views (== positions when idle).
            planned = dict(self.positions)
            try:
                while True:
                    start = min(planned.values()) if planned else 0
                    events: list[RawEvent] = []
                    if up_to is None or start < up_to:
                        if ahead is not None and ahead[0] == start:
                            events = ahead[1].result()
                        else:
                            events = self.log.read(start, self.page_size, up_to)
                    ahead = None
                    if not events:
                        if self._wait_written():
                            break
                        planned = self._restart()  # the last page written was not applied
                        continue
                    last = events[-1].id
                    if len(events) == self.page_size and (up_to is None or last < up_to):
                        ahead = (last, reader.submit(self.log.read, last, self.page_size, up_to))
                    total += len(events)
                    if not pipelined:
                        self._commit_page(events)
                        planned = dict(self.positions)
                        continue
                    expected = dict(planned)
                    try:
                        changes = self._prepare_page(events, expected)
                        written = self._wait_written()
                    except TrackingConflict:
                        written = False
                    if not written:  # the page before was not applied: this one is void
                        planned = self._restart()
                        continue
                    for name in planned:
                        planned[name] = max(planned[name], last)
                    self._writing = writer.submit(self._write_page, events, expected, changes)
            except BaseException:
                if pipelined:
                    with contextlib.suppress(BaseException):
                        self._wait_written()
                    self._forget_rows()
                    self.positions = {}  # re-read from the tracking rows next time
                raise
            finally:
                self._writing = None
                for projection in self.projections:
                    projection.before_read = None
        return total

    def _prepare_page(self, events: list[RawEvent], expected: dict[str, int]) -> list[Any]:
        """The pipelined projections' changes (the others': ``_LATER``)."""
        first, last = events[0].id, events[-1].id
        changes: list[Any] = []
        for projection in self.projections:
            pos = expected[projection.name]
            if last <= pos:
                changes.append(None)
            elif not projection.PIPELINED:
                changes.append(_LATER)
            else:
                page = events if first > pos else [e for e in events if e.id > pos]
                changes.append(projection.prepare_page(page))
        return changes

    def _write_page(
        self, events: list[RawEvent], expected: dict[str, int], changes: list[Any]
    ) -> bool:
        """On the writer thread: one transaction, as ``apply_events``, with prepared changes."""
        first, last = events[0].id, events[-1].id
        with self.db.transaction():
            if self._locked_positions() != expected:
                return False
            for projection, change in zip(self.projections, changes, strict=True):
                pos = expected[projection.name]
                if last <= pos:
                    continue
                if change is _LATER:
                    projection.process_page(
                        events if first > pos else [e for e in events if e.id > pos]
                    )
                elif change is not None:
                    projection.write_changes(change)
                self.db.execute(
                    f"UPDATE {self.tracking_table} SET notification_id = ? WHERE projection = ?",
                    (last, projection.name),
                )
        for projection in self.projections:
            self.positions[projection.name] = max(self.positions[projection.name], last)
        with self._changed:
            self._changed.notify_all()
        return True

    def _wait_written(self) -> bool:
        """Wait for the page being written (re-raising its error); False if not applied."""
        writing, self._writing = self._writing, None
        return True if writing is None else writing.result()

    def _written(self) -> None:
        """Before reading rows from the tables: the pages handed over must have committed."""
        if not self._wait_written():
            raise TrackingConflict("the tracking rows moved while a page was written")

    def _restart(self) -> dict[str, int]:
        log.info("projections moved on elsewhere; re-reading positions")
        self._forget_rows()
        return dict(self.read_positions())

    def wait_local(self, position: int, timeout_s: float) -> bool:
        """Block until this runner has processed ``position`` (True) or the time is up."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.position < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True


class LogReader:
    """Pages of the notification log, decoded to ``RawEvent``.

    The same rows as ``recorder.select_notifications`` (events after ``start``, up to ``stop``,
    in order), read with a leaner query where the store is known: only the five columns needed,
    the originator id already as text, plain tuples instead of dicts and ``Notification``
    objects. That is most of the cost of reading a page in Python. Any other recorder is read
    through ``select_notifications``."""

    def __init__(self, app: Application[Any]) -> None:
        self.app, self.mapper, self.recorder = app, app.mapper, app.recorder
        self._rows: Any = None
        if isinstance(self.recorder, SQLiteApplicationRecorder):
            table = self.recorder.events_table_name
            self._statement: Any = (
                "SELECT rowid, CASE WHEN length(originator_id) = 32 THEN "
                "lower(substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4) || '-' "
                "|| substr(originator_id, 13, 4) || '-' || substr(originator_id, 17, 4) || '-' "
                "|| substr(originator_id, 21)) ELSE originator_id END, "
                f"originator_version, topic, state FROM {table} "
                "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
            )
            self._rows = self._sqlite_rows
        else:
            try:
                from eventsourcing.postgres import PostgresApplicationRecorder
                from psycopg.sql import SQL, Identifier
            except ImportError:  # no PostgreSQL support installed
                return
            if isinstance(self.recorder, PostgresApplicationRecorder):
                # No upper bound in the query (``stop`` is applied to the rows read): with a
                # bound whose selectivity it cannot know, the planner may sort the whole rest
                # of the log instead of walking the index, for every page.
                # At most PAGE_BYTES_MAX of states (the first row whatever its size): the
                # server stops sending there, so large events never arrive a thousand at once
                # (octet_length reads a stored value's size without decompressing it).
                self._statement = SQL(
                    "SELECT notification_id, originator_id::text, originator_version, topic, "
                    "state FROM (SELECT notification_id, originator_id, originator_version, "
                    "topic, state, sum(octet_length(state)) OVER (ORDER BY notification_id) "
                    "AS upto FROM {schema}.{table} WHERE notification_id > %s "
                    "ORDER BY notification_id LIMIT %s) AS page "
                    "WHERE upto <= %s OR upto = octet_length(state) ORDER BY notification_id"
                ).format(
                    schema=Identifier(self.recorder.datastore.schema),
                    table=Identifier(self.recorder.events_table_name),
                )
                self._rows = self._postgres_rows

    def read(self, start: int, limit: int, stop: int | None = None) -> list[RawEvent]:
        """Up to ``limit`` events after position ``start`` (to ``stop``, inclusive)."""
        if self._rows is None:
            notifications = self.recorder.select_notifications(
                start=start, limit=limit, stop=stop, inclusive_of_start=False
            )
            return decode(notifications, self.mapper)
        return decode_rows(self._rows(start, limit, stop), self.mapper)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _postgres_rows(self, start: int, limit: int, stop: int | None) -> list[Any]:
        from psycopg.rows import tuple_row

        datastore: Any = self.recorder.datastore  # type: ignore[attr-defined]
        with (
            datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self._statement, (start, limit, PAGE_BYTES_MAX), prepare=True)
            rows = curs.fetchall()
        if stop is not None and rows and rows[-1][0] > stop:
            rows = [r for r in rows if r[0] <= stop]
        return rows

    def _sqlite_rows(self, start: int, limit: int, stop: int | None) -> list[Any]:
        datastore: Any = self.recorder.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples
            cursor.execute(self._statement, (start, 2**63 - 1 if stop is None else stop, limit))
            rows = _within_bytes(cursor)  # SQLite reads a row when it is asked for it
        # An id stored in another form than 32 hex digits: read as the library reads it.
        return [r if len(r[1]) == 36 else (r[0], str(UUID(r[1])), *r[2:]) for r in rows]


def _within_bytes(rows: Iterable[Any], cap: int | None = None) -> list[Any]:
    """The first rows whose stored states add up to at most ``cap`` bytes (at least one): a
    page of large events (a reconciliation's result chunks, a batch's items) is read and
    decoded a part at a time, so memory stays bounded whatever the events hold. The rest is
    the next page. (PostgreSQL applies the same cap in its query.)"""
    cap = PAGE_BYTES_MAX if cap is None else cap
    taken: list[Any] = []
    total = 0
    for row in rows:
        total += len(row[4])
        if total > cap and taken:
            break
        taken.append(row)
    return taken


class Leadership:
    """Only one follower per database: PostgreSQL advisory lock, or ``flock`` for SQLite."""

    def __init__(
        self, db: ViewDB, *, key: int = ADVISORY_LOCK_KEY, lock_suffix: str = ".projections.lock"
    ) -> None:
        self.db, self.key, self.lock_suffix = db, key, lock_suffix
        self._file: Any = None
        self.held = False

    def try_acquire(self) -> bool:
        if self.held:
            return True
        store = self.db.store
        if store.kind == "postgres":
            # One lock per schema: several stores may share one PostgreSQL database.
            row = self.db.query(
                "SELECT pg_try_advisory_lock(?, hashtext(?))", (self.key, self.db.schema)
            )
            self.held = bool(row[0][0])
        elif store.is_memory:
            self.held = True
        else:
            handle = open(Path(store.sqlite_path + self.lock_suffix), "a")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            self._file, self.held = handle, True
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.db.store.kind == "postgres":
            # A lost connection has released the lock already.
            with contextlib.suppress(Exception):
                self.db.query(
                    "SELECT pg_advisory_unlock(?, hashtext(?))", (self.key, self.db.schema)
                )
        self.held = False


class Follower:
    """A thread that keeps the views up to date: leads when it can, stands by when not."""

    def __init__(
        self,
        runner: ProjectionRunner,
        *,
        idle_s: float = 0.05,
        standby_s: float = 1.0,
        gather_s: float = 0.0,
        nudge: Any = None,
        stop: Any = None,
        hurry: Any = None,
    ) -> None:
        """``nudge``, ``stop`` and ``hurry``: events set by another thread (the projector
        process's doorman), else this follower's own. ``gather_s``: after a page that was not
        full, let events gather this long before reading the next one (fewer, larger pages:
        each page's transaction costs the same however few events it holds), unless a reader
        waiting for a position hurries it (``hurry``)."""
        self.runner = runner
        self.idle_s, self.standby_s, self.gather_s = idle_s, standby_s, gather_s
        self.leadership = Leadership(runner.db)
        self._stop = stop if stop is not None else threading.Event()
        self._nudge = nudge if nudge is not None else threading.Event()
        self._hurry = hurry if hurry is not None else threading.Event()
        self._thread = threading.Thread(target=self._run, name="payledger-projections", daemon=True)
        self.errors = 0

    def start(self) -> Follower:
        self._thread.start()
        return self

    def nudge(self) -> None:
        """New events were just saved: look now rather than at the next poll."""
        self._nudge.set()

    def hurry(self) -> None:
        """A reader waits for the views: look now, without letting events gather first."""
        self._hurry.set()
        self._nudge.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._hurry.set()
        self._nudge.set()
        self._thread.join(timeout_s)
        self.leadership.release()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stop_event(self) -> threading.Event:
        """Set it to stop ``run_forever`` (a signal handler may)."""
        return self._stop

    @property
    def is_leader(self) -> bool:
        return self.leadership.held

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.leadership.try_acquire():
                    self._stop.wait(self.standby_s)
                    self.runner.read_positions()
                    continue
                read = self.runner.run_once()
                if read == 0:
                    self._nudge.wait(self.idle_s)
                    self._nudge.clear()
                elif read < self.runner.page_size and self.gather_s:
                    self._hurry.wait(self.gather_s)  # set by stop() too
                    self._hurry.clear()
            except Exception:
                self.errors += 1
                log.exception("projection runner failed; retrying in 1 s")
                self.runner.positions = {}
                self._stop.wait(1.0)

    def run_forever(self) -> None:
        """For ``payledger project --follow``: the loop on the calling thread."""
        self._run()
