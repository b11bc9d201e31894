"""Posting rules: which ledger accounts a payment moves money between, and applying an entry.

A payer or payee inside the ledger is its own account. One outside it (a card, a wallet, a bank
account) is represented by the channel's clearing account for the tenant and currency: a card
payment debits card clearing and credits the merchant; a payout debits the payer and credits the
bank channel's clearing account.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.accounts import Account, clearing_account_id
from domain.errors import LedgerInvariantBroken
from domain.ledger import JournalEntry, entry_id_for, transfer
from domain.payments import Payment


def ledger_account_of(party: Mapping[str, Any], tenant: str, channel: str, currency: str) -> UUID:
    """The ledger account standing for a payer or payee."""
    if party["type"] == "account":
        return UUID(party["account_id"])
    return clearing_account_id(tenant, channel, currency)


def debit_account_of(payment: Payment) -> UUID:
    return ledger_account_of(payment.payer, payment.tenant, payment.channel, payment.currency)


def credit_account_of(payment: Payment) -> UUID:
    return ledger_account_of(payment.payee, payment.tenant, payment.channel, payment.currency)


def settlement_entry(payment: Payment) -> JournalEntry:
    return transfer(
        entry_id_for(payment.id),
        payment.currency,
        debit_account=debit_account_of(payment),
        credit_account=credit_account_of(payment),
        amount_minor=payment.amount_minor,
    )


def post_entry(
    entry: JournalEntry,
    accounts: Mapping[UUID, Account],
    payment_id: UUID,
    *,
    at: datetime,
    actor: str,
) -> None:
    """Apply every leg of a balanced entry to its account (debits settle the payment's hold)."""
    for leg in entry.legs:
        account = accounts[leg.account_id]
        if account.currency != entry.currency:
            raise LedgerInvariantBroken(
                f"account {account.id} is {account.currency}, entry is {entry.currency}"
            )
    for leg in entry.legs:
        account = accounts[leg.account_id]
        if leg.is_debit:
            account.debit(payment_id, entry.entry_id, -leg.amount_minor, at=at, actor=actor)
        else:
            account.credit(payment_id, entry.entry_id, leg.amount_minor, at=at, actor=actor)
