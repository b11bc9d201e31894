"""A process that dies after saving a payment's intent loses nothing and pays nothing twice.

The crash is simulated by saving only step 1 (intent: requested, reserved, submitted) in one
service instance and closing it before the channel is called. A retry of the same request to
another instance, once the payment is older than the channel time-out, takes it over.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from application.commands import ANONYMOUS
from application.drafts import validate_payment
from application.service import Payledger
from domain.payments import payment_id_for
from tests.application.helpers import CARD_OK, IBAN_OK, Driver, fresh_key, payment_command
from tests.conftest import make_settings


class LaterClock:
    """The system clock, moved forward: the abandoned payment looks old to the new process."""

    def __init__(self, ahead: timedelta) -> None:
        self.ahead = ahead

    def now(self) -> datetime:
        return datetime.now(UTC) + self.ahead


def save_intent_then_die(database_url: str, cmd) -> None:  # type: ignore[no-untyped-def]
    with Payledger(make_settings(database_url)) as first:
        draft = validate_payment(cmd, ANONYMOUS, now=first.clock.now(), secret_key=first.secret_key)
        begun = asyncio.run(first.commit("payments", "decide_intent", draft))
        assert begun.next.value == "send"  # the intent is durable; the channel never called


def test_a_payout_left_submitted_is_finished_by_a_retry_exactly_once(database_url: str) -> None:
    with Payledger(make_settings(database_url)) as setup:
        d = Driver(setup)
        payer = d.open("payer", "EUR")
        d.deposit(payer, "100.00")
    cmd = payment_command("30.00", key=fresh_key("crash"), channel="bank_transfer",
                          currency="EUR", payer=payer, iban=IBAN_OK)  # fmt: skip

    save_intent_then_die(database_url, cmd)

    with Payledger(make_settings(database_url)) as after:
        d = Driver(after)
        payment_id = payment_id_for("default", "anonymous", cmd.idempotency_key)
        assert after.get_payment(payment_id).status == "processing"
        assert d.reserved(payer) == 3000  # the hold survived the crash
    later = make_settings(database_url)
    with Payledger(later, clock=LaterClock(timedelta(minutes=5))) as recovering:
        d = Driver(recovering)
        finished = d.submit(cmd)
        again = d.submit(cmd)
        assert finished.status == "succeeded"
        assert finished.replayed is True
        assert again.id == finished.id and again.status == "succeeded"
        assert d.balance(payer) == 7000  # debited once
        assert d.reserved(payer) == 0
        d.check_books()


def test_a_card_payment_left_submitted_credits_the_merchant_once(database_url: str) -> None:
    with Payledger(make_settings(database_url)) as setup:
        merchant = Driver(setup).open("shop", "CNY", kind="merchant")
    cmd = payment_command("12.00", key=fresh_key("crash"), channel="card",
                          payee=merchant, card_number=CARD_OK)  # fmt: skip

    save_intent_then_die(database_url, cmd)

    with Payledger(make_settings(database_url), clock=LaterClock(timedelta(minutes=5))) as svc:
        d = Driver(svc)
        results = [d.submit(cmd) for _ in range(3)]
        assert {r.status for r in results} == {"succeeded"}
        assert len({r.id for r in results}) == 1
        assert d.balance(merchant) == 1200
        d.check_books()
