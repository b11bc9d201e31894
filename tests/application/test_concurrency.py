"""Concurrency on SQLite and PostgreSQL: duplicates, hot payees, hot payers, two processes.

Each thread runs its own event loop (``asyncio.run``), as separate server workers would; they all
meet in the committer, or, for two ``Payledger`` instances, in the database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any, TypeVar
from uuid import UUID

import pytest

from application.service import Payledger
from domain.accounts import Account, clearing_account_id
from domain.payments import Payment
from tests.application.helpers import (
    CARD_OK,
    IBAN_OK,
    Driver,
    fresh_key,
    payment_command,
    stored_notifications,
)
from tests.conftest import make_settings

T = TypeVar("T")
BANK_CLEARING = clearing_account_id("default", "bank_transfer", "CNY")


def run_concurrently(jobs: list[Callable[[], T]], workers: int) -> list[T | BaseException]:
    """Start every job at once (a barrier per wave of ``workers``); return results or errors."""
    barrier = Barrier(min(workers, len(jobs)))

    def call(job: Callable[[], T], wait: bool) -> T | BaseException:
        if wait:
            barrier.wait(timeout=30)
        try:
            return job()
        except Exception as e:
            return e

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(call, job, i < workers) for i, job in enumerate(jobs)]
        return [f.result(timeout=120) for f in futures]


def events_of(svc: Payledger, aggregate_id: UUID) -> list[Any]:
    return list(svc.app.repository.event_store.get(aggregate_id))


def assert_never_negative(svc: Payledger, account_id: UUID) -> None:
    """Replays the account's history: its balance and available funds never dipped below zero."""
    balance = reserved = 0
    for event in events_of(svc, account_id):
        if isinstance(event, Account.Credited):
            balance += event.amount_minor
        elif isinstance(event, Account.Debited):
            balance -= event.amount_minor
            reserved -= event.amount_minor if event.from_hold else 0
        elif isinstance(event, Account.FundsReserved):
            reserved += event.amount_minor
        elif isinstance(event, Account.ReservationReleased):
            reserved -= event.amount_minor
        assert balance >= 0 and balance - reserved >= 0, (event, balance, reserved)


@pytest.mark.parametrize("channel", ["internal", "bank_transfer", "card"])
def test_fifty_identical_submissions_make_one_payment(service, channel):
    d = Driver(service)
    payer, shop = d.open("payer"), d.open("shop", kind="merchant")
    d.deposit(payer, "100.00")
    args: dict[str, Any] = {
        "internal": {"payer": payer, "payee": shop},
        "bank_transfer": {"channel": "bank_transfer", "payer": payer, "iban": IBAN_OK},
        "card": {"channel": "card", "card_number": CARD_OK, "payee": shop},
    }[channel]
    key = fresh_key("same")
    cmd = payment_command("12.00", key=key, **args)
    results = run_concurrently([lambda: d.submit(cmd)] * 50, workers=50)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert len({r.id for r in results}) == 1
    assert {r.status for r in results} == {"succeeded"}
    assert sum(not r.replayed for r in results) == 1
    payment_id = results[0].id
    kinds = [type(e).__name__ for e in events_of(service, payment_id)]
    assert kinds == ["Requested", "Reserved", "Submitted", "Succeeded"]
    # Exactly one payment in the whole store, and one posting per side.
    created = [n for n in stored_notifications(service) if n.topic.endswith("Payment.Requested")]
    assert len(created) == 2  # the deposit and this payment
    if channel == "card":
        assert d.balance(shop) == 1_200
    else:
        assert (d.balance(payer), d.reserved(payer)) == (8_800, 0)
        debits = [e for e in events_of(service, payer) if isinstance(e, Account.Debited)]
        assert len(debits) == 1
        credited = BANK_CLEARING if channel == "bank_transfer" else shop
        assert d.balance(credited) == 1_200
    d.check_books()


def test_many_payers_to_one_hot_merchant(service):
    d = Driver(service)
    shop = d.open("hot-shop", kind="merchant")
    payers = [d.open(f"payer-{i}") for i in range(40)]
    run_concurrently([lambda p=p: d.deposit(p, "50.00") for p in payers], workers=40)
    jobs: list[Callable[[], Any]] = []
    expected = 0
    for i in range(200):
        amount_minor = 100 + i  # distinct amounts catch a lost or doubled credit
        expected += amount_minor
        amount = f"{amount_minor // 100}.{amount_minor % 100:02d}"
        if i % 4 == 3:
            cmd = payment_command(amount, channel="card", card_number=CARD_OK, payee=shop)
        else:
            cmd = payment_command(amount, payer=payers[i % len(payers)], payee=shop)
        jobs.append(lambda cmd=cmd: d.submit(cmd))
    results = run_concurrently(jobs, workers=50)

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert Counter(r.status for r in results) == {"succeeded": 200}
    assert len({r.id for r in results}) == 200
    assert d.balance(shop) == expected
    credits = [e for e in events_of(service, shop) if isinstance(e, Account.Credited)]
    assert len(credits) == 200
    balances = d.check_books()
    assert sum(balances[p] for p in payers) == 40 * 5_000 - sum(
        r.amount_minor for r in results if r.channel == "internal"
    )


def test_many_payments_from_one_funding_account_with_limited_funds(service):
    d = Driver(service)
    funding = d.open("treasury", kind="funding")
    shop = d.open("shop", kind="merchant")
    funds_minor, amount_minor = 10_000, 300
    d.deposit(funding, "100.00")
    jobs = []
    for i in range(200):
        if i % 2:
            cmd = payment_command("3.00", payer=funding, payee=shop)
        else:
            cmd = payment_command("3.00", channel="bank_transfer", payer=funding, iban=IBAN_OK)
        jobs.append(lambda cmd=cmd: d.submit(cmd))
    results = run_concurrently(jobs, workers=50)

    assert [r for r in results if isinstance(r, BaseException)] == []
    outcome = Counter((r.status, r.failure_code) for r in results)
    succeeded = funds_minor // amount_minor
    assert outcome == {
        ("succeeded", None): succeeded,
        ("failed", "insufficient_funds"): 200 - succeeded,
    }
    account = d.account(funding)
    assert account.balance_minor == funds_minor - succeeded * amount_minor
    assert account.reserved_minor == 0
    assert account.balance_minor >= 0
    assert_never_negative(service, funding)
    paid_out = sum(
        r.amount_minor for r in results if r.status == "succeeded" and r.channel != "internal"
    )
    assert d.balance(shop) + paid_out == succeeded * amount_minor
    d.check_books()


def test_two_instances_on_one_database_hammer_the_same_accounts(database_url):
    """Two processes' worth of committers and caches: every save races the other instance, so
    groups fail on conflicts and the committer's fallback must still land every payment once."""
    N = 240  # payments, a quarter each: hot payer x2, limited payer, card
    first = Payledger(make_settings(database_url))
    second = Payledger(make_settings(database_url), create_tables=False)
    try:
        a, b = Driver(first), Driver(second)
        hot_payer, hot_shop = a.open("hot-payer"), a.open("hot-shop", kind="merchant")
        limited = a.open("limited")
        a.deposit(hot_payer, "1000.00")
        b.deposit(limited, "10.00")
        jobs: list[Callable[[], Any]] = []
        for i in range(N):
            driver = a if i % 2 else b
            if i % 4 < 2:
                cmd = payment_command("1.00", payer=hot_payer, payee=hot_shop)
            elif i % 4 == 2:
                cmd = payment_command("1.00", payer=limited, payee=hot_shop)
            else:
                cmd = payment_command("1.00", channel="card", card_number=CARD_OK, payee=hot_shop)
            jobs.append(lambda driver=driver, cmd=cmd: driver.submit(cmd))
        # A duplicate key sent to both instances at once: still one payment.
        dup = payment_command("5.00", key=fresh_key("both"), payer=hot_payer, payee=hot_shop)
        jobs += [lambda: a.submit(dup), lambda: b.submit(dup)] * 5
        results = run_concurrently(jobs, workers=40)

        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], Counter(type(e).__name__ for e in errors)
        main, dups = results[:N], results[N:]
        assert len({r.id for r in dups}) == 1 and {r.status for r in dups} == {"succeeded"}
        from_limited = [r for i, r in enumerate(main) if i % 4 == 2]
        assert Counter(r.status for r in from_limited) == {"succeeded": 10, "failed": N // 4 - 10}
        assert all(r.status == "succeeded" for i, r in enumerate(main) if i % 4 != 2)
        for driver in (a, b):  # both instances read the same truth
            assert driver.balance(hot_payer) == 100_000 - (N // 2) * 100 - 500
            assert driver.balance(hot_shop) == (N // 2 + 10 + N // 4) * 100 + 500
            assert driver.balance(limited) == 0
        assert_never_negative(first, limited)
        payment_ids = {
            n.originator_id
            for n in stored_notifications(first)
            if n.topic.endswith("Payment.Requested")
        }
        assert len(payment_ids) == 2 + N + 1
        assert all(
            first.load_payment(pid).state in ("succeeded", "rejected") for pid in payment_ids
        )
        assert isinstance(first.load_payment(dups[0].id), Payment)
        a.check_books()
        stats = [first.committer.stats, second.committer.stats]
        print("committer stats", stats)
    finally:
        second.close()
        first.close()


def test_concurrent_opens_and_deposits_in_one_loop(service):
    """Many coroutines on one event loop (how one server worker runs): all land once."""
    d = Driver(service)
    account = d.open("bob")

    async def burst():
        from application.commands import MakeDeposit

        tasks = [
            service.accounts.deposit(MakeDeposit(account, "1.00", f"burst-{i % 25}"), d.principal)
            for i in range(100)
        ]
        return await asyncio.gather(*tasks)

    results = asyncio.run(burst())
    assert len({r.payment.id for r in results}) == 25
    assert d.balance(account) == 2_500
    d.check_books()
