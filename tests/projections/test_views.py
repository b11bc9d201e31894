"""The views against the aggregates they project, on SQLite and PostgreSQL: a mixed workload,
a page that fails half-way, two runners racing, the in-process follower, rebuild and verify."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from typing import Any
from uuid import UUID

import pytest

from application.commands import OpenAccount
from application.results import AccountResult, PaymentResult
from application.service import Payledger
from projections.accounts import AccountsProjection
from projections.db import ViewDB
from projections.queries import ReadModel
from projections.read_side import ReadSide
from projections.replay import gc_paused, rebuild, verify
from projections.runner import Follower, Leadership, ProjectionRunner
from tests.application.helpers import CARD_DECLINED, CARD_TIMEOUT, IBAN_AC04, IBAN_OK, Driver
from tests.conftest import make_settings

TENANT = "default"

FUNDING_IBAN = "DE02370400440532013111"


def workload(d: Driver) -> dict[str, Any]:
    """Accounts and payments of every outcome; returns what was made."""
    alice, bob = d.open("alice"), d.open("bob", overdraft="50.00")
    shop = d.open("shop", kind="merchant")
    d.deposit(alice, "300.00")
    payments = [d.pay("12.34", payer=alice, payee=shop) for _ in range(4)]
    payments.append(d.pay("40.00", payer=bob, payee=shop))  # into the overdraft
    payments.append(d.pay("500.00", payer=alice, payee=bob))  # insufficient funds
    payments.append(d.pay("9.99", channel="card", card_number="4242424242424242", payee=shop))
    payments.append(d.pay("9.99", channel="card", card_number=CARD_DECLINED, payee=shop))
    payments.append(d.pay("9.99", channel="card", card_number=CARD_TIMEOUT, payee=shop))
    payments.append(d.pay("5.00", channel="bank_transfer", payer=alice, iban=IBAN_OK))
    payments.append(d.pay("5.00", channel="bank_transfer", payer=alice, iban=IBAN_AC04))
    closed = d.open("carol")
    d.close(closed)
    # A funding account that stands for a bank account: its IBAN is in the view too.
    opened = OpenAccount(owner="payroll", currency="EUR", kind="funding", iban=FUNDING_IBAN)
    payroll = asyncio.run(d.svc.accounts.open(opened, d.principal)).id
    return {"accounts": [alice, bob, shop, closed, payroll], "payments": payments}


def all_account_ids(svc: Payledger) -> set[UUID]:
    return set(svc.trial_balance()["balances"])


def same_account(view: AccountResult | None, aggregate: AccountResult) -> None:
    assert view is not None
    assert view == AccountResult(**{**vars(aggregate), "replayed": False})


def same_payment(view: PaymentResult | None, aggregate: PaymentResult) -> None:
    assert view is not None
    assert view == PaymentResult(**{**vars(aggregate), "replayed": False})


def assert_views_match_aggregates(svc: Payledger, read: ReadSide, made: dict[str, Any]) -> None:
    for account_id in set(made["accounts"]) | all_account_ids(svc):
        aggregate = svc.get_account(account_id)
        same_account(read.model.account(TENANT, account_id), aggregate)
        page = read.model.entries(TENANT, account_id, limit=500)
        assert page is not None
        amounts = [e["amount_minor"] for e in page.items]
        assert sum(amounts) == aggregate.balance_minor
        running = 0
        for line in page.items:
            running += line["amount_minor"]
            assert line["balance_after_minor"] == running
    for payment in made["payments"]:
        same_payment(read.model.payment(TENANT, payment.id), svc.get_payment(payment.id))


def test_views_equal_the_aggregates_after_a_mixed_workload(
    service: Payledger, driver: Driver, read: ReadSide
) -> None:
    made = workload(driver)

    processed = read.catch_up()

    assert processed == driver.position()
    assert read.lag() == {"payments": 0, "accounts": 0}
    assert_views_match_aggregates(service, read, made)
    statuses = Counter(p.status for p in made["payments"])
    end = max(p.created_at for p in made["payments"])
    metrics = read.model.metrics(TENANT, made["payments"][0].created_at.replace(second=0,
                                 microsecond=0), end.replace(year=end.year + 1))  # fmt: skip
    totals = metrics["totals"]
    assert {k: totals[k] for k in statuses} == dict(statuses)
    assert totals["processing"] == 0


def test_a_page_that_fails_half_way_commits_nothing_and_the_retry_counts_once(
    service: Payledger, driver: Driver, read: ReadSide, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = workload(driver)
    runner = ProjectionRunner(service.app, read.runner.db, page_size=7)
    original = AccountsProjection.process_page
    calls = {"n": 0}

    def crash_on_third(self: AccountsProjection, events: list[Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed mid-page")
        original(self, events)

    monkeypatch.setattr(AccountsProjection, "process_page", crash_on_third)
    with pytest.raises(RuntimeError, match="killed mid-page"):
        runner.catch_up()
    committed = ProjectionRunner(service.app, read.runner.db).read_positions()
    # Two pages of seven committed, for every projection alike: the third left no trace.
    assert committed == {
        "payments": 14,
        "accounts": 14,
        "webhooks": 14,
        "batches": 14,
        "reconciliations": 14,
    }

    monkeypatch.setattr(AccountsProjection, "process_page", original)
    resumed = ProjectionRunner(service.app, read.runner.db, page_size=7)
    resumed.catch_up()

    assert_views_match_aggregates(service, read, made)
    assert verify(service.app, service.settings.store).ok


def test_two_runners_on_one_database_never_apply_a_page_twice(
    service: Payledger, driver: Driver, read: ReadSide
) -> None:
    made = workload(driver)
    store = service.settings.store
    db_a, db_b = ViewDB(store), ViewDB(store)
    try:
        a = ProjectionRunner(service.app, db_a, page_size=5)
        b = ProjectionRunner(service.app, db_b, page_size=5)
        a.read_positions(), b.read_positions()
        a.run_once()  # b still believes both views are at 0
        b.run_once()  # must notice and apply nothing
        assert b.read_positions() == a.positions

        def drain(runner: ProjectionRunner) -> None:
            for _ in range(200):
                runner.run_once()

        threads = [threading.Thread(target=drain, args=(r,)) for r in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        db_a.close(), db_b.close()

    assert_views_match_aggregates(service, read, made)
    assert verify(service.app, store).ok


def test_the_follower_keeps_the_views_current(service: Payledger, driver: Driver) -> None:
    side = ReadSide(service.app, service.settings.store, follow=True)
    try:
        made = workload(driver)
        started = time.monotonic()
        assert side.model.wait_for("payments", driver.position(), timeout_s=10)
        assert side.model.wait_for("accounts", driver.position(), timeout_s=10)
        assert time.monotonic() - started < 10
        assert side.follower is not None
        while not side.follower.is_leader and time.monotonic() - started < 10:
            time.sleep(0.01)
        assert side.follower.is_leader
        assert_views_match_aggregates(service, side, made)
    finally:
        side.close()


def test_a_reader_waiting_for_a_position_cuts_the_gathering_short(
    service: Payledger, driver: Driver
) -> None:
    """After a page that was not full the follower lets events gather (``gather_s``); a
    reader that waits for a position must not wait for that: ``wait_for`` hurries it."""
    runner = ProjectionRunner(service.app, ViewDB(service.settings.store))
    runner.create_tables()
    follower = Follower(runner, gather_s=60.0).start()
    try:
        account = driver.open("gatherer", "CNY", "customer")
        deadline = time.monotonic() + 10
        while runner.position < driver.position() and time.monotonic() < deadline:
            time.sleep(0.01)  # its first page: it now gathers for a minute
        assert runner.position == driver.position()
        driver.deposit(account, "5.00")
        time.sleep(0.3)
        assert runner.position < driver.position()  # gathering: the deposit is not in yet
        model = ReadModel(ViewDB(service.settings.store), local=follower)
        started = time.monotonic()
        try:
            assert model.wait_for("accounts", driver.position(), timeout_s=10)
        finally:
            model.db.close()
        assert time.monotonic() - started < 10  # not the minute of gathering
        assert runner.position == driver.position()
    finally:
        follower.stop()
        runner.db.close()


def test_only_one_follower_leads(service: Payledger) -> None:
    store = service.settings.store
    db_a, db_b = ViewDB(store), ViewDB(store)
    first, second = Leadership(db_a), Leadership(db_b)
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        first.release()
        assert second.try_acquire()
    finally:
        first.release(), second.release()
        db_a.close(), db_b.close()


def test_a_standby_follower_takes_over_when_the_leader_stops(
    service: Payledger, driver: Driver
) -> None:
    store = service.settings.store
    leader = ReadSide(service.app, store, follow=True)
    assert leader.follower is not None
    deadline = time.monotonic() + 10
    while not leader.follower.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)  # the leader takes the lock first; the standby starts after it
    standby_runner = ProjectionRunner(service.app, ViewDB(store))
    standby = Follower(standby_runner, standby_s=0.05).start()
    try:
        time.sleep(0.2)
        assert leader.follower.is_leader
        assert not standby.is_leader
        leader.close()
        made = workload(driver)
        deadline = time.monotonic() + 10
        while standby_runner.position < driver.position() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert standby.is_leader
        assert standby_runner.position == driver.position()
    finally:
        standby.stop()
        standby_runner.db.close()
    check = ReadSide(service.app, store)
    try:
        assert_views_match_aggregates(service, check, made)
    finally:
        check.close()


def test_rebuild_swaps_in_equal_views_and_verify_catches_a_tampered_view(
    service: Payledger, driver: Driver, read: ReadSide
) -> None:
    made = workload(driver)
    read.catch_up()
    store = service.settings.store

    report = rebuild(service.app, store)

    assert report.events == driver.position() and report.position == driver.position()
    assert_views_match_aggregates(service, read, made)
    assert verify(service.app, store).ok
    shop = made["accounts"][2]
    read.runner.db.execute(
        "UPDATE view_accounts SET balance_minor = balance_minor + 1 WHERE account_id = ?",
        (str(shop),),
    )
    tampered = verify(service.app, store)
    assert not tampered.ok
    assert str(shop) in tampered.differences[0]
    assert "balance_minor" in tampered.differences[0]
    rebuild(service.app, store, ["accounts"])
    assert verify(service.app, store).ok


def test_a_rebuild_pauses_the_cyclic_collector_and_restores_it(
    service: Payledger, driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload(driver)
    seen: list[bool] = []
    catch_up = ProjectionRunner.catch_up

    def watched(self: ProjectionRunner, *args: Any, **kwargs: Any) -> int:
        seen.append(gc.isenabled())
        return catch_up(self, *args, **kwargs)

    monkeypatch.setattr(ProjectionRunner, "catch_up", watched)
    assert gc.isenabled()
    report = rebuild(service.app, service.settings.store)
    assert seen == [False] and report.events == driver.position()
    assert gc.isenabled()
    gc.disable()
    try:  # a caller that had it off keeps it off
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_accounts_view_from_before_the_iban_gets_its_column(database_url: str) -> None:
    settings = make_settings(database_url)
    settings.store.prepare()
    old = ViewDB(settings.store)
    definition = AccountsProjection.TABLES["accounts"].replace(", iban TEXT", "")
    assert definition != AccountsProjection.TABLES["accounts"]
    old.execute(f"CREATE TABLE view_accounts ({definition})")
    old.close()
    with Payledger(settings) as svc:
        side = ReadSide(svc.app, svc.settings.store)
        try:
            opened = OpenAccount(owner="payroll", currency="EUR", kind="funding", iban=FUNDING_IBAN)
            account = asyncio.run(svc.accounts.open(opened, Driver(svc).principal))
            side.catch_up()
            view = side.model.account(TENANT, account.id)
            assert view is not None and view.iban == FUNDING_IBAN
            assert verify(svc.app, svc.settings.store, ["accounts"]).ok
        finally:
            side.close()
