"""Output schemas of the query routes (lists, statements, metrics)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from domain.money import format_amount
from interfaces.http.schemas import PaymentOut

Position = Field(description="The last log position the views had processed for this answer")


class PaymentListOut(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last")
    as_of_position: int = Position


class EntryOut(BaseModel):
    version: int = Field(description="The account's event version of this posting")
    entry_id: str = Field(description="The journal entry (both legs share it)")
    payment_id: str
    amount: str = Field(description="Signed decimal string: negative for a debit")
    balance_after: str
    at: datetime
    position: int


class EntriesOut(BaseModel):
    account_id: UUID
    currency: str
    balance: str = Field(description="The balance after the last posting in the view")
    items: list[EntryOut]
    next_cursor: str | None
    as_of_position: int = Position


def entry_out(e: dict[str, Any], currency: str) -> EntryOut:
    return EntryOut(
        version=e["version"],
        entry_id=e["entry_id"],
        payment_id=e["payment_id"],
        amount=_signed(e["amount_minor"], currency),
        balance_after=_signed(e["balance_after_minor"], currency),
        at=e["at"],
        position=e["position"],
    )


def _signed(amount_minor: int, currency: str) -> str:
    text = format_amount(abs(amount_minor), currency)
    return ("-" + text) if amount_minor < 0 else text


class Percentiles(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class OutcomeSummary(BaseModel):
    total: int = Field(description="succeeded + failed + exception")
    processing: int
    succeeded: int
    failed: int
    exception: int
    success_rate: float | None = Field(description="S = succeeded / total; null when total is 0")
    latency_ms: Percentiles


class ChannelSummary(OutcomeSummary):
    channel: str


class SeriesPoint(OutcomeSummary):
    bucket_start: datetime


class BatchTime(BaseModel):
    count: int
    p50: float | None
    p95: float | None
    p99: float | None


class MetricsOut(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    channel: str | None
    bucket: str
    as_of_position: int = Position
    totals: OutcomeSummary
    channels: list[ChannelSummary]
    series: list[SeriesPoint]
    batch_time_ms: BatchTime = Field(description="T_b = finished - submitted, per batch")

    model_config = {"populate_by_name": True}
