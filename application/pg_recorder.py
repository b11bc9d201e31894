"""A faster insert for the library's PostgreSQL application recorder, with the audit hash chain.

The stock recorder sends a batch as one array of a composite type, which psycopg dumps element by
element in Python: a quarter of the committer's time in profiles. Sending four arrays of plain types
(uuid, bigint, text, bytea) in binary lets psycopg's C dumpers do it. Everything else (table lock,
NOTIFY, RETURNING order, retries, error mapping) is the library's own.

In the same transaction, under the same table lock, it writes each event's link of the
tamper-evidence chain to ``<events table>_chain`` in the same schema (see application/audit.py).

A save is one round trip when every previous link it needs is in the recorder's cache (the
common case: this process wrote the aggregate's last event): one call of a PL/pgSQL function,
``<events table>_save_v1``, on the pool's autocommit connection, so the call is its own
transaction. The function sets the lock timeout, takes the table lock, sends the ``NOTIFY``,
inserts the events and their chain rows, and returns the notification ids. The links are computed
before the call, outside the lock: a cached link is one this process committed for an (id, version)
that no other writer can ever write, so it is right whoever holds the lock.

When a previous link is not in the cache (another writer process wrote it, or the cache is cold)
the save takes four or five round trips: ``BEGIN``; the lock timeout, the table lock and the
``NOTIFY`` as one simple query; the missing links read under the lock; both inserts as one
statement (the chain rows in a data-modifying ``WITH``); ``COMMIT``. The library's statements took
seven, each rebuilt from ``psycopg.sql`` objects on every call; here they are rendered once. The
chain key comes from the eventsourcing environment, which only the factory sees:
``PERSISTENCE_MODULE`` names :class:`PayledgerPostgresFactory`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InterfaceError,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from application.audit import (
    ChainedRow,
    ChainWriter,
    Link,
    Linked,
    default_key,
    id_bytes,
    key_from_env,
)

TOPIC = "application.pg_recorder:FastPostgresApplicationRecorder"
FACTORY_TOPIC = "application.pg_recorder:PayledgerPostgresFactory"


class FastPostgresApplicationRecorder(PostgresApplicationRecorder):
    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if datastore.enable_db_functions:
            # The library's insert function would write events without their chain rows.
            raise ValueError("POSTGRES_ENABLE_DB_FUNCTIONS is not supported: it bypasses the chain")
        self.chain = ChainWriter(default_key())  # the factory sets the configured key
        self.chain_table_name = f"{self.events_table_name}_chain"
        self.check_identifier_length(self.chain_table_name)
        schema = Identifier(self.datastore.schema)
        events = Identifier(self.events_table_name)
        chain = Identifier(self.chain_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{chain} ("
                "originator_id uuid NOT NULL, "
                "originator_version bigint NOT NULL, "
                "chain_hash bytea NOT NULL, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(schema=schema, chain=chain)
        )
        # Both inserts in one statement: the chain rows do not depend on the events' ids.
        self.insert_arrays_statement = SQL(
            "WITH chain AS (INSERT INTO {schema}.{chain} "
            "(originator_id, originator_version, chain_hash) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::bytea[])) "
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=schema, table=events, chain=chain)
        self._rendered: tuple[str, str, str] | None = None  # (lock and notify, insert, save)
        # The one-round-trip save (see the module's docstring). The version in the name changes
        # with the body, so a store written by an older release gets the new function beside
        # the old one instead of a body its callers do not expect.
        self.save_function_name = f"{self.events_table_name}_save_v1"
        self.check_identifier_length(self.save_function_name)
        save_function = Identifier(self.save_function_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "p_chain_ids uuid[], p_chain_versions bigint[], p_chain_hashes bytea[], "
                "p_ids uuid[], p_versions bigint[], p_topics text[], p_states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $save$ "
                "BEGIN "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                # The events first: a conflict is the events table's, as in the other save.
                "RETURN QUERY INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(p_ids, p_versions, p_topics, p_states) "
                "RETURNING notification_id; "
                "INSERT INTO {schema}.{chain} (originator_id, originator_version, chain_hash) "
                "SELECT * FROM unnest(p_chain_ids, p_chain_versions, p_chain_hashes); "
                "END $save$"
            ).format(
                schema=schema,
                function=save_function,
                lock_timeout=self.datastore.lock_timeout,
                table=events,
                chain=chain,
                channel=Identifier(self.channel_name),
            )
        )
        self.call_save_statement = SQL(
            "SELECT * FROM {schema}.{function}("
            "%b::uuid[], %b::bigint[], %b::bytea[], %b::uuid[], %b::bigint[], %b::text[], "
            "%b::bytea[])"
        ).format(schema=schema, function=save_function)
        # One primary-key lookup per key, whatever the planner knows of the table's size: a
        # join may be planned as a hash join over a scan of the whole chain table.
        self.select_prev_links_statement = SQL(
            "SELECT k.id, k.v, (SELECT c.chain_hash FROM {schema}.{chain} c "
            "WHERE c.originator_id = k.id AND c.originator_version = k.v) "
            "FROM unnest(%b::uuid[], %b::bigint[]) AS k(id, v)"
        ).format(schema=schema, chain=chain)
        # Each event's chain hash by a primary-key lookup (see above) rather than a join.
        self.select_chained_statement = SQL(
            "SELECT e.notification_id, uuid_send(e.originator_id), e.originator_version, "
            "e.topic, e.state, (SELECT c.chain_hash FROM {schema}.{chain} c "
            "WHERE c.originator_id = e.originator_id "
            "AND c.originator_version = e.originator_version) "
            "FROM {schema}.{events} e "
            "WHERE e.notification_id > %s AND e.notification_id <= %s "
            "ORDER BY e.notification_id LIMIT %s"
        ).format(schema=schema, events=events, chain=chain)
        orphans = SQL(
            "FROM {schema}.{chain} c WHERE NOT EXISTS (SELECT 1 FROM {schema}.{events} e "
            "WHERE e.originator_id = c.originator_id "
            "AND e.originator_version = c.originator_version)"
        ).format(schema=schema, events=events, chain=chain)
        self.select_orphans_statement = (
            SQL("SELECT uuid_send(c.originator_id), c.originator_version ")
            + orphans
            + SQL(" LIMIT %s")
        )
        self.count_orphans_statement = SQL("SELECT count(*) ") + orphans

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        linked: list[Linked] = []  # refilled by each retry
        ids = self._insert_in_one_transaction(stored_events, chain_out=linked, **kwargs)
        for saved in linked:  # committed: now the cache may know these heads
            self.chain.remember(saved)
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _insert_in_one_transaction(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's ``insert_events`` without psycopg's pipeline mode: with a large save
        (a 100,000-item batch's chunks, ~30 MB in one statement) the pipeline deadlocked, the
        client waiting in ``Pipeline.sync()`` while the server waited for the rest of the
        statement (``ClientRead``). Same transaction and errors; the round trips are cut by
        joining statements instead (see the module's docstring). The library's
        ``_insert_events`` hook, for a process recorder's tracking, has nothing to do here."""
        if not stored_events:
            return None
        prevs, missing = self.chain.plan(
            (e.originator_id, e.originator_version) for e in stored_events
        )
        if not missing:
            return self._save_in_one_round_trip(stored_events, prevs, kwargs.get("chain_out"))
        # Tuples, not the library's dict rows: a batch's group returns 1,000 ids.
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            self._insert_stored_events(curs, stored_events, **kwargs)
            return _all_ids([row[0] for row in curs.fetchall()], stored_events)

    def _save_in_one_round_trip(
        self,
        stored_events: Sequence[StoredEvent],
        prevs: Mapping[Link, bytes],
        chain_out: list[Linked] | None,
    ) -> list[int]:
        """The save as one call of the save function, its own transaction (see the module's
        docstring): every previous link is known, so nothing needs reading under the lock."""
        linked = self._links(stored_events, prevs)
        with self.datastore.get_connection() as conn:
            # The pool's connections are autocommit: the call is one transaction by itself.
            assert conn.autocommit
            with conn.cursor(row_factory=tuple_row) as curs:
                curs.execute(
                    self._statements(curs)[2], _arrays(linked, stored_events), prepare=True
                )
                ids = _all_ids([row[0] for row in curs.fetchall()], stored_events)
        _hand_out(chain_out, linked)
        return ids

    def _insert_stored_events(
        self, curs: Cursor[Any], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        lock_and_notify, insert, _save = self._statements(curs)
        curs.execute(lock_and_notify)  # no parameters: the simple protocol runs all three
        linked = self._link(curs, stored_events)
        curs.execute(insert, _arrays(linked, stored_events), prepare=True)
        _hand_out(kwargs.get("chain_out"), linked)

    def _statements(self, curs: Cursor[Any]) -> tuple[str, str, str]:
        """The saves' statements as text, rendered with the first connection's encoding."""
        if self._rendered is None:
            conn = curs.connection
            lock = [_text(statement, conn) for statement in self.lock_table_statements]
            notify = SQL("NOTIFY {0}").format(Identifier(self.channel_name)).as_string(conn)
            self._rendered = (
                "; ".join([*lock, notify]),
                self.insert_arrays_statement.as_string(conn),
                self.call_save_statement.as_string(conn),
            )
        return self._rendered

    def _link(self, curs: Cursor[Any], stored_events: Sequence[StoredEvent]) -> Linked:
        """Each event's chain link; previous links the cache lacks are read (under the lock)."""
        prevs, missing = self.chain.plan(
            (e.originator_id, e.originator_version) for e in stored_events
        )
        if missing:
            with curs.connection.cursor(row_factory=tuple_row) as select:
                select.execute(
                    self.select_prev_links_statement,
                    ([oid for oid, _ in missing], [version for _, version in missing]),
                    prepare=True,
                )
                for oid, version, digest in select.fetchall():
                    if digest is not None:
                        prevs[(oid, version)] = bytes(digest)
        return self._links(stored_events, prevs)

    def _links(self, stored_events: Sequence[StoredEvent], prevs: Mapping[Link, bytes]) -> Linked:
        return self.chain.link(
            (
                (e.originator_id, id_bytes(e.originator_id), e.originator_version, e.topic, e.state)
                for e in stored_events
            ),
            prevs,
        )

    # --- reading for application/audit.py -------------------------------------------------------

    def select_chained_events(
        self, after: int, limit: int, stop: int | None = None
    ) -> list[ChainedRow]:
        """Events after notification ``after`` (to ``stop``), each with its chain hash or None."""
        params = (after, stop if stop is not None else 2**63 - 1, limit)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self.select_chained_statement, params, prepare=True)
            return curs.fetchall()  # type: ignore[return-value]

    def select_orphan_chain_rows(self, limit: int) -> tuple[int, list[tuple[bytes, int]]]:
        """How many chain rows have no event, and the first ``limit`` of them."""
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self.select_orphans_statement, (limit,))
            rows = [(bytes(oid), version) for oid, version in curs.fetchall()]
            total = len(rows)
            if total == limit:
                curs.execute(self.count_orphans_statement)
                found = curs.fetchone()
                total = found[0] if found else total
        return total, rows


def _arrays(linked: Linked, stored_events: Sequence[StoredEvent]) -> tuple[list[Any], ...]:
    """Both saves' parameters: the chain rows' three columns, then the events' four."""
    rows = linked.rows
    return (
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


def _all_ids(ids: list[int], stored_events: Sequence[StoredEvent]) -> list[int]:
    """A save's notification ids, one per event, or the library's error."""
    if len(ids) != len(stored_events):
        raise ProgrammingError(
            f"Couldn't get all notification IDs (got {len(ids)}, expected {len(stored_events)})"
        )
    return ids


def _hand_out(chain_out: list[Linked] | None, linked: Linked) -> None:
    """Give the save's chain rows to ``insert_events``, which remembers them once committed
    (emptied first: a retried save hands out only its last attempt's)."""
    if chain_out is not None:
        chain_out.clear()
        chain_out.append(linked)


def _text(statement: Any, conn: Any) -> str:
    """A statement of the library's (``psycopg.sql`` object, or already text) as text."""
    if isinstance(statement, bytes):
        return statement.decode()
    return statement if isinstance(statement, str) else str(statement.as_string(conn))


class PayledgerPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, handing the chain key from the environment to the
    recorder, and creating each recorder's tables one process at a time per schema.

    Processes that start together (a CLI command beside a starting server, two servers sharing
    one database) otherwise race in PostgreSQL's catalog: on a new schema two ``CREATE TABLE IF
    NOT EXISTS`` both create the table's row type (``duplicate key value violates unique
    constraint "pg_type_typname_nsp_index"``), and on an existing one two ``CREATE OR REPLACE
    FUNCTION`` update the same catalog row (``tuple concurrently updated``). A session advisory
    lock keyed by the schema, on a connection of its own, is held while a recorder is made and
    its tables committed."""

    @contextmanager
    def _one_at_a_time(self) -> Iterator[None]:
        if not self.env_create_table():
            yield
            return
        key = f"payledger-ddl:{self.datastore.schema}"
        with self.datastore.get_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        with self._one_at_a_time():
            return super().aggregate_recorder(purpose)

    def application_recorder(self) -> ApplicationRecorder:
        with self._one_at_a_time():
            recorder = super().application_recorder()
        if isinstance(recorder, FastPostgresApplicationRecorder):
            recorder.chain = ChainWriter(key_from_env(self.env))
        return recorder

    def tracking_recorder(self, *args: Any, **kwargs: Any) -> Any:
        with self._one_at_a_time():
            return super().tracking_recorder(*args, **kwargs)

    def process_recorder(self) -> ProcessRecorder:
        with self._one_at_a_time():
            return super().process_recorder()
