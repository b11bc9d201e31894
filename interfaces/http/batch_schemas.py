"""HTTP schemas of batches: ``BatchIn`` (a JSON batch), ``BatchOut`` (status and progress),
``BatchItemOut``, ``DryRunOut`` and the decision bodies. Amounts are decimal strings."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from application.batch_files.model import RawItem
from application.batches.results import BatchResult, DryRunResult, InvalidItem
from domain.money import format_amount
from interfaces.http.schemas import InputModel
from projections.batch_queries import ItemRow

MAX_ITEMS = 100_000
Text35 = Annotated[StrictStr, StringConstraints(min_length=1, max_length=35)]
Text140 = Annotated[StrictStr, StringConstraints(max_length=140)]
CurrencyCode = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Z]{3}$")]
AmountText = Annotated[StrictStr, StringConstraints(max_length=32)]


class BatchItemIn(InputModel):
    end_to_end_id: Text35
    amount: AmountText = Field(description='Decimal string, e.g. "1500.00"')
    currency: CurrencyCode | None = None
    iban: Annotated[StrictStr, StringConstraints(max_length=42)] | None = None
    bic: Annotated[StrictStr, StringConstraints(max_length=11)] | None = None
    name: Text140 | None = Field(default=None, description="The beneficiary's name")
    payee_account_id: UUID | None = Field(
        default=None, description="Pay a ledger account of the tenant instead of an IBAN"
    )
    channel: Literal["bank_transfer", "internal"] | None = None
    value_date: date | None = None
    priority: StrictInt | None = Field(default=None, ge=-1000, le=1000)
    depends_on: Text35 | None = Field(
        default=None, description="end_to_end_id of an item that must succeed first"
    )
    remittance: Text140 | None = None
    instruction_id: Text35 | None = None

    def to_raw(self, n: int) -> RawItem:
        return RawItem(
            location=f"items[{n}]", end_to_end_id=self.end_to_end_id, amount=self.amount,
            currency=self.currency, iban=self.iban, bic=self.bic, name=self.name,
            payee_account_id=str(self.payee_account_id) if self.payee_account_id else None,
            channel=self.channel, instruction_id=self.instruction_id,
            value_date=self.value_date, priority=self.priority, depends_on=self.depends_on,
            remittance=self.remittance,
        )  # fmt: skip


class BatchIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "funding_account_id": "0b7c8f3e-8d7e-4d3a-9a51-6f2f1c9c4e10",
                    "currency": "EUR",
                    "items": [
                        {"end_to_end_id": "SAL-2026-11-001", "amount": "2500.00",
                         "iban": "DE89370400440532013000", "name": "Anna Schmidt"},
                    ],
                    "rules": {"order": "amount_desc", "stop_after_failures": 10},
                }
            ]
        }
    )  # fmt: skip

    funding_account_id: UUID | None = None
    currency: CurrencyCode
    items: list[BatchItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    rules: dict[str, Any] | None = Field(
        default=None,
        description="order (file|priority|amount_asc|amount_desc|value_date), mode "
        "(independent|all_or_nothing), stop_after_failures, max_failure_ratio, "
        "max_item_amount, max_total_amount, allowed_channels, allowed_currencies, "
        "cutoff_time (HH:MM UTC), funds_check",
    )
    execution_date: date | None = None
    message_id: Text35 | None = Field(
        default=None, description="Your id for this batch; the same id twice is one batch"
    )


class ApproveIn(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"execute_now": True}]})

    execute_now: bool = Field(
        default=False, description="Run at once, even if the execution date is ahead"
    )


class DecisionIn(InputModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "wrong month"}]})

    reason: Text140 | None = None


class RetryIn(InputModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"all_failed": True}, {"items": [3, "SAL-2099-01-006"]}]}
    )

    items: list[StrictInt | Text35] | None = Field(
        default=None, max_length=MAX_ITEMS,
        description="Item indexes (0-based, file order) or end_to_end_ids",
    )  # fmt: skip
    all_failed: bool = False


class InvalidItemOut(BaseModel):
    index: int
    end_to_end_id: str
    location: str
    reason_code: str
    reason: str

    @classmethod
    def of(cls, i: InvalidItem) -> InvalidItemOut:
        return cls(**vars(i))


class ProgressOut(BaseModel):
    processed: int
    total: int
    percent: float
    eta_seconds: float | None


class BatchOut(BaseModel):
    id: UUID
    status: str
    item_count: int
    valid_item_count: int
    invalid_item_count: int
    control_sum: str = Field(description="Total of the valid items")
    currency: str
    funding_account_id: UUID
    execution_date: date | None
    run_on: date | None
    format: str
    message_id: str | None
    rules: dict[str, Any]
    maker: str
    approved_by: str | None
    decided_by: str | None
    decision_reason: str | None
    counts: dict[str, int]
    amounts: dict[str, str]
    progress: ProgressOut
    held: str = Field(description="Still reserved on the funding account for this batch")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    processing_time_ms: int | None = Field(description="T_b: submitted -> finished")
    failure_code: str | None
    failure_message: str | None
    invalid_items: list[InvalidItemOut]

    @classmethod
    def of(cls, b: BatchResult, now: datetime) -> BatchOut:
        fmt = b.currency
        processed = b.processed_count
        total = b.valid_item_count
        return cls(
            id=b.id, status=b.status, item_count=b.item_count,
            valid_item_count=b.valid_item_count, invalid_item_count=b.invalid_item_count,
            control_sum=format_amount(b.control_sum_minor, fmt), currency=b.currency,
            funding_account_id=b.funding_account_id, execution_date=b.execution_date,
            run_on=b.run_on, format=b.source.get("format", "json"),
            message_id=b.source.get("message_id"), rules=b.rules, maker=b.maker,
            approved_by=b.approved_by, decided_by=b.decided_by,
            decision_reason=b.decision_reason,
            counts={**b.counts, "invalid": b.invalid_item_count,
                    "pending": max(0, total - processed)},
            amounts={k: format_amount(v, fmt) for k, v in b.amounts.items()},
            progress=ProgressOut(
                processed=processed, total=total,
                percent=round(100 * processed / total, 2) if total else 100.0,
                eta_seconds=_eta(b, now),
            ),
            held=format_amount(b.held_minor, fmt), created_at=b.created_at,
            started_at=b.started_at, finished_at=b.finished_at,
            processing_time_ms=b.processing_time_ms, failure_code=b.failure_code,
            failure_message=b.failure_message,
            invalid_items=[InvalidItemOut.of(i) for i in b.invalid_items],
        )  # fmt: skip


def _eta(b: BatchResult, now: datetime) -> float | None:
    """Seconds left at the rate so far, while processing."""
    if b.status != "processing" or b.started_at is None or not b.processed_count:
        return None
    elapsed = (now - b.started_at).total_seconds()
    left = b.valid_item_count - b.processed_count
    return round(elapsed / b.processed_count * left, 1)


class BatchItemOut(BaseModel):
    index: int
    end_to_end_id: str
    amount: str
    currency: str
    channel: str
    beneficiary_name: str | None
    beneficiary_iban: str | None
    payee_account_id: str | None
    value_date: str | None
    status: str = Field(
        description="pending | succeeded | failed | exception | invalid | cancelled"
    )
    reason_code: str | None
    reason: str | None
    payment_id: str | None
    attempt: int | None
    channel_reference: str | None
    location: str

    @classmethod
    def of(cls, i: ItemRow) -> BatchItemOut:
        return cls(
            index=i.index, end_to_end_id=i.end_to_end_id,
            amount=format_amount(i.amount_minor, i.currency), currency=i.currency,
            channel=i.channel, beneficiary_name=i.payee_name, beneficiary_iban=i.payee_iban,
            payee_account_id=i.payee_account_id, value_date=i.value_date, status=i.status,
            reason_code=i.reason_code, reason=i.reason, payment_id=i.payment_id,
            attempt=i.attempt, channel_reference=i.channel_reference, location=i.location,
        )  # fmt: skip


class BatchItemsOut(BaseModel):
    items: list[BatchItemOut]
    next_cursor: str | None
    as_of_position: int


class PredictedItemOut(BaseModel):
    index: int
    end_to_end_id: str
    amount: str
    predicted: str = Field(description="succeeded | failed | scheduled")
    reason_code: str | None
    reason: str | None
    value_date: date | None


class DryRunOut(BaseModel):
    dry_run: Literal[True] = True
    status: str = Field(description="What the batch would become: awaiting_approval or failed")
    item_count: int
    valid_item_count: int
    invalid_item_count: int
    control_sum: str
    currency: str
    funding_account_id: UUID
    available: str | None = Field(description="The funding account's available balance now")
    predicted_counts: dict[str, int]
    items: list[PredictedItemOut]
    invalid_items: list[InvalidItemOut]

    @classmethod
    def of(cls, r: DryRunResult) -> DryRunOut:
        fmt = r.currency
        return cls(
            status=r.status, item_count=r.item_count, valid_item_count=r.valid_item_count,
            invalid_item_count=r.invalid_item_count,
            control_sum=format_amount(r.control_sum_minor, fmt), currency=r.currency,
            funding_account_id=r.funding_account_id,
            available=None if r.available_minor is None else format_amount(r.available_minor, fmt),
            predicted_counts=r.predicted_counts,
            items=[
                PredictedItemOut(
                    index=p.index, end_to_end_id=p.end_to_end_id,
                    amount=format_amount(p.amount_minor, fmt), predicted=p.predicted,
                    reason_code=p.reason_code, reason=p.reason, value_date=p.value_date,
                )
                for p in r.items
            ],
            invalid_items=[InvalidItemOut.of(i) for i in r.invalid_items],
        )  # fmt: skip


class BatchListItemOut(BaseModel):
    id: str
    status: str
    item_count: int
    control_sum: str
    currency: str
    succeeded: int
    failed: int
    exception: int
    format: str
    message_id: str | None
    created_at: datetime
    finished_at: datetime | None


class BatchListOut(BaseModel):
    items: list[BatchListItemOut]
    next_cursor: str | None
    as_of_position: int
