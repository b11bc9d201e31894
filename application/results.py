"""Results handed back to interfaces: immutable snapshots of aggregates, in minor units."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.accounts import Account
from domain.payments import Payment, PaymentState

# The outcome a client sees: in-flight states are "processing", a rules refusal is "failed".
STATUS_OF_STATE = {
    PaymentState.REQUESTED: "processing",
    PaymentState.RESERVED: "processing",
    PaymentState.SUBMITTED: "processing",
    PaymentState.REJECTED: "failed",
    PaymentState.FAILED: "failed",
    PaymentState.SUCCEEDED: "succeeded",
    PaymentState.EXCEPTION: "exception",
}


@dataclass(frozen=True)
class AccountResult:
    id: UUID
    tenant: str
    owner: str
    currency: str
    kind: str
    balance_minor: int
    reserved_minor: int
    available_minor: int | None  # None: unlimited (clearing and external accounts)
    overdraft_limit_minor: int | None
    closed: bool
    version: int
    created_at: datetime
    updated_at: datetime
    replayed: bool = False
    iban: str | None = None
    # Set only on a state from the past (time travel): the version and the time it reflects.
    as_of_version: int | None = None
    as_of: datetime | None = None

    @classmethod
    def of(cls, account: Account, *, replayed: bool = False) -> AccountResult:
        return cls(
            id=account.id,
            tenant=account.tenant,
            owner=account.owner,
            currency=account.currency,
            kind=account.kind,
            balance_minor=account.balance_minor,
            reserved_minor=account.reserved_minor,
            available_minor=account.available_minor,
            overdraft_limit_minor=account.overdraft_limit_minor,
            closed=account.closed,
            version=account.version,
            created_at=account.created_on,
            updated_at=account.modified_on,
            replayed=replayed,
            iban=account.iban,
        )


@dataclass(frozen=True)
class PaymentResult:
    id: UUID
    tenant: str
    kind: str
    state: str
    status: str
    amount_minor: int
    currency: str
    channel: str
    payer: dict[str, Any]
    payee: dict[str, Any]
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None
    failure_message: str | None
    channel_reference: str | None
    created_at: datetime
    completed_at: datetime | None
    latency_ms: int | None
    version: int
    replayed: bool = False
    batch_id: str | None = None  # the batch it is an item of; None for a real-time payment
    # Set only on a state from the past (time travel): the version and the time it reflects.
    as_of_version: int | None = None
    as_of: datetime | None = None

    @classmethod
    def of(cls, payment: Payment, *, replayed: bool = False) -> PaymentResult:
        return cls(
            id=payment.id,
            tenant=payment.tenant,
            kind=payment.kind,
            state=payment.state,
            status=STATUS_OF_STATE[payment.current_state],
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            channel=payment.channel,
            payer=dict(payment.payer),
            payee=dict(payment.payee),
            description=payment.description,
            metadata=dict(payment.metadata),
            failure_code=payment.failure_code,
            failure_message=payment.failure_message,
            channel_reference=payment.channel_reference,
            created_at=payment.created_on,
            completed_at=payment.completed_at,
            latency_ms=payment.latency_ms,
            version=payment.version,
            replayed=replayed,
            batch_id=getattr(payment, "batch_id", None),
        )


@dataclass(frozen=True)
class DepositResult:
    payment: PaymentResult
    account: AccountResult


@dataclass(frozen=True)
class EventRecord:
    """One stored event of an aggregate, for audit: type, version, when, who, and its data."""

    type: str
    version: int
    timestamp: datetime
    actor: str | None
    data: dict[str, Any]
