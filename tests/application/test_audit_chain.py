"""Tamper evidence on SQLite and PostgreSQL: every stored event is chained to the previous event of
its aggregate by a keyed hash; altering, deleting or re-chaining a row directly in the database is
caught by ``verify_chain`` with the aggregate id and version of the first broken link."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import IntegrityError

from application.app import PayledgerApp
from application.audit import (
    ENV_KEY,
    HASH_MISMATCH,
    MISSING_CHAIN_ROW,
    ORPHAN_CHAIN_ROW,
    VERSION_GAP,
    AuditReport,
    default_key,
    derive_key,
    verify_chain,
)
from application.service import Payledger
from application.store import StoreConfig, parse_database_url
from domain.accounts import Account, AccountKind
from tests.application.helpers import Driver, stored_notifications
from tests.conftest import make_settings

SECRET = "payledger-test-audit-secret"
KEY = derive_key(SECRET)


class Tamper:
    """Direct SQL on the store behind the service's back, as someone with database access would."""

    def __init__(self, database_url: str) -> None:
        self.store: StoreConfig = parse_database_url(database_url)
        if self.store.kind == "sqlite":
            self.events, self.chain = "stored_events", "stored_events_chain"
        else:
            schema = self.store.schema
            self.events = f'"{schema}".payledger_events'
            self.chain = f'"{schema}".payledger_events_chain'

    def run(self, sql: str, *params: Any, oid: UUID) -> tuple[int, list[Any]]:
        """``sql`` with ``?`` placeholders, ``params`` then the aggregate id and version last;
        returns the rows touched and the rows selected."""
        if self.store.kind == "sqlite":
            with sqlite3.connect(self.store.sqlite_path) as conn:
                cursor = conn.execute(sql, (*params[:-1], oid.hex, params[-1]))
                return cursor.rowcount, cursor.fetchall()
        import psycopg

        s = self.store
        with psycopg.connect(
            host=s.host, port=s.port, user=s.user, password=s.password or None, dbname=s.dbname
        ) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), (*params[:-1], oid, params[-1]))
            return cursor.rowcount, cursor.fetchall() if cursor.description else []

    def alter_state(self, oid: UUID, version: int) -> None:
        """Flip one bit of the stored event: same length, different history."""
        where = "WHERE originator_id = ? AND originator_version = ?"
        _, [(state,)] = self.run(f"SELECT state FROM {self.events} {where}", version, oid=oid)
        altered = bytes([state[0] ^ 0x01]) + bytes(state[1:])
        touched, _ = self.run(
            f"UPDATE {self.events} SET state = ? {where}", altered, version, oid=oid
        )
        assert touched == 1

    def delete_event(self, oid: UUID, version: int) -> None:
        sql = f"DELETE FROM {self.events} WHERE originator_id = ? AND originator_version = ?"
        assert self.run(sql, version, oid=oid)[0] == 1

    def alter_chain(self, oid: UUID, version: int) -> None:
        sql = (
            f"UPDATE {self.chain} SET chain_hash = ? "
            "WHERE originator_id = ? AND originator_version = ?"
        )
        assert self.run(sql, bytes(32), version, oid=oid)[0] == 1

    def delete_chain(self, oid: UUID, version: int) -> None:
        sql = f"DELETE FROM {self.chain} WHERE originator_id = ? AND originator_version = ?"
        assert self.run(sql, version, oid=oid)[0] == 1


@pytest.fixture
def service(database_url: str) -> Iterator[Payledger]:
    with Payledger(make_settings(database_url, secret_key=SECRET)) as svc:
        yield svc


@pytest.fixture
def tamper(database_url: str) -> Tamper:
    return Tamper(database_url)


@pytest.fixture
def books(service: Payledger) -> dict[str, UUID]:
    """Two accounts with a few payments between them: chains of several events each."""
    d = Driver(service)
    alice, shop = d.open("alice"), d.open("shop", kind="merchant")
    d.deposit(alice, "100.00")
    payments = [d.pay("3.00", payer=alice, payee=shop).id for _ in range(4)]
    return {"alice": alice, "shop": shop, "payment": payments[1]}


def verify(service: Payledger, **kwargs: Any) -> AuditReport:
    return verify_chain(service.app, KEY, **kwargs)


def versions(service: Payledger, oid: UUID) -> list[int]:
    return [e.originator_version for e in service.app.repository.event_store.get(oid)]


def only_broken(report: AuditReport) -> tuple[UUID, int, str]:
    assert not report.ok
    assert report.broken_total == 1, report.broken
    first = report.first_broken
    assert first is not None
    return first.aggregate_id, first.version, first.reason


def test_an_untouched_store_verifies(service: Payledger, books: dict[str, UUID]) -> None:
    report = verify(service)
    assert report.ok, report.broken
    stored = list(stored_notifications(service))
    assert report.events == len(stored) > 10
    assert report.aggregates == len({n.originator_id for n in stored})
    assert report.position == stored[-1].id
    assert len(report.head_hash) == 64
    assert verify(service).head_hash == report.head_hash  # deterministic
    assert verify(service, page=3).head_hash == report.head_hash  # whatever the page size

    # More events move the head; verifying up to the old position gives the old head back,
    # which is how a head hash anchored outside the database is checked later.
    Driver(service).pay("1.00", payer=books["alice"], payee=books["shop"])
    later = verify(service)
    assert later.ok and later.events > report.events and later.head_hash != report.head_hash
    then = verify(service, stop=report.position)
    assert (then.events, then.head_hash, then.complete) == (report.events, report.head_hash, False)


def test_another_key_does_not_verify(service: Payledger, books: dict[str, UUID]) -> None:
    report = verify_chain(service.app, derive_key("someone else's secret"))
    assert not report.ok and report.first_broken is not None
    assert report.first_broken.reason == HASH_MISMATCH
    assert report.broken_total == report.events


def test_an_altered_event_is_caught_with_its_aggregate_and_version(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    alice = books["alice"]
    assert len(versions(service, alice)) > 4
    tamper.alter_state(alice, 3)

    assert only_broken(verify(service)) == (alice, 3, HASH_MISMATCH)  # and nothing after it


def test_an_altered_payment_event_is_caught(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    payment = books["payment"]
    last = versions(service, payment)[-1]
    tamper.alter_state(payment, last)
    assert only_broken(verify(service)) == (payment, last, HASH_MISMATCH)


def test_a_deleted_event_is_caught(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    shop = books["shop"]
    tamper.delete_event(shop, 2)  # from the middle of its chain
    assert only_broken(verify(service)) == (shop, 2, VERSION_GAP)


def test_a_deleted_latest_event_leaves_its_chain_row(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    alice = books["alice"]
    last = versions(service, alice)[-1]
    tamper.delete_event(alice, last)
    assert only_broken(verify(service)) == (alice, last, ORPHAN_CHAIN_ROW)


def test_an_altered_chain_row_is_caught_once(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    alice = books["alice"]
    tamper.alter_chain(alice, 2)
    assert only_broken(verify(service)) == (alice, 2, HASH_MISMATCH)


def test_a_deleted_chain_row_is_caught(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    shop = books["shop"]
    tamper.delete_chain(shop, 1)
    assert only_broken(verify(service)) == (shop, 1, MISSING_CHAIN_ROW)


@pytest.mark.parametrize("cold_cache", [False, True])
def test_writes_after_a_lost_chain_row_report_it_once(
    service: Payledger, books: dict[str, UUID], tamper: Tamper, cold_cache: bool
) -> None:
    """A previous link found nowhere (also: a store written before the chain) restarts the
    chain from zero; the walk reports the missing row, not every link after it."""
    shop = books["shop"]
    last = versions(service, shop)[-1]
    tamper.delete_chain(shop, last)
    if cold_cache:
        service.app.recorder.chain.forget()
    Driver(service).pay("1.00", payer=books["alice"], payee=shop)
    assert versions(service, shop)[-1] == last + 1
    assert only_broken(verify(service)) == (shop, last, MISSING_CHAIN_ROW)


def test_every_tampering_is_counted_and_the_first_in_log_order_is_named_first(
    service: Payledger, books: dict[str, UUID], tamper: Tamper
) -> None:
    alice, shop = books["alice"], books["shop"]
    tamper.alter_state(shop, 2)
    tamper.alter_state(alice, 1)  # earlier in the log than shop's second event
    report = verify(service)
    assert report.broken_total == 2
    assert [(b.aggregate_id, b.version) for b in report.broken] == [(alice, 1), (shop, 2)]


def test_the_chain_holds_when_the_cache_is_cold_and_with_two_writers(database_url: str) -> None:
    """Previous links not in this process's cache are read from the chain table: after a restart,
    and when two instances write the same accounts, each one's save reads the other's links."""
    first = Payledger(make_settings(database_url, secret_key=SECRET))
    second = Payledger(make_settings(database_url, secret_key=SECRET), create_tables=False)
    try:
        a, b = Driver(first), Driver(second)
        payer, shop = a.open("payer"), a.open("shop", kind="merchant")
        a.deposit(payer, "500.00")
        first.app.recorder.chain.forget()  # as after a restart
        a.pay("1.00", payer=payer, payee=shop)

        def pay(driver: Driver) -> Callable[[], Any]:
            return lambda: driver.pay("1.00", payer=payer, payee=shop)

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda job: job(), [pay(a), pay(b)] * 20))
        assert all(r.status == "succeeded" for r in results)
        report = verify_chain(first.app, KEY)
        assert report.ok, report.broken
        assert versions(first, payer)[-1] > 40
    finally:
        first.close()
        second.close()


def open_account() -> Account:
    return Account.open(
        account_id=uuid.uuid4(), tenant="t", owner="o", currency="CNY",
        kind=AccountKind.CUSTOMER, overdraft_limit_minor=0,
        at=datetime(2026, 1, 1, tzinfo=UTC), actor="tester",
    )  # fmt: skip


@pytest.mark.parametrize("cold_cache", [False, True])
def test_a_conflicting_save_is_still_an_integrity_error(
    service: Payledger, cold_cache: bool
) -> None:
    """The events insert comes first, so a conflict is the events table's, as before; the failed
    save's links are not remembered, and the chain still verifies."""
    account = open_account()
    service.app.events.put(account.collect_events())
    account.credit(uuid.uuid4(), uuid.uuid4(), 5, at=datetime.now(UTC), actor="tester")
    credit = account.collect_events()
    service.app.events.put(credit)
    if cold_cache:
        service.app.recorder.chain.forget()
    with pytest.raises(IntegrityError):
        service.app.events.put(credit)
    account.credit(uuid.uuid4(), uuid.uuid4(), 7, at=datetime.now(UTC), actor="tester")
    service.app.events.put(account.collect_events())
    assert verify(service).ok


def test_the_key_reaches_the_recorder_through_the_environment(database_url: str) -> None:
    store = parse_database_url(database_url)
    store.prepare()
    keyed = PayledgerApp(env=store.eventsourcing_env(audit_key=KEY))
    assert keyed.recorder.chain.key == KEY
    assert store.eventsourcing_env(audit_key=KEY)[ENV_KEY] == KEY.hex()
    keyed.close()
    unkeyed = PayledgerApp(env=store.eventsourcing_env())
    assert unkeyed.recorder.chain.key == default_key() != KEY
    unkeyed.close()


def test_snapshots_are_not_chained_and_do_not_disturb_verification(service: Payledger) -> None:
    alice = Driver(service).open("alice")
    before = verify(service)
    assert service.app.snapshots is not None
    service.app.snapshots.put([Snapshot.take(service.app.repository.get(alice))])
    assert list(service.app.snapshots.get(alice))
    after = verify(service)
    assert after.ok and (after.events, after.head_hash) == (before.events, before.head_hash)


@pytest.mark.parametrize(
    "assignment",
    ["state = CAST(state AS TEXT) || 'x'", "topic = CAST(topic AS BLOB)", "state = NULL"],
)
def test_sqlite_values_stored_as_another_type_are_caught(sqlite_url: str, assignment: str) -> None:
    """SQLite keeps whatever type it is given: the walk reports such a row instead of failing."""
    with Payledger(make_settings(sqlite_url, secret_key=SECRET)) as svc:
        d = Driver(svc)
        alice = d.open("alice")
        d.deposit(alice, "5.00")
        d.deposit(alice, "5.00")
        where = "WHERE originator_id = ? AND originator_version = ?"
        sql = f"UPDATE stored_events SET {assignment} {where}"
        assert Tamper(sqlite_url).run(sql, 2, oid=alice)[0] == 1
        assert only_broken(verify(svc)) == (alice, 2, HASH_MISMATCH)


def test_the_precomputed_hmac_is_hmac_sha256() -> None:
    import hmac
    import os

    from application.audit import hmac_sha256

    for key in (b"", KEY, os.urandom(64), os.urandom(65), os.urandom(200)):
        message = os.urandom(300)
        assert hmac_sha256(key)(message) == hmac.digest(key, message, "sha256")


class Statements:
    """Counts what the PostgreSQL recorder sends: statements executed on cursors, and explicit
    transactions opened (each a ``BEGIN`` and a ``COMMIT`` round trip)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import psycopg

        self.executed: list[str] = []
        self.transactions = 0
        execute, transaction = psycopg.Cursor.execute, psycopg.Connection.transaction

        def counting_execute(curs: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            self.executed.append(str(query))
            return execute(curs, query, *args, **kwargs)

        def counting_transaction(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.transactions += 1
            return transaction(conn, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counting_execute)
        monkeypatch.setattr(psycopg.Connection, "transaction", counting_transaction)

    def reset(self) -> None:
        self.executed.clear()
        self.transactions = 0


def test_a_save_whose_previous_links_are_known_is_one_round_trip(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the previous links in the cache, a save is one statement on an autocommit
    connection (the save function); with a cold cache it is a transaction that reads the links
    under the lock. Both chain the same way."""
    with Payledger(make_settings(postgres_url, secret_key=SECRET)) as service:
        account = open_account()
        service.app.events.put(account.collect_events())
        statements = Statements(monkeypatch)

        account.credit(uuid.uuid4(), uuid.uuid4(), 5, at=datetime.now(UTC), actor="tester")
        service.app.events.put(account.collect_events())
        assert statements.transactions == 0
        assert len(statements.executed) == 1
        assert "payledger_events_save_v1" in statements.executed[0]

        statements.reset()
        service.app.recorder.chain.forget()  # as after a restart
        account.credit(uuid.uuid4(), uuid.uuid4(), 7, at=datetime.now(UTC), actor="tester")
        service.app.events.put(account.collect_events())
        assert statements.transactions == 1
        assert not any("save_v1" in sql for sql in statements.executed)
        assert any("chain_hash" in sql and "unnest" in sql for sql in statements.executed)

        statements.reset()  # the cold save's head is cached now: one round trip again
        account.credit(uuid.uuid4(), uuid.uuid4(), 9, at=datetime.now(UTC), actor="tester")
        service.app.events.put(account.collect_events())
        assert (statements.transactions, len(statements.executed)) == (0, 1)

        assert versions(service, account.id) == [1, 2, 3, 4]
        assert verify(service).ok
        tamper = Tamper(postgres_url)
        assert tamper.run(
            f"SELECT count(*) FROM {tamper.chain} WHERE originator_id = ? "
            "AND originator_version <= ?", 4, oid=account.id
        )[1] == [(4,)]  # fmt: skip


def test_a_conflict_in_the_one_round_trip_save_writes_nothing(postgres_url: str) -> None:
    """Another writer saved the next version first: this writer's cache still has the previous
    link, so its save takes the one-round-trip path, and must fail as a conflict (the library's
    IntegrityError, which the committer retries) with neither events nor chain rows written and
    nothing remembered."""
    first = Payledger(make_settings(postgres_url, secret_key=SECRET))
    second = Payledger(make_settings(postgres_url, secret_key=SECRET), create_tables=False)
    try:
        account = open_account()
        first.app.events.put(account.collect_events())
        rival = second.app.repository.get(account.id)
        rival.credit(uuid.uuid4(), uuid.uuid4(), 3, at=datetime.now(UTC), actor="rival")
        second.app.events.put(rival.collect_events())

        account.credit(uuid.uuid4(), uuid.uuid4(), 5, at=datetime.now(UTC), actor="tester")
        late = account.collect_events()
        with pytest.raises(IntegrityError):
            first.app.events.put(late)

        assert versions(first, account.id) == [1, 2]
        stored = first.app.repository.get(account.id)
        assert stored.balance_minor == 3
        stored.credit(uuid.uuid4(), uuid.uuid4(), 4, at=datetime.now(UTC), actor="tester")
        first.app.events.put(stored.collect_events())  # the rival's link is read, not guessed
        assert verify(first).ok
        assert first.app.repository.get(account.id).balance_minor == 7
    finally:
        first.close()
        second.close()
