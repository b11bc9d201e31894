"""Double entry: a journal entry is a set of legs that sum to zero in one currency.

Sign convention: a leg's ``amount_minor`` is what happens to the account holder's balance, so a
credit is positive and a debit negative. External and clearing accounts are the ledger's mirror of
money outside it and run negative; the sum of all balances per currency is therefore always zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain.errors import LedgerInvariantBroken
from domain.ids import name_id

ENTRY_NAMESPACE = UUID("6f1e0c52-5d38-4a59-9a38-2b0c7b6f1a01")


@dataclass(frozen=True, slots=True)
class Leg:
    account_id: UUID
    amount_minor: int

    @property
    def is_debit(self) -> bool:
        return self.amount_minor < 0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    entry_id: UUID
    currency: str
    legs: tuple[Leg, ...]

    def __post_init__(self) -> None:
        if len(self.legs) < 2:
            raise LedgerInvariantBroken(f"entry {self.entry_id} has fewer than two legs")
        if any(leg.amount_minor == 0 for leg in self.legs):
            raise LedgerInvariantBroken(f"entry {self.entry_id} has a zero leg")
        total = sum(leg.amount_minor for leg in self.legs)
        if total != 0:
            raise LedgerInvariantBroken(f"entry {self.entry_id} legs sum to {total}, not 0")

    def to_record(self) -> list[list[str | int]]:
        """The legs as plain data for an event: ``[[account_id, amount_minor], ...]``."""
        return [[str(leg.account_id), leg.amount_minor] for leg in self.legs]


def entry_id_for(payment_id: UUID, purpose: str = "settlement") -> UUID:
    """Deterministic entry id: one payment can be posted once per purpose, never twice."""
    return name_id(ENTRY_NAMESPACE, f"/payments/{payment_id}/{purpose}")


def transfer(
    entry_id: UUID, currency: str, debit_account: UUID, credit_account: UUID, amount_minor: int
) -> JournalEntry:
    """The simplest balanced entry: move ``amount_minor`` from one account to another."""
    if amount_minor <= 0:
        raise LedgerInvariantBroken(f"transfer amount must be positive, got {amount_minor}")
    return JournalEntry(
        entry_id=entry_id,
        currency=currency,
        legs=(Leg(debit_account, -amount_minor), Leg(credit_account, amount_minor)),
    )
