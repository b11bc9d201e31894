"""Random sequences of ledger commands against a real ``Payledger``, checked against a model.

Hypothesis drives opens (with and without overdraft, two currencies), deposits, internal payments,
card payments to merchants, payouts (including AC04 rejections and time-outs that keep a hold),
closes, and replays of earlier idempotency keys. After every step:
- each currency's postings sum to zero (trial balance);
- no account without an overdraft is below zero, and none is below minus its overdraft;
- every account's balance and held amount equal a plain Python model.

Hypothesis prints the failing sequence of steps and, with ``print_blob=True``, a
``@reproduce_failure(...)`` line that replays it exactly; ``pytest --hypothesis-seed=N`` makes a
whole run repeatable. Nothing here uses ``random`` directly.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from application.service import Payledger
from application.store import parse_database_url
from domain.accounts import clearing_account_id, external_account_id
from tests.application.helpers import (
    CARD_DECLINED,
    CARD_OK,
    CARD_TIMEOUT,
    IBAN_AC04,
    IBAN_OK,
    IBAN_TIMEOUT,
    Driver,
    payment_command,
)
from tests.conftest import make_postgres_url, make_settings, require_postgres

CURRENCIES = ("CNY", "JPY")
EXPONENT = {"CNY": 2, "JPY": 0}
amounts = st.integers(min_value=1, max_value=5_000)


def as_decimal(amount_minor: int, currency: str) -> str:
    exp = EXPONENT[currency]
    if exp == 0:
        return str(amount_minor)
    return f"{amount_minor // 10**exp}.{amount_minor % 10**exp:0{exp}d}"


@dataclass
class Model:
    currency: str
    overdraft: int | None  # None: unlimited (system accounts)
    balance: int = 0
    reserved: int = 0
    closed: bool = False

    @property
    def available(self) -> int | None:
        return None if self.overdraft is None else self.balance - self.reserved + self.overdraft


class LedgerMachine(RuleBasedStateMachine):
    accounts = Bundle("accounts")

    def make_service(self) -> Payledger:
        self.tmpdir = tempfile.mkdtemp(prefix="payledger-prop-")
        url = f"sqlite:///{Path(self.tmpdir) / 'ledger.sqlite3'}"
        return Payledger(make_settings(url))

    def drop_store(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __init__(self) -> None:
        super().__init__()
        self.svc = self.make_service()
        self.d = Driver(self.svc)
        self.model: dict[UUID, Model] = {}
        self.sent: list[tuple[object, tuple[UUID, str, str | None]]] = []
        self.key_n = 0

    def teardown(self) -> None:
        self.svc.close()
        self.drop_store()

    # --- helpers ---------------------------------------------------------------------------

    def key(self) -> str:
        self.key_n += 1
        return f"prop-{self.key_n}"

    def system(self, account_id: UUID, currency: str) -> Model:
        return self.model.setdefault(account_id, Model(currency, None))

    def refusal(self, payer: UUID | None, payee: UUID | None, currency: str, amount: int):
        """The rules' verdict before any channel, as the service decides it."""
        for account_id in (payer, payee):
            if account_id is not None and self.model[account_id].closed:
                return "account_closed"
            if account_id is not None and self.model[account_id].currency != currency:
                return "currency_mismatch"
        if payer is not None and payer == payee:
            return "same_account"
        if payer is not None and self.model[payer].available < amount:
            return "insufficient_funds"
        return None

    def submit(self, cmd) -> object:
        result = self.d.submit(cmd)
        assert not result.replayed
        self.sent.append((cmd, (result.id, result.status, result.failure_code)))
        return result

    # --- rules -----------------------------------------------------------------------------

    @initialize(target=accounts)
    def first_account(self):
        account_id = self.d.open("first", "CNY")
        self.model[account_id] = Model("CNY", 0)
        return account_id

    @rule(
        target=accounts,
        currency=st.sampled_from(CURRENCIES),
        kind=st.sampled_from(["customer", "merchant", "funding"]),
        overdraft=st.sampled_from([0, 0, 0, 500, 2_000]),
    )
    def open_account(self, currency, kind, overdraft):
        account_id = self.d.open("o", currency, kind, as_decimal(overdraft, currency))
        self.model[account_id] = Model(currency, overdraft)
        return account_id

    @rule(account=accounts, amount=amounts)
    def deposit(self, account, amount):
        m = self.model[account]
        result = self.d.deposit(account, as_decimal(amount, m.currency), key=self.key())
        if m.closed:
            assert result.payment.failure_code == "account_closed"
            return
        assert result.payment.status == "succeeded", result.payment
        m.balance += amount
        self.system(external_account_id("default", m.currency), m.currency).balance -= amount

    @rule(payer=accounts, payee=accounts, amount=amounts, other_currency=st.booleans())
    def internal_payment(self, payer, payee, amount, other_currency):
        currency = self.model[payee if other_currency else payer].currency
        cmd = payment_command(
            as_decimal(amount, currency),
            key=self.key(),
            currency=currency,
            payer=payer,
            payee=payee,
        )
        result = self.submit(cmd)
        code = self.refusal(payer, payee, currency, amount)
        assert (result.status, result.failure_code) == (
            ("failed", code) if code else ("succeeded", None)
        ), result
        if code is None:
            self.model[payer].balance -= amount
            self.model[payee].balance += amount

    @rule(
        merchant=accounts,
        amount=amounts,
        number=st.sampled_from([CARD_OK] * 3 + [CARD_DECLINED, CARD_TIMEOUT]),
    )
    def card_payment(self, merchant, amount, number):
        currency = self.model[merchant].currency
        cmd = payment_command(
            as_decimal(amount, currency), key=self.key(), currency=currency, channel="card",
            card_number=number, payee=merchant,
        )  # fmt: skip
        result = self.submit(cmd)
        code = self.refusal(None, merchant, currency, amount)
        expected = {
            CARD_OK: ("succeeded", None),
            CARD_DECLINED: ("failed", "card_declined"),
            CARD_TIMEOUT: ("exception", "channel_timeout"),
        }[number]
        assert (result.status, result.failure_code) == (("failed", code) if code else expected)
        if code is None and number == CARD_OK:
            self.model[merchant].balance += amount
            self.system(
                clearing_account_id("default", "card", currency), currency
            ).balance -= amount

    @rule(
        payer=accounts,
        amount=amounts,
        iban=st.sampled_from([IBAN_OK, IBAN_OK, IBAN_AC04, IBAN_TIMEOUT]),
    )
    def payout(self, payer, amount, iban):
        m = self.model[payer]
        cmd = payment_command(
            as_decimal(amount, m.currency), key=self.key(), currency=m.currency,
            channel="bank_transfer", payer=payer, iban=iban,
        )  # fmt: skip
        result = self.submit(cmd)
        code = self.refusal(payer, None, m.currency, amount)
        expected = {
            IBAN_OK: ("succeeded", None),
            IBAN_AC04: ("failed", "AC04"),
            IBAN_TIMEOUT: ("exception", "channel_timeout"),
        }[iban]
        assert (result.status, result.failure_code) == (("failed", code) if code else expected)
        if code is not None:
            return
        if iban == IBAN_OK:
            m.balance -= amount
            bank = clearing_account_id("default", "bank_transfer", m.currency)
            self.system(bank, m.currency).balance += amount
        elif iban == IBAN_TIMEOUT:
            m.reserved += amount  # outcome unknown: the hold stays

    @rule(account=accounts)
    def close(self, account):
        m = self.model[account]
        if m.closed or m.balance != 0 or m.reserved != 0:
            return
        assert self.d.close(account).closed
        m.closed = True

    @rule(data=st.data())
    def replay_an_earlier_key(self, data):
        if not self.sent:
            return
        cmd, (payment_id, status, code) = data.draw(st.sampled_from(self.sent))
        before = self.d.position()
        result = self.d.submit(cmd)
        assert result.replayed
        assert (result.id, result.status, result.failure_code) == (payment_id, status, code)
        assert self.d.position() == before

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def books_balance_and_match_the_model(self):
        trial = self.svc.trial_balance()
        assert all(total == 0 for total in trial["totals"].values()), trial["totals"]
        for account_id, m in self.model.items():
            account = self.d.account(account_id)
            assert (account.balance_minor, account.reserved_minor) == (m.balance, m.reserved), (
                account_id, account, m,
            )  # fmt: skip
            assert trial["balances"].get(account_id, 0) == m.balance
            if m.overdraft is not None:
                assert account.available_minor == m.available
                assert account.balance_minor >= -m.overdraft
                assert m.available >= 0
                if m.overdraft == 0:
                    assert account.balance_minor >= 0


class PostgresLedgerMachine(LedgerMachine):
    def make_service(self) -> Payledger:
        self.url = make_postgres_url()
        return Payledger(make_settings(self.url))

    def drop_store(self) -> None:
        parse_database_url(self.url).drop()


COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}

TestLedgerOnSQLite = LedgerMachine.TestCase
TestLedgerOnSQLite.settings = settings(max_examples=30, stateful_step_count=25, **COMMON)


@pytest.mark.postgres
class TestLedgerOnPostgres(PostgresLedgerMachine.TestCase):
    settings = settings(max_examples=8, stateful_step_count=20, **COMMON)

    def setUp(self) -> None:
        require_postgres()
        super().setUp()
