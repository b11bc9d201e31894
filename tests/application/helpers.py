"""A small synchronous driver over ``Payledger`` for tests: open, deposit, pay, and check books."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from application.commands import (
    ANONYMOUS,
    BankBeneficiary,
    CardMethod,
    CloseAccount,
    MakeDeposit,
    OpenAccount,
    Principal,
    SubmitPayment,
    WalletMethod,
)
from application.results import AccountResult, DepositResult, PaymentResult
from application.service import Payledger

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_NO_FUNDS = "4000000000009995"
CARD_TIMEOUT = "4000000000000119"
IBAN_OK = "DE89370400440532013000"
IBAN_AC04 = "DE83370400440532010004"  # valid IBAN, account number ending 0004: closed account
IBAN_AC01 = "DE67370400440532010001"  # ending 0001: incorrect account number
IBAN_TIMEOUT = "DE82370400440532010119"  # ending 0119: the bank does not answer

_keys = itertools.count(1)


def fresh_key(prefix: str = "k") -> str:
    return f"{prefix}-{next(_keys)}"


def card(number: str = CARD_OK) -> CardMethod:
    return CardMethod(number=number, exp_month=12, exp_year=2099, cvc="123")


def payment_command(
    amount: str,
    *,
    key: str | None = None,
    channel: str = "internal",
    currency: str = "CNY",
    payer: UUID | None = None,
    payee: UUID | None = None,
    card_number: str | None = None,
    wallet_payer: str | None = None,
    iban: str | None = None,
    description: str | None = None,
) -> SubmitPayment:
    method: Any = None
    if card_number is not None:
        method = card(card_number)
    elif wallet_payer is not None:
        method = WalletMethod(type=channel, payer_id=wallet_payer)
    return SubmitPayment(
        amount=amount,
        currency=currency,
        channel=channel,
        idempotency_key=fresh_key("pay") if key is None else key,
        payer_account_id=payer,
        payment_method=method,
        payee_account_id=payee,
        beneficiary=None if iban is None else BankBeneficiary(iban=iban, name="Beneficiary"),
        description=description,
    )


class Driver:
    """Runs each service command to completion with ``asyncio.run`` (one loop per call)."""

    def __init__(self, svc: Payledger, principal: Principal = ANONYMOUS) -> None:
        self.svc = svc
        self.principal = principal

    def open(
        self, owner: str = "alice", currency: str = "CNY", kind: str = "customer", overdraft="0"
    ) -> UUID:
        cmd = OpenAccount(owner=owner, currency=currency, kind=kind, overdraft_limit=overdraft)
        return asyncio.run(self.svc.accounts.open(cmd, self.principal)).id

    def deposit(self, account_id: UUID, amount: str, key: str | None = None) -> DepositResult:
        cmd = MakeDeposit(account_id, amount, key or fresh_key("dep"))
        return asyncio.run(self.svc.accounts.deposit(cmd, self.principal))

    def close(self, account_id: UUID) -> AccountResult:
        return asyncio.run(self.svc.accounts.close(CloseAccount(account_id), self.principal))

    def submit(self, cmd: SubmitPayment) -> PaymentResult:
        return asyncio.run(self.svc.submit_payment(cmd, self.principal))

    def pay(self, amount: str, **kwargs: Any) -> PaymentResult:
        return self.submit(payment_command(amount, **kwargs))

    def account(self, account_id: UUID) -> AccountResult:
        return self.svc.get_account(account_id, self.principal)

    def balance(self, account_id: UUID) -> int:
        return self.account(account_id).balance_minor

    def reserved(self, account_id: UUID) -> int:
        return self.account(account_id).reserved_minor

    def position(self) -> int:
        return self.svc.app.recorder.max_notification_id() or 0

    def check_books(self) -> dict[UUID, int]:
        """Every currency's postings sum to zero, and each account's balance is its postings."""
        trial = self.svc.trial_balance()
        assert all(total == 0 for total in trial["totals"].values()), trial["totals"]
        for account_id, posted in trial["balances"].items():  # every tenant's accounts
            assert self.svc.app.repository.get(account_id).balance_minor == posted
        return trial["balances"]


def stored_notifications(svc: Payledger, page: int = 500) -> Iterator[Any]:
    start = 0
    while True:
        batch = svc.app.recorder.select_notifications(
            start=start, limit=page, inclusive_of_start=False
        )
        yield from batch
        if len(batch) < page:
            return
        start = batch[-1].id
