"""HTTP schemas: bounded input models that reject unknown fields, and output models.

Inputs only check shape and size; the meaning of a value (a decimal for its currency, a card's
Luhn digit, an IBAN) is checked once, by the application, so the CLI and HTTP agree. Amounts are
decimal strings both ways: JSON numbers are refused on input and never produced on output.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_serializer,
)

from application.commands import (
    BankBeneficiary,
    CardMethod,
    MakeDeposit,
    OpenAccount,
    SubmitPayment,
    WalletMethod,
)
from application.results import AccountResult, DepositResult, EventRecord, PaymentResult
from domain.money import MAX_AMOUNT_TEXT_LENGTH, format_amount
from interfaces.http.examples import ACCOUNT_EXAMPLE, PAYMENT_EXAMPLES, PAYMENT_OUT_EXAMPLE

# --- bounded field types ---------------------------------------------------------------------

Amount = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_AMOUNT_TEXT_LENGTH),
    Field(description='Decimal string in major units, e.g. `"12.34"` (JSON numbers are refused)'),
]
Currency = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=8),
    Field(description="ISO 4217 currency code", examples=["CNY"]),
]
Channel = Literal["internal", "card", "alipay", "wechat_pay", "bank_transfer"]
AccountKindIn = Literal["customer", "merchant", "funding", "clearing", "external"]
#: Free text never holds NUL (U+0000): PostgreSQL's text columns cannot store it, so an owner or
#: a description with one would halt the views that copy it (found by test_schemathesis.py).
NO_NUL = r"^[^\x00]*$"
Owner = Annotated[StrictStr, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[StrictStr, StringConstraints(max_length=500, pattern=NO_NUL)]
MetadataKey = Annotated[StrictStr, StringConstraints(min_length=1, max_length=40, pattern=NO_NUL)]
MetadataValue = Annotated[StrictStr, StringConstraints(max_length=500, pattern=NO_NUL)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(max_length=20, description="Up to 20 string keys and values, stored as given"),
]

#: Fields holding a union discriminated on ``type``: pydantic puts the tag in an error's location
#: (``payment_method.card.number``); problems drop it so fields read as the client wrote them.
TAGGED_UNIONS: dict[str, frozenset[str]] = {
    "payment_method": frozenset({"card", "alipay", "wechat_pay"}),
}
#: Amount fields: a JSON number there gets the code ``amount_must_be_string``.
AMOUNT_FIELDS = frozenset({"amount", "overdraft_limit"})


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- inputs ----------------------------------------------------------------------------------


class CardIn(InputModel):
    """A card. The number and CVC go to the channel only: they are never stored nor echoed."""

    type: Literal["card"]
    number: Annotated[StrictStr, StringConstraints(min_length=1, max_length=19)]
    exp_month: Annotated[StrictInt, Field(ge=1, le=12)]
    exp_year: Annotated[StrictInt, Field(ge=2000, le=2100)]
    cvc: Annotated[StrictStr, StringConstraints(min_length=1, max_length=4)]

    def to_command(self) -> CardMethod:
        return CardMethod(self.number, self.exp_month, self.exp_year, self.cvc)


class WalletIn(InputModel):
    """An Alipay or WeChat Pay payer, identified by their wallet id."""

    type: Literal["alipay", "wechat_pay"]
    payer_id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]

    def to_command(self) -> WalletMethod:
        return WalletMethod(self.type, self.payer_id)


PaymentMethodIn = Annotated[CardIn | WalletIn, Field(discriminator="type")]


class BankAccountIn(InputModel):
    """A payout beneficiary outside the ledger."""

    type: Literal["bank_account"]
    iban: Annotated[StrictStr, StringConstraints(min_length=1, max_length=42)]
    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=140, pattern=NO_NUL)]
    bic: Annotated[StrictStr, StringConstraints(min_length=1, max_length=11)] | None = None

    def to_command(self) -> BankBeneficiary:
        return BankBeneficiary(self.iban, self.name, self.bic)


class PaymentIn(InputModel):
    """A real-time payment: one payer (`payer_account_id` or `payment_method`) and one payee
    (`payee_account_id` or `beneficiary`)."""

    # The schema's own example is the card one the request body documents (examples.py).
    model_config = ConfigDict(json_schema_extra={"examples": [PAYMENT_EXAMPLES["card"]["value"]]})

    amount: Amount
    currency: Currency
    channel: Channel
    payer_account_id: UUID | None = None
    payment_method: PaymentMethodIn | None = None
    payee_account_id: UUID | None = None
    beneficiary: BankAccountIn | None = None
    description: Description | None = None
    metadata: Metadata = Field(default_factory=dict)

    def to_command(self, idempotency_key: str) -> SubmitPayment:
        return SubmitPayment(
            amount=self.amount,
            currency=self.currency,
            channel=self.channel,
            idempotency_key=idempotency_key,
            payer_account_id=self.payer_account_id,
            payment_method=self.payment_method.to_command() if self.payment_method else None,
            payee_account_id=self.payee_account_id,
            beneficiary=self.beneficiary.to_command() if self.beneficiary else None,
            description=self.description,
            metadata=dict(self.metadata),
        )


class AccountIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"owner": "alice", "currency": "CNY", "kind": "customer", "overdraft_limit": "0.00"}
            ]
        }
    )

    owner: Owner
    currency: Currency
    kind: AccountKindIn = "customer"
    overdraft_limit: Amount = "0"
    iban: str | None = Field(
        default=None,
        max_length=42,
        description="The bank account this ledger account stands for, e.g. the employer's "
        "account a payroll pain.001 debits (DbtrAcct). Unique per tenant.",
    )

    def to_command(self, idempotency_key: str | None) -> OpenAccount:
        return OpenAccount(
            self.owner, self.currency, self.kind, self.overdraft_limit, idempotency_key,
            self.iban,
        )  # fmt: skip


class DepositIn(InputModel):
    """Credits the account from the tenant's external funding source."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": "1000.00"}]})

    amount: Amount
    currency: Currency | None = Field(
        default=None, description="Optional; when given it must be the account's currency"
    )

    def to_command(self, account_id: UUID, idempotency_key: str) -> MakeDeposit:
        return MakeDeposit(account_id, self.amount, idempotency_key, self.currency)


# --- outputs ---------------------------------------------------------------------------------

#: Fields present only in a state from the past (``?as_of_version=`` / ``?as_of=``), so that
#: today's answers keep their exact shape.
TIME_TRAVEL_FIELDS = ("as_of_version", "as_of")
AS_OF_VERSION_HELP = "Only when time travel was asked: the aggregate version this state reflects"


class TimeTravelOut(BaseModel):
    """Leaves the time-travel fields out of the JSON unless they are set."""

    # Deliberately unannotated return: pydantic would document the model as that type instead.
    @model_serializer(mode="wrap")
    def _omit_unset_time_travel(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data = handler(self)
        if isinstance(data, dict):
            for name in TIME_TRAVEL_FIELDS:
                if name in data and data[name] is None:
                    del data[name]
        return data


class AccountOut(TimeTravelOut):
    model_config = ConfigDict(json_schema_extra={"examples": [ACCOUNT_EXAMPLE]})

    id: UUID
    owner: str
    currency: str
    kind: str
    balance: str
    reserved: str
    available: str | None = Field(description="null for unlimited system accounts")
    overdraft_limit: str | None = Field(description="null for unlimited system accounts")
    closed: bool
    iban: str | None = None
    created_at: datetime
    as_of_version: int | None = Field(default=None, description=AS_OF_VERSION_HELP)
    as_of: datetime | None = Field(
        default=None, description="Only with `?as_of=`: the instant (UTC) this state is as of"
    )

    @classmethod
    def of(cls, a: AccountResult) -> AccountOut:
        return cls(
            id=a.id,
            owner=a.owner,
            currency=a.currency,
            kind=a.kind,
            balance=format_amount(a.balance_minor, a.currency),
            reserved=format_amount(a.reserved_minor, a.currency),
            available=_amount_or_none(a.available_minor, a.currency),
            overdraft_limit=_amount_or_none(a.overdraft_limit_minor, a.currency),
            closed=a.closed,
            iban=a.iban,
            created_at=a.created_at,
            as_of_version=a.as_of_version,
            as_of=a.as_of,
        )


class PaymentOut(TimeTravelOut):
    model_config = ConfigDict(json_schema_extra={"examples": [PAYMENT_OUT_EXAMPLE]})

    id: UUID
    status: Literal["processing", "succeeded", "failed", "exception"]
    state: str
    kind: str
    amount: str
    currency: str
    channel: str
    channel_reference: str | None
    payer: dict[str, Any]
    payee: dict[str, Any]
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None
    failure_message: str | None
    created_at: datetime
    completed_at: datetime | None
    latency_ms: int | None
    batch_id: str | None = Field(
        default=None, description="The batch it is an item of; null for a real-time payment"
    )
    as_of_version: int | None = Field(default=None, description=AS_OF_VERSION_HELP)
    as_of: datetime | None = Field(
        default=None,
        description="Only with `?as_of_version=`: when that version was recorded",
    )

    @classmethod
    def fields_of(cls, p: PaymentResult) -> dict[str, Any]:
        return {
            "id": p.id,
            "status": p.status,
            "state": p.state,
            "kind": p.kind,
            "amount": format_amount(p.amount_minor, p.currency),
            "currency": p.currency,
            "channel": p.channel,
            "channel_reference": p.channel_reference,
            "payer": p.payer,
            "payee": p.payee,
            "description": p.description,
            "metadata": p.metadata,
            "failure_code": p.failure_code,
            "failure_message": p.failure_message,
            "created_at": p.created_at,
            "completed_at": p.completed_at,
            "latency_ms": p.latency_ms,
            "batch_id": p.batch_id,
            "as_of_version": p.as_of_version,
            "as_of": p.as_of,
        }

    @classmethod
    def of(cls, p: PaymentResult) -> PaymentOut:
        return cls(**cls.fields_of(p))


class DepositOut(PaymentOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **PAYMENT_OUT_EXAMPLE,
                    "kind": "deposit",
                    "amount": "1000.00",
                    "channel": "internal",
                    "description": "deposit",
                    "metadata": {},
                    "account_id": ACCOUNT_EXAMPLE["id"],
                    "balance": "1000.00",
                    "account": ACCOUNT_EXAMPLE,
                }
            ]
        }
    )

    account_id: UUID
    balance: str = Field(description="The account's balance after the deposit")
    account: AccountOut

    @classmethod
    def of_deposit(cls, d: DepositResult) -> DepositOut:
        account = AccountOut.of(d.account)
        return cls(
            **PaymentOut.fields_of(d.payment),
            account_id=account.id,
            balance=account.balance,
            account=account,
        )


class EventOut(BaseModel):
    type: str
    version: int
    timestamp: datetime
    actor: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, e: EventRecord) -> EventOut:
        return cls(
            type=e.type, version=e.version, timestamp=e.timestamp, actor=e.actor, data=_json(e.data)
        )


class PaymentEventsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "payment_id": PAYMENT_OUT_EXAMPLE["id"],
                    "events": [
                        {
                            "type": "Requested",
                            "version": 1,
                            "timestamp": "2025-01-01T12:00:00.000000+00:00",
                            "actor": "anonymous",
                            "data": {"amount_minor": 4050, "currency": "CNY", "channel": "card"},
                        }
                    ],
                }
            ]
        }
    )

    payment_id: UUID
    events: list[EventOut]


class FieldProblem(BaseModel):
    field: str
    reason: str
    code: str


class Problem(BaseModel):
    """An error, RFC 9457 style, served as `application/problem+json`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:payledger:problem:validation_error",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "amount: has too many decimals: CNY has 2 decimal places",
                    "code": "validation_error",
                    "errors": [
                        {
                            "field": "amount",
                            "reason": "has too many decimals: CNY has 2 decimal places",
                            "code": "too_many_decimals",
                        }
                    ],
                }
            ]
        }
    )

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldProblem] = Field(default_factory=list)


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class ReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ready", "store": "postgres"}]}
    )

    status: str
    store: str


# --- helpers ---------------------------------------------------------------------------------


def _amount_or_none(amount_minor: int | None, currency: str) -> str | None:
    return None if amount_minor is None else format_amount(amount_minor, currency)


def _json(value: Any) -> Any:
    """Event data as plain JSON values: ids and times as strings, enums as their value."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
