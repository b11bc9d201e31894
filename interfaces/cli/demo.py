"""``payledger demo``: accounts, deposits and one payment of every outcome, through the same
handlers the API uses (sandbox triggers from ``application/channels/sandbox.py``)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any
from uuid import UUID, uuid4

from application.commands import (
    BankBeneficiary,
    CardMethod,
    MakeDeposit,
    OpenAccount,
    SubmitPayment,
    WalletMethod,
)
from application.results import PaymentResult
from application.service import Payledger
from interfaces.cli.principal import cli_principal

CURRENCY = "CNY"
# Sandbox triggers: see application/channels/sandbox.py and the README.
CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"
WALLET_DECLINED = "sandbox_declined"
IBAN_CLOSED_ACCOUNT = "DE83370400440532010004"  # ends in 0004: AC04, closed account


def _card(number: str) -> CardMethod:
    return CardMethod(number=number, exp_month=12, exp_year=date.today().year + 3, cvc="123")


async def run_demo(svc: Payledger) -> list[tuple[str, PaymentResult]]:
    """Open accounts, fund them, and make one payment of every outcome; return them in order."""
    run_id = uuid4().hex[:8]  # fresh keys: running the demo twice makes new payments

    async def open_(owner: str, kind: str = "customer") -> UUID:
        cmd = OpenAccount(owner=f"{owner}-{run_id}", currency=CURRENCY, kind=kind)
        return (await svc.accounts.open(cmd, cli_principal())).id

    alice, bob, shop = await asyncio.gather(open_("alice"), open_("bob"), open_("shop", "merchant"))
    await asyncio.gather(
        svc.accounts.deposit(MakeDeposit(alice, "1000.00", f"demo-{run_id}-d1"), cli_principal()),
        svc.accounts.deposit(MakeDeposit(bob, "5.00", f"demo-{run_id}-d2"), cli_principal()),
    )

    def payment(scenario: str, channel: str, amount: str, **parties: Any) -> SubmitPayment:
        return SubmitPayment(
            amount=amount, currency=CURRENCY, channel=channel,
            idempotency_key=f"demo-{run_id}-{scenario}", description=f"demo: {scenario}",
            **parties,
        )  # fmt: skip

    cases = {
        "internal transfer": payment(
            "internal transfer", "internal", "42.00", payer_account_id=alice, payee_account_id=shop
        ),
        "insufficient funds": payment(
            "insufficient funds", "internal", "100.00", payer_account_id=bob, payee_account_id=shop
        ),
        "card": payment(
            "card", "card", "19.99", payment_method=_card(CARD_OK), payee_account_id=shop
        ),
        "card declined": payment(
            "card declined",
            "card",
            "19.99",
            payment_method=_card(CARD_DECLINED),
            payee_account_id=shop,
        ),
        "card timeout": payment(
            "card timeout",
            "card",
            "19.99",
            payment_method=_card(CARD_TIMEOUT),
            payee_account_id=shop,
        ),
        "wallet declined": payment(
            "wallet declined",
            "alipay",
            "8.80",
            payment_method=WalletMethod("alipay", WALLET_DECLINED),
            payee_account_id=shop,
        ),
        "payout to closed account": payment(
            "payout to closed account",
            "bank_transfer",
            "25.00",
            payer_account_id=alice,
            beneficiary=BankBeneficiary(iban=IBAN_CLOSED_ACCOUNT, name="Erika Mustermann"),
        ),
    }
    # Concurrently, as clients would: the sandbox latencies overlap instead of adding up.
    results = await asyncio.gather(
        *(svc.submit_payment(c, cli_principal()) for c in cases.values())
    )
    return list(zip(cases, results, strict=True))
