"""Reading and opening the ledger accounts a command needs, inside a unit of work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from application.drafts import PaymentDraft
from application.unit_of_work import UnitOfWork
from domain.accounts import (
    SYSTEM_KINDS,
    Account,
    AccountKind,
    clearing_account_id,
    external_account_id,
)
from domain.ledger import JournalEntry
from domain.payments import Payment

SYSTEM_ACTOR = "system"


def check_party(
    uow: UnitOfWork,
    draft: PaymentDraft,
    party: Mapping[str, Any],
    role: str,
    *,
    system_ok: bool,
) -> tuple[Account | None, tuple[str, str] | None]:
    """The ledger account of a payer or payee and, if the rules refuse it, (code, message)."""
    if party["type"] != "account":
        return None, None
    account_id = UUID(party["account_id"])
    if system_ok:
        ensure_system_account(uow, account_id, draft.tenant, draft.currency, draft.channel)
    account = uow.get(account_id, Account)
    if account is None or account.tenant != draft.tenant:
        return None, ("account_not_found", f"{role} account {account_id} does not exist")
    if account.closed:
        return None, ("account_closed", f"{role} account {account_id} is closed")
    if account.currency != draft.currency:
        message = (
            f"{role} account {account_id} holds {account.currency}, payment is {draft.currency}"
        )
        return None, ("currency_mismatch", message)
    if account.kind in SYSTEM_KINDS and not system_ok:
        return None, ("account_not_payable", f"{role} account {account_id} is a system account")
    return account, None


def ensure_system_account(
    uow: UnitOfWork, account_id: UUID, tenant: str, currency: str, channel: str
) -> Account | None:
    """Open the tenant's clearing or external account on first use; None if the id is neither."""
    found = uow.get(account_id, Account)
    if found is not None:
        return found
    if account_id == external_account_id(tenant, currency):
        kind, owner = AccountKind.EXTERNAL, f"external funding ({currency})"
    elif account_id == clearing_account_id(tenant, channel, currency):
        kind, owner = AccountKind.CLEARING, f"{channel} clearing ({currency})"
    else:
        return None
    account = Account.open(
        account_id=account_id,
        tenant=tenant,
        owner=owner,
        currency=currency,
        kind=kind,
        overdraft_limit_minor=0,
        at=uow.now,
        actor=SYSTEM_ACTOR,
    )
    uow.add(account)
    return account


def ensure_entry_accounts(
    uow: UnitOfWork, payment: Payment, entry: JournalEntry
) -> dict[UUID, Account]:
    accounts: dict[UUID, Account] = {}
    for leg in entry.legs:
        account = uow.get(leg.account_id, Account) or ensure_system_account(
            uow, leg.account_id, payment.tenant, payment.currency, payment.channel
        )
        if account is None:
            raise LookupError(f"account {leg.account_id} of entry {entry.entry_id} is missing")
        accounts[leg.account_id] = account
    return accounts
