"""The committer in its own process (PAYLEDGER_COMMITTER=process) behaves like the thread."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from application.committer import CommitterStopped
from application.committer_process import RemoteCommitter
from application.service import Payledger
from domain.errors import IdempotencyKeyReused
from tests.application.helpers import (
    CARD_DECLINED,
    IBAN_AC04,
    Driver,
    fresh_key,
    payment_command,
)
from tests.conftest import make_settings
from tests.waiting import wait_until


@pytest.fixture
def remote(database_url: str) -> Iterator[Payledger]:
    with Payledger(make_settings(database_url, committer="process")) as svc:
        assert isinstance(svc.committer, RemoteCommitter)
        yield svc


def test_payments_of_every_kind_through_the_committer_process(remote: Payledger) -> None:
    d = Driver(remote)
    payer, shop = d.open("payer", "EUR"), d.open("shop", "EUR", kind="merchant")
    d.deposit(payer, "100.00")

    paid = d.pay("10.00", currency="EUR", payer=payer, payee=shop)
    declined = d.pay("5.00", currency="EUR", channel="card", payee=shop, card_number=CARD_DECLINED)
    closed = d.pay("7.00", currency="EUR", channel="bank_transfer", payer=payer, iban=IBAN_AC04)
    refused = d.pay("1000.00", currency="EUR", payer=payer, payee=shop)

    assert (paid.status, declined.failure_code, closed.failure_code, refused.failure_code) == (
        "succeeded", "card_declined", "AC04", "insufficient_funds",
    )  # fmt: skip
    assert (d.balance(payer), d.reserved(payer), d.balance(shop)) == (9000, 0, 1000)
    d.check_books()


def test_errors_cross_the_process_boundary_as_themselves(remote: Payledger) -> None:
    d = Driver(remote)
    payer, shop = d.open("payer", "CNY"), d.open("shop", "CNY")
    d.deposit(payer, "50.00")
    key = fresh_key()
    d.submit(payment_command("1.00", key=key, payer=payer, payee=shop))

    with pytest.raises(IdempotencyKeyReused) as raised:
        d.submit(payment_command("2.00", key=key, payer=payer, payee=shop))

    assert raised.value.code == "idempotency_key_reused"
    assert key in raised.value.message


def test_concurrent_identical_requests_make_one_payment(remote: Payledger) -> None:
    d = Driver(remote)
    payer, shop = d.open("payer", "CNY"), d.open("shop", "CNY")
    d.deposit(payer, "50.00")
    cmd = payment_command("3.00", key=fresh_key(), payer=payer, payee=shop)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: asyncio.run(remote.submit_payment(cmd)), range(20)))

    assert len({r.id for r in results}) == 1
    assert {r.status for r in results} == {"succeeded"}
    assert sum(not r.replayed for r in results) == 1
    assert d.balance(payer) == 4700


def test_closing_the_service_stops_the_committer_process(database_url: str) -> None:
    svc = Payledger(make_settings(database_url, committer="process"))
    committer = svc.committer
    assert isinstance(committer, RemoteCommitter) and committer.is_alive()

    svc.close()

    assert not committer.is_alive()


def test_a_killed_committer_process_is_replaced_and_nothing_is_saved_twice(
    remote: Payledger,
) -> None:
    committer = remote.committer
    assert isinstance(committer, RemoteCommitter)
    d = Driver(remote)
    payer, shop = d.open("payer", "CNY"), d.open("shop", "CNY", kind="merchant")
    d.deposit(payer, "100.00")
    key = fresh_key()
    before = d.pay("10.00", key=key, payer=payer, payee=shop)
    first = committer.pid
    assert first is not None

    os.kill(first, signal.SIGKILL)
    wait_until(lambda: committer.restarts == 1 and committer.is_alive(), 30)

    assert committer.restarts == 1 and committer.is_alive() and committer.pid != first
    again = d.pay("10.00", key=key, payer=payer, payee=shop)  # the client's retry
    assert (again.id, again.status, again.replayed) == (before.id, "succeeded", True)
    after = d.pay("2.00", payer=payer, payee=shop)
    assert after.status == "succeeded"
    assert (d.balance(payer), d.balance(shop)) == (10000 - 1200, 1200)
    d.check_books()


def test_commands_sent_to_a_dead_committer_fail_as_stopped_not_hang(database_url: str) -> None:
    svc = Payledger(make_settings(database_url, committer="process"))
    committer = svc.committer
    assert isinstance(committer, RemoteCommitter)
    d = Driver(svc)
    payer = d.open("payer", "CNY")
    os.kill(committer.pid, signal.SIGKILL)  # type: ignore[arg-type]
    committer._process.join(10)

    with pytest.raises(CommitterStopped):
        d.deposit(payer, "1.00")  # before the reader has started another

    svc.close()
    assert not committer.is_alive()


def test_an_answer_that_comes_after_its_caller_gave_up_does_not_stop_the_answers(
    remote: Payledger,
) -> None:
    """A command that times out leaves its future cancelled; its answer still arrives later.
    The reader must drop it and go on (a reader that died there would leave every later
    command waiting for ever)."""
    d = Driver(remote)
    payer, shop = d.open("payer", "CNY"), d.open("shop", "CNY")
    d.deposit(payer, "50.00")
    late = payment_command("1.00", key=fresh_key(), payer=payer, payee=shop)
    remote.settings.command_timeout_s = 1e-6
    try:
        with pytest.raises(TimeoutError):
            d.submit(late)
    finally:
        remote.settings.command_timeout_s = 30.0

    paid = d.submit(payment_command("2.00", key=fresh_key(), payer=payer, payee=shop))
    retried = d.submit(late)  # decided or not: the same key tells, and never pays twice

    assert (paid.status, retried.status) == ("succeeded", "succeeded")
    assert (d.balance(payer), d.balance(shop)) == (4700, 300)
    assert remote.committer.is_alive()
