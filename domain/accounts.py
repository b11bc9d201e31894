"""The ledger ``Account`` aggregate: the consistency boundary for balances that can refuse a debit.

An account tracks its posted balance and the funds reserved (held) for payments in flight.
``available = balance - reserved + overdraft_limit``; clearing and external accounts mirror money
outside the ledger, so they have no limit and never refuse.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.errors import AccountRuleViolation, IllegalTransition
from domain.ids import name_id

ACCOUNT_NAMESPACE = UUID("0b7c8f3e-8d7e-4d3a-9a51-6f2f1c9c4e10")


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    MERCHANT = "merchant"
    FUNDING = "funding"
    CLEARING = "clearing"
    EXTERNAL = "external"


# Accounts that stand for money outside the ledger: unlimited, opened by the system on first use.
SYSTEM_KINDS = frozenset({AccountKind.CLEARING, AccountKind.EXTERNAL})


@lru_cache(maxsize=1_024)  # a batch asks for the same one for each of its items
def clearing_account_id(tenant: str, channel: str, currency: str) -> UUID:
    """The tenant's clearing account for one channel and currency (money in transit there)."""
    return name_id(ACCOUNT_NAMESPACE, f"/tenants/{tenant}/clearing/{channel}/{currency}")


def iban_claim_id(tenant: str, iban: str) -> UUID:
    """One account per IBAN in a tenant: the claim's id is a function of the pair."""
    return name_id(ACCOUNT_NAMESPACE, f"/tenants/{tenant}/ibans/{iban}")


class IbanClaim(Aggregate):
    """Which account of a tenant stands for an IBAN (a pain.001's DbtrAcct finds it here)."""

    class Claimed(Aggregate.Created):
        actor: str
        tenant: str
        iban: str
        account_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.tenant, aggregate.iban = self.tenant, self.iban
            aggregate.account_id = self.account_id

    if TYPE_CHECKING:
        tenant: str
        iban: str
        account_id: str


def external_account_id(tenant: str, currency: str) -> UUID:
    """The tenant's external funding source: the other side of deposits."""
    return name_id(ACCOUNT_NAMESPACE, f"/tenants/{tenant}/external/{currency}")


class Account(Aggregate):
    """A ledger account. Events are past tense and carry who caused them."""

    class Opened(Aggregate.Created):
        actor: str
        tenant: str
        owner: str
        currency: str
        kind: str
        overdraft_limit_minor: int | None  # None: unlimited (system accounts)
        iban: str | None = None  # a bank account number it stands for (batch funding accounts)

        def apply(self, aggregate: Any) -> None:
            aggregate.iban = self.iban
            aggregate.tenant = self.tenant
            aggregate.owner = self.owner
            aggregate.currency = self.currency
            aggregate.kind = self.kind
            aggregate.overdraft_limit_minor = self.overdraft_limit_minor
            aggregate.balance_minor = 0
            aggregate.reserved_minor = 0
            aggregate.holds = {}  # payment id (str) -> amount held for it
            aggregate.closed = False

    class Event(Aggregate.Event):
        actor: str

    class FundsReserved(Event):
        payment_id: str
        amount_minor: int

        def apply(self, aggregate: Any) -> None:
            aggregate.holds[self.payment_id] = (
                aggregate.holds.get(self.payment_id, 0) + self.amount_minor
            )
            aggregate.reserved_minor += self.amount_minor

    class ReservationReleased(Event):
        payment_id: str
        amount_minor: int

        def apply(self, aggregate: Any) -> None:
            _reduce_hold(aggregate, self.payment_id, self.amount_minor)

    class Debited(Event):
        payment_id: str
        entry_id: str
        amount_minor: int
        from_hold: bool  # True when the debit settles this payment's reservation

        def apply(self, aggregate: Any) -> None:
            if self.from_hold:
                _reduce_hold(aggregate, self.payment_id, self.amount_minor)
            aggregate.balance_minor -= self.amount_minor

    class Credited(Event):
        payment_id: str
        entry_id: str
        amount_minor: int

        def apply(self, aggregate: Any) -> None:
            aggregate.balance_minor += self.amount_minor

    class Closed(Event):
        def apply(self, aggregate: Any) -> None:
            aggregate.closed = True

    # Attributes set by Opened.apply, declared for readers and type checkers.
    if TYPE_CHECKING:  # set by the Created event; annotations here would become __init__ args
        tenant: str
        owner: str
        currency: str
        kind: str
        overdraft_limit_minor: int | None
        iban: str | None
        balance_minor: int
        reserved_minor: int
        holds: dict[str, int]
        closed: bool

    @classmethod
    def open(
        cls,
        *,
        account_id: UUID,
        tenant: str,
        owner: str,
        currency: str,
        kind: AccountKind,
        overdraft_limit_minor: int,
        at: datetime,
        actor: str,
        iban: str | None = None,
    ) -> Account:
        if overdraft_limit_minor < 0:
            raise AccountRuleViolation("overdraft limit cannot be negative")
        limit: int | None = None if kind in SYSTEM_KINDS else overdraft_limit_minor
        return cls._create(
            cls.Opened,
            id=account_id,
            timestamp=at,
            actor=actor,
            tenant=tenant,
            owner=owner,
            currency=currency,
            kind=str(kind),
            overdraft_limit_minor=limit,
            **({"iban": iban} if iban else {}),
        )

    # --- queries -------------------------------------------------------------------------------

    @property
    def is_unlimited(self) -> bool:
        return self.overdraft_limit_minor is None

    @property
    def available_minor(self) -> int | None:
        """What can still be debited; None when the account never refuses a debit."""
        if self.overdraft_limit_minor is None:
            return None
        return self.balance_minor - self.reserved_minor + self.overdraft_limit_minor

    def has_sufficient_funds(self, amount_minor: int) -> bool:
        available = self.available_minor
        return available is None or available >= amount_minor

    def holds_for(self, payment_id: UUID) -> int:
        return self.holds.get(str(payment_id), 0)

    # --- commands (check first, then record) ---------------------------------------------------

    def reserve(self, payment_id: UUID, amount_minor: int, *, at: datetime, actor: str) -> None:
        self._check_open()
        if str(payment_id) in self.holds:
            raise IllegalTransition(f"payment {payment_id} already holds funds on {self.id}")
        if not self.has_sufficient_funds(amount_minor):
            raise AccountRuleViolation(f"account {self.id} cannot cover {amount_minor}")
        self.trigger_event(
            self.FundsReserved,
            timestamp=at,
            actor=actor,
            payment_id=str(payment_id),
            amount_minor=amount_minor,
        )

    def add_to_hold(self, hold_id: UUID, amount_minor: int, *, at: datetime, actor: str) -> None:
        """Reserve more under a hold (a batch without an upfront funds check, group by group)."""
        self._check_open()
        if amount_minor <= 0 or not self.has_sufficient_funds(amount_minor):
            raise AccountRuleViolation(f"account {self.id} cannot cover {amount_minor}")
        self.trigger_event(
            self.FundsReserved,
            timestamp=at,
            actor=actor,
            payment_id=str(hold_id),
            amount_minor=amount_minor,
        )

    def release(self, payment_id: UUID, *, at: datetime, actor: str) -> None:
        amount = self.holds.get(str(payment_id))
        if amount is None:
            raise IllegalTransition(f"payment {payment_id} holds nothing on {self.id}")
        self.trigger_event(
            self.ReservationReleased,
            timestamp=at,
            actor=actor,
            payment_id=str(payment_id),
            amount_minor=amount,
        )

    def release_part(self, hold_id: UUID, amount_minor: int, *, at: datetime, actor: str) -> None:
        """Give back part of a hold (a batch's: the items that failed or were not sent)."""
        self._check_within_hold(hold_id, amount_minor)
        self.trigger_event(
            self.ReservationReleased,
            timestamp=at,
            actor=actor,
            payment_id=str(hold_id),
            amount_minor=amount_minor,
        )

    def debit_from_hold(
        self, hold_id: UUID, entry_id: UUID, amount_minor: int, *, at: datetime, actor: str
    ) -> None:
        """Debit part of a hold: a batch reserves its total once and pays it group by group."""
        self._check_within_hold(hold_id, amount_minor)
        self.trigger_event(
            self.Debited,
            timestamp=at,
            actor=actor,
            payment_id=str(hold_id),
            entry_id=str(entry_id),
            amount_minor=amount_minor,
            from_hold=True,
        )

    def _check_within_hold(self, hold_id: UUID, amount_minor: int) -> None:
        held = self.holds.get(str(hold_id))
        if held is None or not 0 < amount_minor <= held:
            raise IllegalTransition(
                f"{amount_minor} is not within the hold of {hold_id} on {self.id} ({held})"
            )

    def debit(
        self, payment_id: UUID, entry_id: UUID, amount_minor: int, *, at: datetime, actor: str
    ) -> None:
        """Debit, settling this payment's hold if it has one, else checking funds now."""
        held = self.holds.get(str(payment_id))
        if held is not None and held != amount_minor:
            raise IllegalTransition(f"hold of {held} does not match debit of {amount_minor}")
        if held is None:
            self._check_open()
            if not self.has_sufficient_funds(amount_minor):
                raise AccountRuleViolation(f"account {self.id} cannot cover {amount_minor}")
        self.trigger_event(
            self.Debited,
            timestamp=at,
            actor=actor,
            payment_id=str(payment_id),
            entry_id=str(entry_id),
            amount_minor=amount_minor,
            from_hold=held is not None,
        )

    def credit(
        self, payment_id: UUID, entry_id: UUID, amount_minor: int, *, at: datetime, actor: str
    ) -> None:
        # A credit is never refused: once money has moved it must land somewhere, even on an
        # account closed while the payment was in flight.
        self.trigger_event(
            self.Credited,
            timestamp=at,
            actor=actor,
            payment_id=str(payment_id),
            entry_id=str(entry_id),
            amount_minor=amount_minor,
        )

    def close(self, *, at: datetime, actor: str) -> None:
        self._check_open()
        if self.kind in SYSTEM_KINDS:
            raise AccountRuleViolation("system accounts cannot be closed")
        if self.balance_minor != 0 or self.reserved_minor != 0:
            raise AccountRuleViolation("only an account with zero balance and no holds can close")
        self.trigger_event(self.Closed, timestamp=at, actor=actor)

    def _check_open(self) -> None:
        if self.closed:
            raise AccountRuleViolation(f"account {self.id} is closed")


def _reduce_hold(aggregate: Any, hold_id: str, amount_minor: int) -> None:
    """A hold goes down by what was paid or given back from it, and is gone at zero."""
    left = aggregate.holds[hold_id] - amount_minor
    if left:
        aggregate.holds[hold_id] = left
    else:
        del aggregate.holds[hold_id]
    aggregate.reserved_minor -= amount_minor
